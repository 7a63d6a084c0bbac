"""retnet: Retentive Networks (Sun et al. 2023) in PyTorch.

Public API: :func:`retention` (the op, three forms), :class:`RetNetConfig`, :class:`RetNetForCausalLM` (the
language model with generation; :mod:`retnet.generation.models` composes it from :mod:`retnet.model`), and
``__version__`` (the installed package's version).
"""

from importlib import metadata as _metadata

from .generation import RetNetForCausalLM
from .model import PRESETS, RetNetConfig, RetNetOutput
from .ops import RetentionState, log_decay_schedule, retention


def _package_version() -> str:
    """The installed distribution's version; ``0+unknown`` when the source tree is used without installing it."""
    try:
        return _metadata.version("retnet")
    except _metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _package_version()

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
