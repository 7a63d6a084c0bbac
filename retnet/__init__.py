"""retnet: Retentive Networks (Sun et al. 2023) in PyTorch.

Public API: :func:`retention` (the op, three forms), :class:`RetNetConfig`, :class:`RetNetForCausalLM`.
"""

from .model import PRESETS, RetNetConfig, RetNetForCausalLM, RetNetOutput
from .ops import RetentionState, log_decay_schedule, retention

__all__ = [
    "PRESETS",
    "RetNetConfig",
    "RetNetForCausalLM",
    "RetNetOutput",
    "RetentionState",
    "log_decay_schedule",
    "retention",
]
