"""Every baseline mixer: builds, learns, and its recurrent decoding equals its parallel training path."""

import pytest
import torch

from retnet.baselines import ARCHS, MixerLM, MixerLMConfig
from retnet.baselines.rwkv import NEG, wkv_chunked, wkv_step
from retnet.generation import generate

VOCAB = 40


def tiny_config(arch: str, **overrides) -> MixerLMConfig:
    kwargs = dict(
        arch=arch, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_heads=2,
        h3_head_dim=4, ssm_state_size=8, max_position_embeddings=64,
    )  # fmt: skip
    return MixerLMConfig(**{**kwargs, **overrides})


def max_err(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("arch, extra", [(arch, {}) for arch in ARCHS] + [("h3", {"h3_head_dim": 1})])
def test_recurrent_matches_parallel_float64(arch, extra):
    model = MixerLM(tiny_config(arch, **extra)).double()
    ids = torch.randint(0, VOCAB, (2, 21))
    parallel = model(ids, form="parallel").logits
    recurrent = model(ids, form="recurrent").logits
    assert max_err(parallel, recurrent) < 1e-9, f"max err {max_err(parallel, recurrent):.3e}"
    # prefill with the parallel path (returning states), then continue token by token
    prefix = model(ids[:, :13], output_states=True)
    rest = model(ids[:, 13:], states=prefix.states, output_states=True)
    err = max_err(parallel[:, 13:], rest.logits)
    assert err < 1e-9, f"continuation max err {err:.3e}"
    assert max_err(parallel[:, :13], prefix.logits) < 1e-9


@pytest.mark.parametrize("arch", ARCHS)
def test_training_steps_reduce_loss(arch):
    model = MixerLM(tiny_config(arch))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(0, VOCAB, (4, 32))
    losses = []
    for _ in range(8):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, f"losses {losses}"


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_runs(arch):
    model = MixerLM(tiny_config(arch))
    ids = torch.randint(0, VOCAB, (2, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_uses_recurrent_decoding(arch):
    model = MixerLM(tiny_config(arch)).double()
    prompt = torch.randint(0, VOCAB, (2, 5))
    out = generate(model, prompt, max_new_tokens=4)
    ids = prompt
    for _ in range(4):  # greedy decoding by re-running the parallel path
        nxt = model(ids, form="parallel").logits[:, -1].argmax(-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    assert torch.equal(out, ids)


def test_rwkv_wkv_is_stable_for_large_keys():
    B, T, D = 2, 37, 6
    k = torch.randn(B, T, D, dtype=torch.float64) * 300  # exp(k) would overflow without the running max
    v = torch.randn(B, T, D, dtype=torch.float64)
    w = torch.rand(D, dtype=torch.float64) * 2
    u = torch.randn(D, dtype=torch.float64)
    wkv, (a, b, p) = wkv_chunked(k, v, w, u, chunk_size=8)
    sa, sb, sp = torch.zeros(B, D, dtype=torch.float64), torch.zeros(B, D, dtype=torch.float64), None
    sp = torch.full((B, D), NEG, dtype=torch.float64)
    outs = []
    for t in range(T):
        o, sa, sb, sp = wkv_step(k[:, t], v[:, t], w, u, sa, sb, sp)
        outs.append(o)
    ref = torch.stack(outs, 1)
    assert torch.isfinite(wkv).all()
    assert max_err(wkv, ref) < 1e-9
    assert max_err(a * torch.exp(p - sp), sa) < 1e-9 and max_err(b * torch.exp(p - sp), sb) < 1e-9


def test_padding_mask_rejected():
    model = MixerLM(tiny_config("transformer"))
    ids = torch.randint(0, VOCAB, (1, 4))
    with pytest.raises(ValueError, match="left padding"):
        model(ids, attention_mask=torch.tensor([[0, 1, 1, 1]]))


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="unknown arch"):
        MixerLMConfig(arch="mamba", vocab_size=10)
    with pytest.raises(ValueError, match="h3_head_dim"):
        MixerLMConfig(arch="h3", vocab_size=10, hidden_size=30, h3_head_dim=8)


def test_save_and_load_pretrained(tmp_path):
    model = MixerLM(tiny_config("hyena", tie_word_embeddings=True))
    model.save_pretrained(tmp_path / "m")
    loaded = MixerLM.from_pretrained(tmp_path / "m")
    ids = torch.randint(0, VOCAB, (1, 9))
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
