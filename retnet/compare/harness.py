"""Training and evaluation of one comparison entry on the shared data (paper §3.4: same data, tokenizer,
token budget, optimizer and schedule for every architecture).

Data comes from :mod:`retnet.data` (prepared token streams, seeded windows). Every architecture sees the same
windows in the same order (the sampler is a pure function of seed and step) and no state resets inside a
window, since the baselines carry no document boundaries. Training is resumable: a checkpoint (model,
optimizer, step, loss curve, elapsed time) is written atomically every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from .config import CompareConfig, TrainSection

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _autocast(device: torch.device, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lr_at(step: int, train: TrainSection) -> float:
    """Linear warm-up to ``lr``, then linear decay to 10 % of it at the last step."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    progress = (step - train.warmup_steps) / max(train.steps - train.warmup_steps, 1)
    return train.lr * (1.0 - 0.9 * min(progress, 1.0))


def _loss(model: nn.Module, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids, form="chunkwise").logits  # (B, T, vocab)
    return nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def train_entry(model: nn.Module, train: TrainSection, dataset, ckpt_dir: Path) -> dict:
    """Train ``model`` with the shared recipe, resuming from ``ckpt_dir`` if a checkpoint is there.

    Args:
        model: a RetNetForCausalLM or MixerLM (float32 parameters).
        train: the recipe.
        dataset: the in-domain :class:`retnet.data.PreparedDataset`.
        ckpt_dir: checkpoint folder of this entry.

    Returns:
        ``{"steps", "tokens", "wall_time_s", "tokens_per_s", "loss_curve": [{"step", "tokens", "loss"}],
        "final_loss"}``.
    """
    from ..data import WindowSampler, make_batch

    device = resolve_device(train.device)
    model.to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train.lr, betas=(0.9, 0.98), eps=1e-8, fused=device.type == "cuda",
    )  # fmt: skip
    sampler = WindowSampler(dataset.tokens("train"), train.seq_len, seed=train.seed)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / "checkpoint.pt"
    step, curve, elapsed = 0, [], 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, curve, elapsed = state["step"], state["loss_curve"], state["elapsed"]
        logger.info("resumed at step %d / %d", step, train.steps)
    tokens_per_step = train.seq_len * train.batch_size
    model.train()
    t0 = time.time() - elapsed
    running = torch.zeros((), device=device)
    since_log = 0
    while step < train.steps:
        batch = make_batch(sampler.batch(step, train.batch_size), dataset.sep_id, reset_at_boundaries=False)
        batch = batch.to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, train)
        with _autocast(device, train.dtype):
            loss = _loss(model, batch.input_ids, batch.targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        opt.step()
        step += 1
        running += loss.detach()
        since_log += 1
        if step % train.log_every == 0 or step == train.steps:
            mean = (running / since_log).item()  # one host sync per log interval
            if not math.isfinite(mean):
                raise RuntimeError(f"training loss is {mean} at step {step}")
            curve.append({"step": step, "tokens": step * tokens_per_step, "loss": mean})
            running.zero_()
            since_log = 0
        if step % train.checkpoint_every == 0 and step < train.steps:
            _save(ckpt, model, opt, step, curve, time.time() - t0)
    wall = time.time() - t0
    _save(ckpt, model, opt, step, curve, wall)
    tokens = step * tokens_per_step
    return {
        "steps": step,
        "tokens": tokens,
        "wall_time_s": wall,
        "tokens_per_s": tokens / max(wall, 1e-9),
        "loss_curve": curve,
        "final_loss": curve[-1]["loss"] if curve else float("nan"),
        "device": str(device),
    }


def _save(path: Path, model, opt, step, curve, elapsed) -> None:
    tmp = path.with_name(path.name + ".partial")
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "loss_curve": curve,
             "elapsed": elapsed}  # fmt: skip
    torch.save(state, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def evaluate_entry(model: nn.Module, dataset_dir: Path, config: CompareConfig) -> dict:
    """Mean next-token loss and perplexity on the held-out split of a prepared dataset.

    Windows of ``seq_len`` tokens are read in stream order, up to ``data.eval_tokens`` scored tokens.

    Returns:
        ``{"loss", "perplexity", "bits_per_byte", "tokens"}``.
    """
    from ..data import PreparedDataset, WindowSampler, make_batch

    ds = PreparedDataset(dataset_dir)
    train = config.train
    device = next(model.parameters()).device
    stream = ds.tokens("val")
    seq_len = min(train.seq_len, len(stream) - 1)
    sampler = WindowSampler(stream, seq_len, shuffle=False)
    windows = min(sampler.num_windows, max(config.data.eval_tokens // seq_len, 1))
    model.eval()
    total, count = 0.0, 0
    for first in range(0, windows, train.batch_size):
        n = min(train.batch_size, windows - first)
        batch = make_batch(_windows(sampler, first, n), ds.sep_id, reset_at_boundaries=False).to(device)
        with _autocast(device, train.dtype):
            logits = model(batch.input_ids, form="chunkwise").logits
        total += nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), batch.targets.flatten(), reduction="sum"
        ).item()
        count += batch.targets.numel()
    model.train()
    loss = total / count
    return {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": loss / math.log(2) / ds.bytes_per_token("val"),
        "tokens": count,
    }


def _windows(sampler, first: int, n: int):
    import numpy as np

    return np.stack([sampler.window(first + j) for j in range(n)])
