"""Retention (paper §2.1) in three forms, with one entry point: :func:`retention`."""

from .decay import decay_mask, decay_row_norm, log_decay_schedule
from .dispatch import FORMS, retention
from .reference import chunkwise_ref, parallel_ref, recurrent_ref
from .state import RetentionState

__all__ = [
    "FORMS",
    "RetentionState",
    "chunkwise_ref",
    "decay_mask",
    "decay_row_norm",
    "log_decay_schedule",
    "parallel_ref",
    "recurrent_ref",
    "retention",
]
