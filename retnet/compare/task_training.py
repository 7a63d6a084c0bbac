"""Training and scoring a model on a synthetic task whose answers are a few marked targets (MQAR, passkey).

The comparison recipe's pieces (:func:`retnet.training.optim.build_optimizer`, :func:`retnet.training.schedule.lr_at`,
the precision and clipping of :class:`~retnet.training.TrainConfig`) are reused, not :func:`retnet.training.train`
itself: the trainer samples windows at random offsets of a token stream and scores every next token, while a task
example starts at position 0 and only its answers are scored.

Seed streams: every example is drawn from a seed list whose second item names its split, so that training,
validation (the learning-rate choice) and test examples never coincide.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from ..model.loss import IGNORE_INDEX
from ..training.config import OptimSection

TRAIN, TEST, VALIDATION = 0, 1, 2  # the split item of every example's seed list

Batch = tuple[torch.Tensor, torch.Tensor]  # (N, T) int64 input ids, (N, T) int64 targets (-100: not scored)


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` ("fp32", "bf16" or "auto") on ``device``, as the trainer uses it."""
    from ..training.trainer import autocast_context, resolve_precision

    return autocast_context(resolve_precision(precision, device), device)


def count_correct(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """Scored targets whose most likely token is the answer, and the number scored.

    Args:
        logits: ``(N, T, V)`` next-token logits.
        targets: ``(N, T)`` int64 answers, -100 where nothing is scored.

    Returns:
        ``(correct, scored)``.

    Raises:
        ValueError: shapes that do not line up.
    """
    if logits.dim() != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be (N, T, V) over targets {tuple(targets.shape)}")
    scored = targets != IGNORE_INDEX
    hits = (logits.argmax(-1) == targets) & scored
    return int(hits.sum()), int(scored.sum())


def train_on_task(
    model: nn.Module,
    batch: Callable[[int], Batch],
    *,
    steps: int,
    optim: OptimSection,
    precision: str = "fp32",
    form: str = "chunkwise",
    chunk_size: int = 64,
    log_every: int = 10,
    compile: bool | str = False,
    stop: Callable[[], bool] | None = None,
    check_every: int = 0,
) -> dict:
    """Train ``model`` in place: step ``s`` trains on ``batch(s)``; the loss is the mean cross-entropy of the answers.

    AdamW, warm-up and schedule are ``optim``'s (decaying over ``optim.decay_steps`` or ``steps``); gradients are
    clipped at ``optim.grad_clip``.

    Args:
        model: a RetNetForCausalLM or MixerLM.
        batch: the training examples of a step (ids and targets on the CPU).
        steps: optimizer steps.
        optim: the optimizer section of the recipe.
        precision: "fp32", "bf16" or "auto" (autocast; parameters stay as they are).
        form: training form.
        chunk_size: chunkwise chunk size.
        log_every: steps between loss-curve points.
        compile: compile each block as one graph first, as the comparison's full runs do (True: inductor, or the
            name of a ``torch.compile`` backend); False: eager.
        stop: asked after every ``check_every`` steps (before the last); True ends training there, the schedule
            being the one of ``steps`` (early stopping once the task is solved).
        check_every: steps between ``stop``'s checks.

    Returns:
        ``{"steps", "loss_curve": [{"step", "loss"}], "final_loss", "diverged_at", "stopped_at", "wall_time_s"}``:
        a non-finite loss at a curve point stops training there (``diverged_at``, else None; ``final_loss`` is
        then None); ``stopped_at`` is the step after which ``stop`` ended training (None: every step ran).

    Raises:
        ValueError: a non-positive ``steps``, or ``stop`` without a positive ``check_every``.
    """
    from ..training.optim import build_optimizer
    from ..training.schedule import lr_at

    if steps < 1:
        raise ValueError(f"steps={steps} is invalid; it must be >= 1")
    if stop is not None and check_every < 1:
        raise ValueError(f"check_every={check_every} is invalid with a stop check; it must be >= 1")
    device = next(model.parameters()).device
    if compile:
        for block in model.trunk.layers:
            block.compile(backend="inductor" if compile is True else compile, fullgraph=True)
    optimizer = build_optimizer(model, optim)
    clip = optim.grad_clip if optim.grad_clip > 0 else float("inf")
    curve, diverged_at, stopped_at, start = [], None, None, time.time()
    model.train()
    # the next step's examples are drawn (and on CUDA pinned, so that their copy does not wait for the device) on a
    # worker thread while this step runs: NumPy's generators and sorts release the GIL, and batches stay a function
    # of the step alone. The loss is read back (a device sync) only at the curve's points, where a non-finite value
    # stops training.
    pinned = device.type == "cuda"

    def draw(step: int) -> Batch:
        ids, targets = batch(step)
        return (ids.pin_memory(), targets.pin_memory()) if pinned else (ids, targets)

    with ThreadPoolExecutor(max_workers=1) as prefetch:
        upcoming = prefetch.submit(draw, 0)
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, optim.decay_steps or steps, optim)
            ids, targets = (t.to(device, non_blocking=pinned) for t in upcoming.result())
            if step + 1 < steps:
                upcoming = prefetch.submit(draw, step + 1)
            with autocast(precision, device):
                loss = model(ids, form=form, chunk_size=chunk_size, targets=targets, return_logits=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if (step + 1) % log_every == 0 or step + 1 == steps:
                value = float(loss.detach())
                if not math.isfinite(value):
                    diverged_at = step + 1
                    break
                curve.append({"step": step + 1, "loss": value})
            if stop is not None and (step + 1) % check_every == 0 and step + 1 < steps and stop():
                stopped_at = step + 1
                if not curve or curve[-1]["step"] != stopped_at:  # the curve ends where training did
                    curve.append({"step": stopped_at, "loss": float(loss.detach())})
                break
    final = None if diverged_at else curve[-1]["loss"]
    return {"steps": steps, "loss_curve": curve, "final_loss": final, "diverged_at": diverged_at,
            "stopped_at": stopped_at, "wall_time_s": time.time() - start}  # fmt: skip
