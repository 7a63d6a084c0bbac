"""Validation and ``retnet eval``: loss, perplexity and bits per byte over a token stream, in any form.

Bits per byte = total cross-entropy (nats) / ln 2 / UTF-8 bytes of the predicted tokens, so runs with different
tokenizers compare. Windows are taken in stream order; each rank evaluates an equal share and the sums are
all-reduced. Any sequence length works, including lengths beyond training (long-context evaluation; use the
chunkwise or recurrent form there).
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data import WindowSampler, make_batch
from .distributed import DistInfo, all_reduce_sum
from .loss import lm_loss_sum


@dataclass
class EvalResult:
    """Validation metrics (loss in nats per token)."""

    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int
    bytes: int

    def as_dict(self) -> dict:
        return {"loss": self.loss, "ppl": self.perplexity, "bpb": self.bits_per_byte, "tokens": self.tokens}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tokens: np.ndarray,
    *,
    seq_len: int,
    batch_size: int,
    token_bytes: np.ndarray,
    sep_id: int,
    form: str = "chunkwise",
    chunk_size: int = 64,
    reset_at_boundaries: bool = True,
    max_windows: int = 0,
    device: torch.device | str = "cpu",
    autocast: contextlib.AbstractContextManager | None = None,
    info: DistInfo | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on windows of ``tokens``.

    Args:
        model: the (possibly wrapped) model; put in eval mode for the call.
        tokens: the token stream.
        seq_len: tokens per window.
        batch_size: windows per forward pass on each rank.
        token_bytes: ``(vocab,)`` bytes per token.
        sep_id: the document separator.
        form: "parallel", "chunkwise" or "recurrent".
        chunk_size: chunk size of the chunkwise form.
        reset_at_boundaries: reset the state at document boundaries.
        max_windows: evaluate at most the first this many windows (0: the whole stream).
        device: where the model lives.
        autocast: a context manager for mixed precision.
        info: this rank.
        progress: show a progress bar over the batches on stderr (rank 0 only).

    Raises:
        ValueError: a stream too short for one window per rank.
    """
    info = info or DistInfo()
    sampler = WindowSampler(tokens, seq_len, shuffle=False)
    total = min(sampler.num_windows, max_windows) if max_windows else sampler.num_windows
    per_rank = total // info.world_size
    if per_rank < 1:
        raise ValueError(f"{len(tokens)} tokens are too few for {info.world_size} window(s) of {seq_len + 1}")
    table = torch.from_numpy(token_bytes).to(device)
    # On the model's device: the sum over ranks runs on NCCL for CUDA, which has no CPU tensors.
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nats, tokens, bytes
    was_training = model.training
    model.eval()
    first = info.rank * per_rank
    starts = range(0, per_rank, batch_size)
    bar = tqdm(starts, desc="eval", unit=" batches", file=sys.stderr, disable=not progress or not info.is_main)
    for start in bar:
        idx = range(first + start, first + min(start + batch_size, per_rank))
        batch = make_batch(np.stack([sampler.window(i) for i in idx]), sep_id, reset_at_boundaries).to(device)
        with autocast or contextlib.nullcontext():
            nats = lm_loss_sum(model, batch, form, chunk_size)
        sums[0] += nats.double()
        sums[1] += batch.num_tokens
        sums[2] += table[batch.targets].sum()
    model.train(was_training)
    all_reduce_sum(sums)
    nats, count, nbytes = sums.tolist()
    loss = nats / count
    return EvalResult(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        bits_per_byte=nats / math.log(2) / max(nbytes, 1.0),
        tokens=int(count),
        bytes=int(nbytes),
    )


def evaluate_source(
    model_path: str,
    *,
    data: str | None = None,
    text: str | None = None,
    split: str = "val",
    form: str = "chunkwise",
    seq_len: int | None = None,
    chunk_size: int = 64,
    batch_size: int = 8,
    max_windows: int = 0,
    reset_at_boundaries: bool = True,
    device: str = "cpu",
    trust_checkpoint: bool = False,
    allow_unverified: bool = False,
    progress: bool = False,
) -> EvalResult:
    """``retnet eval``: evaluate a trained model on a prepared dataset, text files, or its run's dataset.

    Args:
        model_path: run folder, checkpoint folder, exported model folder or Hugging Face directory.
        data: a prepared dataset folder (its tokenizer must be the model's).
        text: text/JSONL file or folder, tokenized with the model's tokenizer.
        split: dataset split when ``data`` (or the run's dataset) is used.
        form: "parallel", "chunkwise" or "recurrent".
        seq_len: window length (default: the run's training length, else 256).
        chunk_size: chunkwise chunk size.
        batch_size: windows per forward pass.
        max_windows: at most this many windows (0: all).
        reset_at_boundaries: reset the state after each document separator.
        device: "cpu" or "cuda".
        trust_checkpoint: see :func:`retnet.training.artifacts.load_trained`.
        allow_unverified: see :func:`retnet.training.artifacts.load_trained`.
        progress: show a progress bar on stderr.

    Raises:
        FileNotFoundError / ValueError: missing inputs or a tokenizer mismatch.
    """
    from pathlib import Path

    from ..data import PreparedDataset
    from ..data.prepare import encode_documents
    from .artifacts import load_trained
    from .build import dataset_dir
    from .config import load_config

    trained = load_trained(
        model_path, device=device, trust_checkpoint=trust_checkpoint, allow_unverified=allow_unverified
    )
    run_cfg = None
    for candidate in (trained.source / "train_config.yaml", trained.source.parent / "train_config.yaml"):
        if candidate.is_file():
            run_cfg = load_config([candidate])
            break
    seq_len = seq_len or (run_cfg.data.seq_len if run_cfg else 256)
    tok = trained.tokenizer
    if text is not None:
        tokens = encode_documents(tok, Path(text))
    else:
        if data is None:
            if run_cfg is None:
                raise FileNotFoundError(f"{model_path} has no run config; pass --data or --text")
            data = str(dataset_dir(run_cfg.data))
        dataset = PreparedDataset(data)
        if dataset.manifest["tokenizer"]["hash"] != tok.fingerprint():
            raise ValueError(f"dataset {data} was tokenized with another tokenizer than the model's")
        tokens = dataset.tokens(split)
    return evaluate(
        trained.model,
        tokens,
        seq_len=seq_len,
        batch_size=batch_size,
        token_bytes=tok.token_bytes(),
        sep_id=tok.sep_id,
        form=form,
        chunk_size=chunk_size,
        reset_at_boundaries=reset_at_boundaries,
        max_windows=max_windows,
        device=device,
        progress=progress,
    )
