"""Parameter matching of the comparison entries."""

import dataclasses

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.baselines import MixerLM, MixerLMConfig
from retnet.compare.archs import ENTRIES, SHARED_FIELDS, BaselineSettings, match_parameters


def base_config(**kw):
    return RetNetConfig(flavour="paper", hidden_size=64, num_hidden_layers=2, num_heads=2, vocab_size=97, **kw)


def test_every_entry_matches_retnet_within_two_percent():
    matched = match_parameters(ENTRIES, base_config(), BaselineSettings(num_heads=4, ssm_state_size=8))
    assert set(matched) == set(ENTRIES)
    target = matched["retnet"].parameters
    for name, m in matched.items():
        assert abs(m.parameters / target - 1) <= 0.02, f"{name}: {m.parameters} vs {target}"
        model = RetNetForCausalLM(m.config) if name.startswith("retnet") else MixerLM(m.config)
        assert model.num_parameters(exclude_embeddings=True) == m.parameters  # counts are exact, not estimates
        assert model.num_parameters() == m.total_parameters


def test_ablation_switches():
    matched = match_parameters(ENTRIES, base_config())
    assert matched["retnet-no-swish"].config.use_gate is False
    assert matched["retnet-no-groupnorm"].config.head_norm == "none"
    assert matched["retnet-no-decay"].config.decay_schedule == "none"
    assert matched["retnet-single-decay"].config.decay_schedule == "single"
    assert matched["retnet-small-head"].config.head_dim == matched["retnet"].config.head_dim // 4
    assert matched["h3"].config.h3_head_dim == 8 and matched["hyena"].config.hyena_order == 2


def test_paper_200m_size():
    base = RetNetConfig(flavour="paper", hidden_size=1024, num_hidden_layers=16, num_heads=4, vocab_size=32000)
    with torch.device("meta"):
        matched = match_parameters(("retnet", "transformer", "h3"), base)
    assert 195e6 < matched["retnet"].parameters < 205e6  # Table 5: 200M


def test_unmatchable_and_unknown_raise():
    with pytest.raises(ValueError, match="unknown architecture"):
        match_parameters(("mamba",), base_config())
    with pytest.raises(ValueError, match="tolerance"):
        match_parameters(("transformer",), base_config(), ffn_multiple=512)


def test_baseline_settings_are_the_mixer_fields_not_taken_from_retnet():
    mixer = {f.name: f.default for f in dataclasses.fields(MixerLMConfig)}
    own = {f.name: f.default for f in dataclasses.fields(BaselineSettings)}
    assert set(own) == set(mixer) - set(SHARED_FIELDS) - {"arch", "vocab_size", "ffn_dim"}
    assert {"num_heads", "h3_head_dim", "hyena_order"} <= set(own)
    assert all(mixer[name] == default for name, default in own.items())
    matched = match_parameters(
        ("h3", "transformer", "retnet-small-head"), base_config(), BaselineSettings(num_heads=8, h3_head_dim=4),
        small_head_factor=2,
    )  # fmt: skip
    h3, transformer = matched["h3"].config, matched["transformer"].config
    assert h3.h3_head_dim == 4 and transformer.num_heads == 8
    assert (h3.hidden_size, h3.num_hidden_layers, h3.norm, h3.ffn_glu, h3.vocab_size) == (64, 2, "layernorm", False, 97)
    assert matched["retnet-small-head"].config.num_heads == 4  # 2 heads × 2


def test_a_setting_of_one_architecture_leaves_the_other_entries_unchanged():
    """H3's and Hyena's own settings reach only their models: the other entries' configs (and so their runs' keys
    in a results file) stay those of the defaults."""
    names = ("transformer", "rwkv", "h3", "hyena")
    default = match_parameters(names, base_config())
    changed = match_parameters(names, base_config(), BaselineSettings(h3_head_dim=1, ssm_state_size=16, hyena_order=3))
    assert changed["h3"].config.h3_head_dim == 1 and changed["h3"].config.ssm_state_size == 16
    assert changed["hyena"].config.hyena_order == 3 and changed["hyena"].config.h3_head_dim == 8
    assert changed["h3"].config.hyena_order == 2
    for name in ("transformer", "rwkv"):
        assert changed[name].config == default[name].config


def test_the_transformer_pp_has_llama_blocks_and_the_paper_entries_stay_the_default():
    """The Transformer++ entry: the attention mixer with RMSNorm and a SwiGLU FFN whatever the RetNet row's blocks
    (here the paper's LayerNorm and GELU MLP, which the plain Transformer entry copies); a comparison trains it only
    where ``compare.archs`` names it."""
    from retnet.compare import load_compare_config
    from retnet.compare.archs import PAPER_ENTRIES
    from retnet.compare.entries import run_config, run_key

    matched = match_parameters(("retnet", "transformer", "transformer-pp"), base_config())
    pp, plain = matched["transformer-pp"].config, matched["transformer"].config
    assert (pp.arch, pp.norm, pp.ffn_glu, pp.activation) == ("transformer", "rmsnorm", True, "silu")
    assert (plain.arch, plain.norm, plain.ffn_glu, plain.activation) == ("transformer", "layernorm", False, "gelu")
    model = MixerLM(pp)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert "transformer-pp" not in PAPER_ENTRIES and len(PAPER_ENTRIES) == 11
    assert load_compare_config("tiny", None, []).compare.archs == list(PAPER_ENTRIES)
    assert "transformer-pp" in load_compare_config("medium", None, []).compare.archs
    config = load_compare_config("tiny", None, [])
    assert run_key(run_config(config, "transformer-pp", pp)) != run_key(run_config(config, "transformer", plain))
