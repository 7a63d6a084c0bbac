"""retnet: Retentive Networks (Sun et al. 2023) in PyTorch.

Public API: :func:`retention` (the op, three forms), :class:`RetNetConfig`, :class:`RetNetForCausalLM` (the
language model with generation; :mod:`retnet.generation.models` composes it from :mod:`retnet.model`), and
``__version__`` (the installed package's version).
"""

from .generation import RetNetForCausalLM
from .model import PRESETS, RetNetConfig, RetNetOutput
from .ops import RetentionState, log_decay_schedule, retention
from .utils.environment import retnet_version

__version__ = retnet_version()

__all__ = [
    "PRESETS",
    "RetNetConfig",
    "RetNetForCausalLM",
    "RetNetOutput",
    "RetentionState",
    "__version__",
    "log_decay_schedule",
    "retention",
]
