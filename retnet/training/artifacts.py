"""Using what a run produced: load a trained model (run folder, checkpoint or exported model) and sample text."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

from ..data import StreamDecoder, Tokenizer, load_tokenizer
from ..generation import RetNetForCausalLM
from ..model import RetNetConfig
from ..model.serialization import WEIGHTS_NAME, load_pretrained
from . import checkpoint as ckpt_io

logger = logging.getLogger(__name__)


@dataclass
class Trained:
    """A model with its tokenizer and where it came from."""

    model: RetNetForCausalLM
    tokenizer: Tokenizer
    source: Path


def load_trained(
    path: str | Path,
    device: torch.device | str = "cpu",
    *,
    trust_checkpoint: bool = False,
    allow_unverified: bool = False,
) -> Trained:
    """Load a model for evaluation or generation (safetensors and JSON only, unless ``trust_checkpoint``).

    Args:
        path: a run folder (its latest valid checkpoint, else its exported ``model/``), a checkpoint folder, a
            ``save_pretrained`` folder with a ``tokenizer/`` inside or beside it, or a Hugging Face directory
            (``retnet convert hf``, a ``Trainer`` checkpoint: :func:`retnet.hf.export.load_hf_trained`, which needs
            ``transformers``; safetensors and JSON, which carry no retnet checksums).
        device: where to put the model.
        trust_checkpoint: also read checkpoints in torch.distributed.checkpoint's pickled format (code in such
            files runs; ``docs/security.md``).
        allow_unverified: accept weights without checksums (no ``checksums.json`` / ``checkpoint.json``).

    Raises:
        FileNotFoundError: nothing loadable at ``path``.
        ValueError: a corrupt, unverifiable or (without ``trust_checkpoint``) pickled checkpoint.
    """
    from ..hf.directory import is_hf_directory

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such run, checkpoint or model folder: {path}")
    if is_hf_directory(path):
        from ..hf.export import load_hf_trained

        return load_hf_trained(path, device)
    if (path / WEIGHTS_NAME).is_file():
        model = load_pretrained(RetNetForCausalLM, path, allow_unverified=allow_unverified)
        tok_dir = path / "tokenizer" if (path / "tokenizer").is_dir() else path.parent / "tokenizer"
        source = path
    else:
        exported = path / "model" / WEIGHTS_NAME
        if (path / ckpt_io.MANIFEST).is_file() or (path / "trainer.json").is_file():
            ckpt = ckpt_io.resolve_checkpoint(path, allow_unverified=allow_unverified)
        elif ckpt_io.list_checkpoints(path):
            ckpt = ckpt_io.latest_checkpoint(path)
            if ckpt is None:
                if not exported.is_file():
                    raise FileNotFoundError(f"no complete checkpoint in {path} and no exported model")
                logger.warning("every checkpoint in %s is corrupt; using the exported model %s", path, path / "model")
                return load_trained(path / "model", device, allow_unverified=allow_unverified)
        elif exported.is_file():
            return load_trained(path / "model", device, allow_unverified=allow_unverified)
        else:
            raise FileNotFoundError(f"{path} holds no checkpoint and no exported model")
        config = RetNetConfig.from_dict(json.loads((ckpt / "config.json").read_text()))
        model = RetNetForCausalLM(config)
        state = ckpt_io.load_state(ckpt, {"model": get_model_state_dict(model)}, trust_checkpoint=trust_checkpoint)
        set_model_state_dict(model, state["model"])
        tok_dir, source = ckpt / "tokenizer", ckpt
    tokenizer = load_tokenizer(tok_dir)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"tokenizer in {tok_dir} has {tokenizer.vocab_size} tokens, the model {model.config.vocab_size}"
        )
    return Trained(model.to(device).eval(), tokenizer, source)


def stream_text(
    trained: Trained,
    prompt: str,
    *,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    greedy: bool = False,
    seed: int | None = None,
    stop_at_separator: bool = True,
) -> Iterator[str]:
    """Yield the generated continuation of ``prompt`` piece by piece (complete characters only).

    Raises:
        ValueError: an empty prompt (a tokenizer that yields no ids).
    """
    tok = trained.tokenizer
    ids = tok.encode(prompt)
    if not ids:
        raise ValueError("the prompt is empty; give at least one character")
    device = next(trained.model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    decoder = StreamDecoder(tok)
    for new in trained.model.stream_generate(
        input_ids,
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        eos_token_id=tok.sep_id if stop_at_separator else None,
        seed=seed,
    ):
        token = int(new[0])
        if stop_at_separator and token == tok.sep_id:
            break
        piece = decoder.push([token])
        if piece:
            yield piece
    rest = decoder.flush()
    if rest:
        yield rest


def sample_text(trained: Trained, prompt: str, **kwargs) -> str:
    """The whole continuation of ``prompt`` (see :func:`stream_text`)."""
    return "".join(stream_text(trained, prompt, **kwargs))


def prompt_from_text(ids: Iterable[int], tokenizer: Tokenizer, max_chars: int = 64) -> str:
    """A sampling prompt taken from a token stream: its first line with visible text, stripped.

    Used for the end-of-run sample of ``retnet train`` (a prompt from the validation text makes the model continue
    real text; a bare newline made it emit indentation). Documents are split at the separator first.

    Args:
        ids: the head of a token stream (a few hundred tokens are plenty).
        tokenizer: decodes ``ids``.
        max_chars: the prompt is cut to this many characters.

    Returns:
        The prompt; a newline when ``ids`` hold no visible text.

    Raises:
        ValueError: ``max_chars`` below 1.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    doc: list[int] = []
    docs = [doc]
    for token in ids:
        if int(token) == tokenizer.sep_id:
            doc = []
            docs.append(doc)
        else:
            doc.append(int(token))
    for piece in docs:
        for line in tokenizer.decode(piece).splitlines():
            line = line.strip().replace("\ufffd", "")  # a multi-byte character cut at the head's end
            if line:
                return line[:max_chars]
    return "\n"
