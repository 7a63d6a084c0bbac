"""``RetNetHFConfig``: a ``transformers`` config carrying every :class:`retnet.RetNetConfig` field."""

from __future__ import annotations

import dataclasses

from transformers import PretrainedConfig

from ..model.config import RetNetConfig

_FIELDS = [f.name for f in dataclasses.fields(RetNetConfig)]
_SPECIAL = ("pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings")


class RetNetHFConfig(PretrainedConfig):
    """Hugging Face view of a :class:`RetNetConfig` (same field names; validated by ``RetNetConfig``)."""

    model_type = "retnet"

    def __init__(self, **kwargs):
        fields = {name: kwargs.pop(name) for name in _FIELDS if name in kwargs and name not in _SPECIAL}
        fields.setdefault("vocab_size", 32000)
        special = {name: kwargs.pop(name, None) for name in _SPECIAL}
        special["tie_word_embeddings"] = bool(special["tie_word_embeddings"])
        resolved = RetNetConfig(**fields, **special).to_dict()  # validates, fills flavour defaults
        for name in _FIELDS:
            if name not in _SPECIAL:
                setattr(self, name, resolved[name])
        super().__init__(**special, **kwargs)

    def to_retnet_config(self) -> RetNetConfig:
        """The equivalent :class:`RetNetConfig`."""
        return RetNetConfig(**{name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def from_retnet_config(cls, config: RetNetConfig) -> RetNetHFConfig:
        """Wrap a :class:`RetNetConfig`."""
        return cls(**config.to_dict())
