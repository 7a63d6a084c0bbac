"""The ``transformers`` adapter: Auto classes, save/load through transformers, forward and generate."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from retnet import RetNetConfig, RetNetForCausalLM  # noqa: E402
from retnet.hf import RetNetHFConfig, RetNetHFForCausalLM, register_auto_classes  # noqa: E402


@pytest.mark.parametrize("tie", [False, True])
def test_auto_classes_round_trip(tmp_path, tie):
    register_auto_classes()
    config = RetNetHFConfig.from_retnet_config(RetNetConfig.from_preset("debug", tie_word_embeddings=tie))
    model = RetNetHFForCausalLM(config).eval()
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, RetNetHFForCausalLM)
    ids = torch.randint(0, 256, (2, 12))
    out = loaded(ids, labels=ids)
    assert torch.equal(out.logits, model(ids).logits) and out.loss is not None
    if tie:
        assert loaded.retnet.lm_head.weight.data_ptr() == loaded.retnet.model.embed_tokens.weight.data_ptr()
    assert loaded.config.to_retnet_config() == model.config.to_retnet_config()


def test_forward_cache_and_generate_match_native():
    native = RetNetForCausalLM(RetNetConfig.from_preset("debug")).eval()
    wrapped = RetNetHFForCausalLM(RetNetHFConfig.from_retnet_config(native.config)).eval()
    wrapped.retnet.load_state_dict(native.state_dict())
    ids = torch.randint(0, 256, (1, 10))
    first = wrapped(ids[:, :6], use_cache=True)
    cache = getattr(first, "cache", None) or first.past_key_values
    rest = wrapped(ids[:, 6:], cache=cache, form="recurrent")
    legacy = wrapped(ids[:, 6:], past_key_values=cache, form="recurrent")
    assert torch.equal(legacy.logits, rest.logits)
    full = native(ids).logits
    assert torch.allclose(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5)
    mask = torch.ones_like(ids)
    assert torch.equal(
        wrapped.generate(ids, attention_mask=mask, max_new_tokens=5), native.generate(ids, max_new_tokens=5)
    )


def test_invalid_hf_config_raises():
    with pytest.raises(ValueError):
        RetNetHFConfig(hidden_size=30, num_heads=4)
