"""Learning-rate schedule: linear warm-up, then cosine or linear decay to ``min_lr_ratio · lr`` (or constant).

The rate is a pure function of the step, so resuming needs no scheduler state beyond the step count.
"""

from __future__ import annotations

import math

from .config import OptimSection


def lr_at(step: int, total_steps: int, cfg: OptimSection) -> float:
    """The learning rate of optimizer step ``step`` (0-based) in a run of ``total_steps`` steps."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    if cfg.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape)
