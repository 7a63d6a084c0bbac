"""The transformers model: logits equal the native model's, the cache continues exactly, bad input fails clearly."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from retnet import RetNetConfig
from retnet.hf import RetNetCache, RetNetHFConfig, RetNetHFForCausalLM


def _cache(out):
    return out.cache if "cache" in out else out.past_key_values


def test_logits_and_loss_equal_native(native, wrapped):
    ids = torch.randint(0, 257, (2, 11))
    out = wrapped(ids, labels=ids)
    ref = native(ids, labels=ids)
    assert isinstance(out, CausalLMOutputWithPast)
    assert torch.equal(out.logits, ref.logits) and torch.equal(out.loss, ref.loss)
    assert torch.equal(wrapped(ids, form="parallel").logits, native(ids, form="parallel").logits)
    assert torch.equal(wrapped(ids, form="recurrent").logits, native(ids, form="recurrent").logits)
    last = wrapped(ids, logits_to_keep=3, labels=ids)
    assert last.logits.shape == (2, 3, 257) and torch.allclose(last.logits, ref.logits[:, -3:], atol=1e-6)
    assert torch.allclose(last.loss, ref.loss, atol=1e-6)
    picked = wrapped(ids, logits_to_keep=torch.tensor([0, 5]))
    assert torch.allclose(picked.logits, ref.logits[:, [0, 5]], atol=1e-6)
    reversed_ = wrapped(ids, logits_to_keep=torch.arange(10, -1, -1), labels=ids)  # every position, reordered
    assert torch.allclose(reversed_.logits, ref.logits.flip(1), atol=1e-6)
    assert torch.allclose(reversed_.loss, ref.loss, atol=1e-6)
    loss, logits = wrapped(ids, labels=ids, return_dict=False, use_cache=False)
    assert torch.equal(logits, ref.logits) and torch.equal(loss, ref.loss)


def test_cache_continues_exactly_and_padding_is_offset(native, wrapped):
    ids = torch.randint(0, 257, (2, 10))
    first = wrapped(ids[:, :6], use_cache=True)
    cache = _cache(first)
    assert isinstance(cache, RetNetCache) and cache.get_seq_length() == 6 and cache.batch_size == 2
    prefill = native(ids[:, :6], output_states=True)
    step = native(ids[:, 6:7], form="recurrent", states=prefill.states, output_states=True)
    out = wrapped(ids[:, 6:7], cache=cache, attention_mask=torch.ones(2, 7, dtype=torch.long))
    assert torch.equal(out.logits, step.logits)  # one token after a cache: the recurrent form, as retnet decodes
    for got, want in zip(cache.states, step.states):
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    rest = wrapped(ids[:, 7:], past_key_values=cache)  # the name before transformers 5.24
    full = native(ids).logits
    assert torch.allclose(rest.logits, full[:, 7:], atol=1e-5) and cache.get_seq_length() == 10
    # Left padding: the padded row's logits equal the unpadded prompt's.
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    padded = wrapped(ids, attention_mask=mask).logits
    assert torch.allclose(padded[0, 4:], native(ids[:1, 4:]).logits[0], atol=1e-5)
    assert torch.equal(padded, native(ids, attention_mask=mask).logits)


def test_cache_reorders_and_selects_rows(wrapped):
    ids = torch.randint(0, 257, (3, 5))
    cache = _cache(wrapped(ids, use_cache=True))
    before = [s.S.clone() for s in cache.states]
    cache.reorder_cache(torch.tensor([2, 2, 0]))
    assert all(torch.equal(s.S, b[[2, 2, 0]]) for s, b in zip(cache.states, before))
    cache.batch_select_indices(torch.tensor([1, 2]))
    cache.batch_repeat_interleave(2)
    assert all(torch.equal(s.S, b[[2, 2, 0, 0]]) for s, b in zip(cache.states, before))
    assert cache.batch_size == 4 and all(cache.is_linear) and not cache.is_compileable
    with pytest.raises(ValueError, match="cannot be cropped"):
        cache.crop(-1)
    with pytest.raises(NotImplementedError):
        cache.update(torch.zeros(1), torch.zeros(1), 0)


def test_bad_arguments_raise(wrapped):
    ids = torch.randint(0, 257, (2, 4))
    with pytest.raises(TypeError):
        wrapped(ids, output_attentions=True)  # unknown arguments are not ignored
    with pytest.raises(ValueError, match="input_ids"):
        wrapped(attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="logits_to_keep"):
        wrapped(ids, logits_to_keep=-1)
    with pytest.raises(TypeError, match="cache"):
        wrapped(ids, cache=[None, None])
    with pytest.raises(ValueError, match="left padding"):
        wrapped(ids, attention_mask=torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]]))
    cache = _cache(wrapped(ids, use_cache=True))
    with pytest.raises(ValueError, match="only left padding"):
        wrapped(ids[:, :1], cache=cache, attention_mask=torch.tensor([[1] * 4 + [0], [1] * 5]))
    with pytest.raises(ValueError, match="not both"):
        wrapped(ids, cache=cache, past_key_values=RetNetCache(2))
    with pytest.raises(ValueError, match="hidden_size"):
        RetNetHFConfig(hidden_size=30, num_heads=4)


@pytest.mark.parametrize("tie", [False, True])
def test_save_and_auto_load_are_bit_exact(tmp_path, tie):
    config = RetNetHFConfig.from_retnet_config(RetNetConfig.from_preset("debug", tie_word_embeddings=tie))
    model = RetNetHFForCausalLM(config).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "README.md").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, RetNetHFForCausalLM)
    assert loaded.config.to_retnet_config() == model.config.to_retnet_config()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    if tie:
        assert loaded.retnet.lm_head.weight.data_ptr() == loaded.retnet.model.embed_tokens.weight.data_ptr()


def test_gradient_checkpointing_recomputes_blocks_with_equal_gradients(wrapped):
    ids = torch.randint(0, 257, (2, 9))
    calls = []
    wrapped.retnet.model.layers[0].retention.register_forward_hook(lambda *a: calls.append(1))
    # transformers 5.x renamed the switches (the old names still work, with a deprecation warning)
    enable = getattr(wrapped, "activation_checkpointing_enable", None) or wrapped.gradient_checkpointing_enable
    disable = getattr(wrapped, "activation_checkpointing_disable", None) or wrapped.gradient_checkpointing_disable

    def grads():
        wrapped.zero_grad()
        wrapped(ids, labels=ids, use_cache=False).loss.backward()
        return [p.grad.clone() for p in wrapped.parameters()]

    wrapped.train()
    plain = grads()
    assert len(calls) == 1
    enable()
    checkpointed = grads()
    assert wrapped.gradient_checkpointing and len(calls) == 3  # forward, then again in the backward
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))
    disable()
    grads()
    assert len(calls) == 4 and "forward" not in vars(wrapped.retnet.model.layers[0])
