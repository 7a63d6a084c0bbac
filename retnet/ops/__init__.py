"""Token-mixing operators: retention in its three forms and its backends."""

from .retention import RetentionState, log_decay_schedule, retention

__all__ = ["RetentionState", "log_decay_schedule", "retention"]
