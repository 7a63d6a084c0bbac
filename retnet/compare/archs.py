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
import typing
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..baselines import MixerLM, MixerLMConfig
from ..generation import RetNetForCausalLM
from ..model import RetNetConfig

TABLE5 = ("transformer", "transformer-pp", "linear_transformer", "rwkv", "h3", "hyena", "retnet")
TABLE6 = ("retnet", "retnet-no-swish", "retnet-no-groupnorm", "retnet-no-decay", "retnet-single-decay",
          "retnet-small-head")  # fmt: skip
ENTRIES = tuple(dict.fromkeys(TABLE5 + TABLE6))
LABELS = {
    "transformer": "Transformer",
    "transformer-pp": "Transformer++",
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


# Baseline entries with blocks of their own instead of the RetNet row's: ``{entry: (mixer, fields)}``. The
# Transformer++ of the literature (LLaMA's blocks: rotary positions, RMSNorm, SwiGLU FFN, no biases), the attention
# baseline of later comparisons (the GLA paper's); the plain ``transformer`` entry keeps the RetNet row's blocks,
# so that its mixer alone differs, as in the paper's Table 5.
OWN_BLOCKS = {"transformer-pp": ("transformer", {"norm": "rmsnorm", "ffn_glu": True, "activation": "silu"})}
# The paper's eleven (its Tables 5 and 6): what a comparison trains unless ``compare.archs`` says otherwise.
PAPER_ENTRIES = tuple(name for name in ENTRIES if name not in OWN_BLOCKS)


def mixer_of(name: str) -> str:
    """The baseline mixer (``MixerLMConfig.arch``) of entry ``name``."""
    return OWN_BLOCKS.get(name, (name, {}))[0]


# MixerLMConfig fields copied from the RetNet row, so that only the token mixer differs.
SHARED_FIELDS = (
    "hidden_size", "num_hidden_layers", "norm", "ffn_glu", "activation", "norm_eps", "scale_embedding",
    "tie_word_embeddings", "dropout", "pad_token_id", "bos_token_id", "eos_token_id",
)  # fmt: skip
_PER_ENTRY = ("arch", "vocab_size", "ffn_dim")  # set for each entry: its mixer, the tokenizer's size, the matched FFN
# Baseline settings that only one architecture reads. The others keep MixerLMConfig's defaults for them, so a setting
# such as ``baseline.h3_head_dim`` changes H3's model (and its runs' keys) and no other entry's.
OWN_FIELDS = {
    "h3": ("h3_head_dim", "ssm_state_size"),
    "hyena": ("hyena_order", "hyena_filter_size", "hyena_emb_dim", "hyena_short_filter"),
}


def _baseline_fields() -> list[tuple]:
    hints = typing.get_type_hints(MixerLMConfig)
    out = []
    for f in dataclasses.fields(MixerLMConfig):
        if f.name in SHARED_FIELDS + _PER_ENTRY:
            continue
        default = dataclasses.field(default=f.default, default_factory=f.default_factory)
        out.append((f.name, hints[f.name], default))
    return out


# The baselines' own settings: every other MixerLMConfig field, with MixerLMConfig's defaults (num_heads of the
# attention-like mixers, H3's head dim and state size, Hyena's order and filter, ...).
BaselineSettings = dataclasses.make_dataclass("BaselineSettings", _baseline_fields(), kw_only=True)
BaselineSettings.__module__ = __name__
BaselineSettings.__doc__ = (
    "The :class:`~retnet.baselines.MixerLMConfig` fields of the baselines that do not follow from the RetNet row "
    "(same names, types and defaults; see its docstring)."
)


def non_embedding_parameters(model: nn.Module) -> int:
    """Distinct parameters outside the embedding and the LM head."""
    return model.num_parameters(exclude_embeddings=True)


def _retnet_config(name: str, base: RetNetConfig, small_head_factor: int, ffn_dim: int) -> RetNetConfig:
    if name == "retnet-small-head":
        heads = base.num_heads * small_head_factor
        if base.hidden_size % heads or base.value_dim % heads or (base.hidden_size // heads) % 2:
            raise ValueError(f"cannot split width {base.hidden_size} into {heads} heads for {name}")
        return dataclasses.replace(base, num_heads=heads, ffn_dim=ffn_dim)
    return dataclasses.replace(base, ffn_dim=ffn_dim, **ABLATIONS[name])


def _mixer_config(name: str, base: RetNetConfig, baseline: BaselineSettings, ffn_dim: int) -> MixerLMConfig:
    arch, blocks = OWN_BLOCKS.get(name, (name, {}))
    shared = {key: getattr(base, key) for key in SHARED_FIELDS} | blocks
    others = {key for mixer, keys in OWN_FIELDS.items() if mixer != arch for key in keys}
    own = {key: value for key, value in dataclasses.asdict(baseline).items() if key not in others}
    return MixerLMConfig(arch=arch, vocab_size=base.vocab_size, ffn_dim=ffn_dim, **shared, **own)


def entry_config(
    name: str, base: RetNetConfig, baseline: BaselineSettings, ffn_dim: int, *, small_head_factor: int = 4
):
    """The config of entry ``name`` with FFN width ``ffn_dim`` (a RetNetConfig or a MixerLMConfig).

    Args:
        name: entry name (see ``ENTRIES``).
        base: the RetNet row's config.
        baseline: the baselines' own MixerLMConfig settings.
        ffn_dim: the entry's FFN width.
        small_head_factor: the "reduce head dimension" ablation divides RetNet's q/k head dim by this.
    """
    if name not in ENTRIES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(ENTRIES)}")
    if name.startswith("retnet"):
        return _retnet_config(name, base, small_head_factor, ffn_dim)
    return _mixer_config(name, base, baseline, ffn_dim)


def build_model(config) -> nn.Module:
    """``RetNetForCausalLM`` for a RetNetConfig, ``MixerLM`` for a MixerLMConfig."""
    return RetNetForCausalLM(config) if isinstance(config, RetNetConfig) else MixerLM(config)


def count_for(name: str, base: RetNetConfig, baseline: BaselineSettings, **kwargs) -> Callable[[int], int]:
    """Non-embedding parameter count of entry ``name`` as a function of its FFN width (built on the meta device).

    ``kwargs`` go to :func:`entry_config`.
    """

    def count(ffn_dim: int) -> int:
        import torch

        with torch.device("meta"):
            return non_embedding_parameters(build_model(entry_config(name, base, baseline, ffn_dim, **kwargs)))

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
    names,
    base: RetNetConfig,
    baseline: BaselineSettings | None = None,
    *,
    ffn_multiple: int = 8,
    small_head_factor: int = 4,
    tolerance: float = 0.02,
) -> dict[str, MatchedModel]:
    """Configs for ``names`` whose non-embedding parameter counts match RetNet's (``base``).

    Args:
        names: entries to build.
        base: the RetNet row's config (its FFN width is kept; the others are solved for).
        baseline: the baselines' own MixerLMConfig settings (default: MixerLMConfig's defaults).
        ffn_multiple: FFN widths are multiples of this (8 keeps GPU matmuls aligned).
        small_head_factor: the "reduce head dimension" ablation divides RetNet's q/k head dim by this.
        tolerance: largest allowed relative deviation.

    Returns:
        ``{name: MatchedModel}``.

    Raises:
        ValueError: an unknown name, or a model that cannot be matched within ``tolerance``.
    """
    import torch

    baseline = baseline or BaselineSettings()
    extra = {"small_head_factor": small_head_factor}
    target = count_for("retnet", base, baseline, **extra)(base.ffn_dim)
    matched = {}
    for name in names:
        count = count_for(name, base, baseline, **extra)
        if name == "retnet":
            ffn = base.ffn_dim
        else:
            lo, hi = count(ffn_multiple), count(2 * ffn_multiple)
            per_unit = (hi - lo) / ffn_multiple
            exact = ffn_multiple + (target - lo) / per_unit
            ffn = max(ffn_multiple, int(round(exact / ffn_multiple)) * ffn_multiple)
        config = entry_config(name, base, baseline, ffn, **extra)
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
