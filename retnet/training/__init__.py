"""Training: config, optimizer and schedule, checkpoints, distributed wrapping, the loop, evaluation.

The names are imported on first use (:mod:`retnet.utils.lazy`): ``retnet train --help`` reads the config's keys
without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .config import TrainConfig, load_config, parse_overrides
    from .evaluate import EvalResult, evaluate
    from .trainer import NonFiniteLossError, TrainResult, train

__all__ = [
    "EvalResult",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "load_config",
    "parse_overrides",
    "train",
]

lazy_exports(
    __name__,
    {
        "TrainConfig": ".config",
        "load_config": ".config",
        "parse_overrides": ".config",
        "EvalResult": ".evaluate",
        "evaluate": ".evaluate",
        "NonFiniteLossError": ".trainer",
        "TrainResult": ".trainer",
        "train": ".trainer",
    },
)
