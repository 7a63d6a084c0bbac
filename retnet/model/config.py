"""``RetNetConfig``: every RetNet hyper-parameter, validated, with the two flavours of docs/spec.md §7."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..layers.ffn import ACTIVATIONS
from ..ops.retention.decay import DECAY_SCHEDULES
from ..utils.config_io import JsonConfig, require_positive_ints, require_special_ids_in_vocab
from .presets import PRESETS

FLAVOURS = ("torchscale", "paper")


def _is_number(value) -> bool:
    """An int or float, not a bool (True would pass as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# What each flavour sets when the field is left as None (docs/spec.md §7).
FLAVOUR_DEFAULTS = {
    "torchscale": dict(
        norm="rmsnorm", head_norm="rms", ffn_glu=True, activation="swish", decay_schedule="torchscale",
        scale_embedding=True,
    ),
    "paper": dict(
        norm="layernorm", head_norm="groupnorm", ffn_glu=False, activation="gelu", decay_schedule="paper",
        scale_embedding=False,
    ),
}  # fmt: skip


@dataclass(kw_only=True)
class RetNetConfig(JsonConfig):
    """Hyper-parameters of a RetNet language model (HF field names).

    Fields left as None take their flavour's value (docs/spec.md §7); ``value_dim`` and ``ffn_dim`` default to 2·D.

    Attributes:
        vocab_size: size of the token vocabulary.
        hidden_size: D, model width.
        num_hidden_layers: L.
        num_heads: H; the q/k head dim is D / H.
        value_dim: H·V, total value width of a retention layer.
        ffn_dim: inner width of the FFN.
        flavour: ``"torchscale"`` (official code, the default) or ``"paper"``.
        norm: block norm, ``"rmsnorm"`` or ``"layernorm"``.
        head_norm: ``"rms"``, ``"groupnorm"`` or ``"none"``.
        ffn_glu: GLU FFN (torchscale) or plain MLP (paper).
        activation: FFN activation (swish, gelu, relu).
        decay_schedule: γ schedule (``torchscale``, ``paper``, ``single``, ``none``).
        scale_embedding: multiply embeddings by √D.
        use_gate: the swish gate of MSR.
        norm_eps: eps of the block norms.
        group_norm_eps: eps of the head-wise norm.
        tie_word_embeddings: share the embedding and output matrices.
        dropout: dropout after each sublayer and in the FFN.
        chunk_size: default chunk size of the chunkwise form.
        backend: retention backend (``auto``, ``torch``, ``triton``).
        pad_token_id, bos_token_id, eos_token_id: special token ids (optional).
    """

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_heads: int = 3
    value_dim: int | None = None
    ffn_dim: int | None = None
    flavour: str = "torchscale"
    norm: str | None = None
    head_norm: str | None = None
    ffn_glu: bool | None = None
    activation: str | None = None
    decay_schedule: str | None = None
    scale_embedding: bool | None = None
    use_gate: bool = True
    norm_eps: float = 1e-6
    group_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    dropout: float = 0.0
    chunk_size: int = 64
    backend: str = "auto"
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self):
        if self.flavour not in FLAVOURS:
            raise ValueError(f"unknown flavour {self.flavour!r}; expected one of {FLAVOURS}")
        for name, value in FLAVOUR_DEFAULTS[self.flavour].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.value_dim is None:
            self.value_dim = 2 * self.hidden_size
        if self.ffn_dim is None:
            self.ffn_dim = 2 * self.hidden_size
        self._validate()

    def _validate(self):
        require_positive_ints(
            self, ("vocab_size", "hidden_size", "num_hidden_layers", "num_heads", "value_dim", "ffn_dim", "chunk_size")
        )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"the q/k head dim hidden_size/num_heads = {self.head_dim} must be even (rotation pairs)")
        if self.value_dim % self.num_heads:
            raise ValueError(f"value_dim {self.value_dim} must be divisible by num_heads {self.num_heads}")
        choices = {
            "norm": ("rmsnorm", "layernorm"),
            "head_norm": ("rms", "groupnorm", "none"),
            "activation": tuple(ACTIVATIONS),
            "decay_schedule": DECAY_SCHEDULES,
            "backend": ("auto", "torch", "triton"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("ffn_glu", "scale_embedding", "use_gate", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):  # "no" or 3 would be truthy and silently mean True
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("norm_eps", "group_norm_eps"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        if not (_is_number(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be an int or None, got {value!r}")
        require_special_ids_in_vocab(self)

    @property
    def head_dim(self) -> int:
        """K, the q/k dim of one head."""
        return self.hidden_size // self.num_heads

    @property
    def head_value_dim(self) -> int:
        """V, the value dim of one head."""
        return self.value_dim // self.num_heads

    # ---- construction and serialisation -------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> RetNetConfig:
        """A named preset (``retnet.model.presets.PRESETS``) with field overrides.

        Raises:
            ValueError: for an unknown preset name (the message lists the valid ones).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_torchscale(cls, args: dict) -> RetNetConfig:
        """Read an official torchscale ``RetNetConfig`` (its keys); see :mod:`retnet.model.torchscale`."""
        from .torchscale import config_from_torchscale

        return config_from_torchscale(args)
