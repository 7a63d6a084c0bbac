"""retnet: Retentive Networks (Sun et al. 2023) in PyTorch.

Public API: :func:`retention` (the op, three forms), :class:`RetNetConfig`, :class:`RetNetForCausalLM` (the
language model with generation; :mod:`retnet.generation.models` composes it from :mod:`retnet.model`).
"""

from .generation import RetNetForCausalLM
from .model import PRESETS, RetNetConfig, RetNetOutput
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
