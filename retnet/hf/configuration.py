"""``RetNetHFConfig``: a ``transformers`` config carrying every :class:`retnet.RetNetConfig` field (docs/spec.md §7).

The RetNet fields are validated by :class:`RetNetConfig` itself, so both classes accept exactly the same
architectures. Every config carries an ``auto_map`` naming the two small files that
:mod:`retnet.hf.export` writes into each saved directory, so ``AutoConfig`` / ``AutoModelForCausalLM`` load a
saved directory with ``trust_remote_code=True`` without the caller importing retnet first.
"""

from __future__ import annotations

import dataclasses

from transformers import PretrainedConfig

from ..model.config import RetNetConfig
from .directory import MODEL_TYPE

_FIELDS = [f.name for f in dataclasses.fields(RetNetConfig)]
_SPECIAL = ("pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings")

CONFIG_MODULE = "configuration_retnet"
MODELING_MODULE = "modeling_retnet"
AUTO_MAP = {
    "AutoConfig": f"{CONFIG_MODULE}.RetNetHFConfig",
    "AutoModelForCausalLM": f"{MODELING_MODULE}.RetNetHFForCausalLM",
}


class RetNetHFConfig(PretrainedConfig):
    """Hugging Face view of a :class:`RetNetConfig` (same field names; validated by ``RetNetConfig``).

    Args:
        **kwargs: any :class:`RetNetConfig` field (``vocab_size`` defaults to 32000 as in ``transformers``
            configs), plus the ``PretrainedConfig`` arguments (``use_cache``, ``auto_map``, ...).

    Raises:
        ValueError: an invalid RetNet architecture (the message is :class:`RetNetConfig`'s).
    """

    model_type = MODEL_TYPE
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # Trainer's evaluation collects tensors only

    def __init__(self, **kwargs):
        fields = {name: kwargs.pop(name) for name in _FIELDS if name in kwargs and name not in _SPECIAL}
        fields.setdefault("vocab_size", 32000)
        special = {name: kwargs.pop(name, None) for name in _SPECIAL}
        special["tie_word_embeddings"] = bool(special["tie_word_embeddings"])
        resolved = RetNetConfig(**fields, **special).to_dict()  # validates, fills flavour defaults
        for name in _FIELDS:
            if name not in _SPECIAL:
                setattr(self, name, resolved[name])
        self.use_cache = kwargs.pop("use_cache", True)
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        super().__init__(**special, **kwargs)

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoConfig"):
        """Keep the fixed ``auto_map`` (see the module docstring).

        ``transformers`` calls this on classes it loaded as remote code; the default would copy this package's
        source file into later saves and point ``auto_map`` at it, and that file cannot run outside the package.
        """

    def to_retnet_config(self) -> RetNetConfig:
        """The equivalent :class:`RetNetConfig`."""
        return RetNetConfig(**{name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def from_retnet_config(cls, config: RetNetConfig, **kwargs) -> RetNetHFConfig:
        """Wrap a :class:`RetNetConfig` (``kwargs``: further ``PretrainedConfig`` arguments)."""
        return cls(**config.to_dict(), **kwargs)
