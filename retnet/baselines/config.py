"""``MixerLMConfig``: hyper-parameters of the shared language-model skeleton used for the comparison (paper §3.4).

One skeleton (embedding, pre-norm blocks of token mixer + FFN, final norm, head) serves every baseline
architecture of the paper's Tables 5 and 6; ``arch`` picks the token mixer. The block norm, FFN and embedding
settings are copied from the RetNet config being compared, so only the mixer differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..layers.ffn import ACTIVATIONS
from ..utils.config_io import JsonConfig, require_positive_ints, require_special_ids_in_vocab

ARCHS = ("transformer", "linear_transformer", "rwkv", "h3", "hyena")


@dataclass(kw_only=True)
class MixerLMConfig(JsonConfig):
    """Hyper-parameters of a :class:`~retnet.baselines.MixerLM`.

    Attributes:
        arch: token mixer, one of ``ARCHS``.
        vocab_size: size of the token vocabulary.
        hidden_size: D, model width.
        num_hidden_layers: L.
        ffn_dim: inner width of the FFN (the knob used to match parameter counts).
        num_heads: heads of the attention-like mixers (transformer, linear transformer); head dim D / H.
        norm: block norm, ``"rmsnorm"`` or ``"layernorm"``.
        ffn_glu: GLU FFN or plain MLP.
        activation: FFN activation.
        norm_eps: eps of the block norms.
        scale_embedding: multiply embeddings by √D.
        tie_word_embeddings: share the embedding and output matrices.
        dropout: dropout after each sublayer and in the FFN.
        h3_head_dim: head dim of H3's multiplicative interaction (8 in the paper's comparison).
        ssm_state_size: N, state size of H3's SSMs (shift kernel length, twice the diagonal modes).
        hyena_order: Hyena's order (number of gates); 2 in the paper's comparison.
        hyena_filter_size: width of Hyena's implicit filter network.
        hyena_emb_dim: positional features fed to the filter network (odd, ≥ 3).
        hyena_short_filter: length of Hyena's short depthwise convolution.
        max_position_embeddings: length scale of Hyena's filter positions (positions beyond it extrapolate).
        pad_token_id, bos_token_id, eos_token_id: special token ids (optional).
    """

    arch: str
    vocab_size: int
    hidden_size: int = 256
    num_hidden_layers: int = 4
    ffn_dim: int = 1024
    num_heads: int = 4
    norm: str = "layernorm"
    ffn_glu: bool = False
    activation: str = "gelu"
    norm_eps: float = 1e-6
    scale_embedding: bool = False
    tie_word_embeddings: bool = False
    dropout: float = 0.0
    h3_head_dim: int = 8
    ssm_state_size: int = 64
    hyena_order: int = 2
    hyena_filter_size: int = 64
    hyena_emb_dim: int = 3
    hyena_short_filter: int = 3
    max_position_embeddings: int = 2048
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        require_positive_ints(
            self,
            (
                "vocab_size",
                "hidden_size",
                "num_hidden_layers",
                "ffn_dim",
                "num_heads",
                "h3_head_dim",
                "ssm_state_size",
                "hyena_order",
                "hyena_filter_size",
                "hyena_short_filter",
                "max_position_embeddings",
            ),
        )
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ValueError(f"norm must be 'rmsnorm' or 'layernorm', got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.arch in ("transformer", "linear_transformer"):
            if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
                raise ValueError(f"hidden_size {self.hidden_size} must split into {self.num_heads} heads of even dim")
        if self.arch == "h3" and self.hidden_size % self.h3_head_dim:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by h3_head_dim {self.h3_head_dim}")
        if self.arch == "h3" and self.ssm_state_size % 2:
            raise ValueError(f"ssm_state_size must be even (conjugate pairs), got {self.ssm_state_size}")
        if self.arch == "hyena" and self.hyena_order < 2:
            raise ValueError(f"hyena_order must be >= 2, got {self.hyena_order}")
        if self.hyena_emb_dim < 3 or self.hyena_emb_dim % 2 == 0:
            raise ValueError(f"hyena_emb_dim must be odd and >= 3, got {self.hyena_emb_dim}")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        require_special_ids_in_vocab(self)
