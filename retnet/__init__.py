"""retnet: Retentive Networks (Sun et al. 2023) in PyTorch.

Public API: :func:`retention` (the op, three forms), :class:`RetNetConfig`, :class:`RetNetForCausalLM` (the
language model with generation; :mod:`retnet.generation.models` composes it from :mod:`retnet.model`), and
``__version__`` (the installed package's version).

The names are imported on first use (:mod:`retnet.utils.lazy`), so ``import retnet`` and the ``retnet`` command's
start load no torch until something needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .utils.environment import retnet_version
from .utils.lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names are, for type checkers and documentation tools
    from .generation import RetNetForCausalLM
    from .model import PRESETS, RetNetConfig, RetNetOutput
    from .ops import RetentionState, log_decay_schedule, retention

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

lazy_exports(
    __name__,
    {
        "RetNetForCausalLM": ".generation",
        "PRESETS": ".model",
        "RetNetConfig": ".model",
        "RetNetOutput": ".model",
        "RetentionState": ".ops",
        "log_decay_schedule": ".ops",
        "retention": ".ops",
    },
)
