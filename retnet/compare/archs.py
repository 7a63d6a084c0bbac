"""The architectures of the paper's comparison (Tables 5 and 6) built at matched parameter counts.

Every entry derives from one base :class:`~retnet.RetNetConfig` (the RetNet row): the baselines copy its width,
depth, vocabulary, block norm, FFN kind and embedding scale into a :class:`~retnet.baselines.MixerLMConfig`,
and the Table-6 ablations are RetNet config switches. Counts are matched on non-embedding parameters (the
embedding and head are the same for all) by adjusting each model's FFN width: parameters are affine in it, so
two counts give the exact width, rounded to a multiple of ``ffn_multiple``; a model more than
``tolerance`` away from the RetNet count is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..baselines import MixerLM, MixerLMConfig
from ..generation import RetNetForCausalLM
from ..model import RetNetConfig

TABLE5 = ("transformer", "linear_transformer", "rwkv", "h3", "hyena", "retnet")
TABLE6 = ("retnet", "retnet-no-swish", "retnet-no-groupnorm", "retnet-no-decay", "retnet-single-decay",
          "retnet-small-head")  # fmt: skip
ENTRIES = tuple(dict.fromkeys(TABLE5 + TABLE6))
LABELS = {
    "transformer": "Transformer",
    "linear_transformer": "Linear Transformer",
    "rwkv": "RWKV",
    "h3": "H3",
    "hyena": "Hyena",
    "retnet": "RetNet",
    "retnet-no-swish": "− Swish gate",
    "retnet-no-groupnorm": "− GroupNorm",
    "retnet-no-decay": "− γ decay",
    "retnet-single-decay": "− Multi-scale decay",
    "retnet-small-head": "Reduce head dimension",
}
# RetNet switches of each Table-6 row (paper §3.5).
ABLATIONS = {
    "retnet": {},
    "retnet-no-swish": {"use_gate": False},
    "retnet-no-groupnorm": {"head_norm": "none"},
    "retnet-no-decay": {"decay_schedule": "none"},
    "retnet-single-decay": {"decay_schedule": "single"},
}


@dataclass(kw_only=True)
class BaselineOptions:
    """Baseline settings that do not follow from the RetNet config.

    Attributes:
        attention_head_dim: head dim of the Transformer and Linear Transformer (D / head dim heads).
        h3_head_dim: H3's head dim (8 in the paper's comparison).
        ssm_state_size: N of H3's SSMs.
        hyena_order: Hyena's order (2 in the paper's comparison).
        hyena_filter_size: width of Hyena's filter network.
        max_position_embeddings: Hyena's filter length scale.
        small_head_factor: the "reduce head dimension" ablation divides RetNet's q/k head dim by this.
    """

    attention_head_dim: int = 64
    h3_head_dim: int = 8
    ssm_state_size: int = 64
    hyena_order: int = 2
    hyena_filter_size: int = 64
    max_position_embeddings: int = 2048
    small_head_factor: int = 4


def non_embedding_parameters(model: nn.Module) -> int:
    """Distinct parameters outside the embedding and the LM head."""
    return model.num_parameters(exclude_embeddings=True)


def _retnet_config(name: str, base: RetNetConfig, options: BaselineOptions, ffn_dim: int) -> RetNetConfig:
    if name == "retnet-small-head":
        heads = base.num_heads * options.small_head_factor
        if base.hidden_size % heads or base.value_dim % heads or (base.hidden_size // heads) % 2:
            raise ValueError(f"cannot split width {base.hidden_size} into {heads} heads for {name}")
        return dataclasses.replace(base, num_heads=heads, ffn_dim=ffn_dim)
    return dataclasses.replace(base, ffn_dim=ffn_dim, **ABLATIONS[name])


def _mixer_config(name: str, base: RetNetConfig, options: BaselineOptions, ffn_dim: int) -> MixerLMConfig:
    return MixerLMConfig(
        arch=name,
        vocab_size=base.vocab_size,
        hidden_size=base.hidden_size,
        num_hidden_layers=base.num_hidden_layers,
        ffn_dim=ffn_dim,
        num_heads=max(base.hidden_size // options.attention_head_dim, 1),
        norm=base.norm,
        ffn_glu=base.ffn_glu,
        activation=base.activation,
        norm_eps=base.norm_eps,
        scale_embedding=base.scale_embedding,
        tie_word_embeddings=base.tie_word_embeddings,
        dropout=base.dropout,
        h3_head_dim=options.h3_head_dim,
        ssm_state_size=options.ssm_state_size,
        hyena_order=options.hyena_order,
        hyena_filter_size=options.hyena_filter_size,
        max_position_embeddings=options.max_position_embeddings,
        pad_token_id=base.pad_token_id,
        bos_token_id=base.bos_token_id,
        eos_token_id=base.eos_token_id,
    )


def entry_config(name: str, base: RetNetConfig, options: BaselineOptions, ffn_dim: int):
    """The config of entry ``name`` with FFN width ``ffn_dim`` (a RetNetConfig or a MixerLMConfig)."""
    if name not in ENTRIES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(ENTRIES)}")
    if name.startswith("retnet"):
        return _retnet_config(name, base, options, ffn_dim)
    return _mixer_config(name, base, options, ffn_dim)


def build_model(config) -> nn.Module:
    """``RetNetForCausalLM`` for a RetNetConfig, ``MixerLM`` for a MixerLMConfig."""
    return RetNetForCausalLM(config) if isinstance(config, RetNetConfig) else MixerLM(config)


def count_for(name: str, base: RetNetConfig, options: BaselineOptions) -> Callable[[int], int]:
    """Non-embedding parameter count of entry ``name`` as a function of its FFN width (built on the meta device)."""

    def count(ffn_dim: int) -> int:
        import torch

        with torch.device("meta"):
            return non_embedding_parameters(build_model(entry_config(name, base, options, ffn_dim)))

    return count


@dataclass
class MatchedModel:
    """An entry at its matched size.

    Attributes:
        name: entry name (see ``ENTRIES``).
        config: its RetNetConfig or MixerLMConfig.
        parameters: non-embedding parameter count.
        total_parameters: all parameters (embedding and head included).
        target: the RetNet non-embedding count it was matched to.
    """

    name: str
    config: object
    parameters: int
    total_parameters: int
    target: int

    @property
    def deviation(self) -> float:
        """Relative difference to the target."""
        return self.parameters / self.target - 1.0


def match_parameters(
    names, base: RetNetConfig, options: BaselineOptions | None = None, *, ffn_multiple: int = 8, tolerance=0.02
) -> dict[str, MatchedModel]:
    """Configs for ``names`` whose non-embedding parameter counts match RetNet's (``base``).

    Args:
        names: entries to build.
        base: the RetNet row's config (its FFN width is kept; the others are solved for).
        options: baseline settings.
        ffn_multiple: FFN widths are multiples of this (8 keeps GPU matmuls aligned).
        tolerance: largest allowed relative deviation.

    Returns:
        ``{name: MatchedModel}``.

    Raises:
        ValueError: an unknown name, or a model that cannot be matched within ``tolerance``.
    """
    import torch

    options = options or BaselineOptions()
    target = count_for("retnet", base, options)(base.ffn_dim)
    matched = {}
    for name in names:
        count = count_for(name, base, options)
        if name == "retnet":
            ffn = base.ffn_dim
        else:
            lo, hi = count(ffn_multiple), count(2 * ffn_multiple)
            per_unit = (hi - lo) / ffn_multiple
            exact = ffn_multiple + (target - lo) / per_unit
            ffn = max(ffn_multiple, int(round(exact / ffn_multiple)) * ffn_multiple)
        config = entry_config(name, base, options, ffn)
        with torch.device("meta"):
            model = build_model(config)
        m = MatchedModel(name, config, non_embedding_parameters(model), model.num_parameters(), target)
        if abs(m.deviation) > tolerance:
            raise ValueError(
                f"{name}: {m.parameters:,} non-embedding parameters is {m.deviation:+.1%} from RetNet's {target:,} "
                f"(tolerance {tolerance:.0%}); the FFN width cannot absorb the difference at this size"
            )
        matched[name] = m
    return matched
