"""Training: config, optimizer and schedule, checkpoints, distributed wrapping, the loop, evaluation."""

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
