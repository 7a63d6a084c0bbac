"""retnet: Retentive Networks (Sun et al. 2023) in PyTorch."""

from .ops import RetentionState, log_decay_schedule, retention

__all__ = ["RetentionState", "log_decay_schedule", "retention"]
