"""NaN and inf stay causal: a non-finite q, k or v at position p reaches outputs at positions >= p only, in every
reference form, and the three forms agree on where non-finite values appear; the same holds for the model."""

from __future__ import annotations

import logging

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.ops import RetentionState, log_decay_schedule, retention
from retnet.ops.retention import reference

FORMS = ("parallel", "recurrent", "chunkwise")
B, T, H, K, V, P = 2, 13, 2, 4, 6, 6  # T not a multiple of the chunk size; P inside the second chunk


def _inputs(dtype=torch.float32):
    q = torch.randn(B, T, H, K, dtype=dtype)
    k = torch.randn(B, T, H, K, dtype=dtype) * K**-0.5
    v = torch.randn(B, T, H, V, dtype=dtype)
    return {"q": q, "k": k, "v": v}, log_decay_schedule(H, "torchscale")


def _run(form, x, lg, state=None):
    o, final = retention(
        x["q"], x["k"], x["v"], lg, form=form, chunk_size=4, initial_state=state, output_final_state=True,
        backend="torch",
    )  # fmt: skip
    return o, final


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_non_finite_input_reaches_later_positions_only(name, value):
    clean, lg = _inputs()
    bad = {n: t.clone() for n, t in clean.items()}
    bad[name][0, P, 1, 0] = value  # one entry, batch row 0, head 1
    where = {}
    for form in FORMS:
        o_clean, _ = _run(form, clean, lg)
        o, final = _run(form, bad, lg)
        assert torch.isfinite(o[:, :P]).all(), f"{form}: non-finite output before position {P}"
        assert torch.equal(o[:, :P], o_clean[:, :P]), f"{form}: earlier outputs changed"
        assert torch.equal(o[1], o_clean[1]), f"{form}: another batch row changed"
        assert not torch.isfinite(o[0, P, 1]).all(), f"{form}: the planted value did not reach its own position"
        assert torch.isfinite(o[0, :, 0]).all(), f"{form}: another head changed"
        if name != "q":  # a key or value enters the state; a query does not
            assert not torch.isfinite(final.S[0, 1]).all()
        where[form] = ~torch.isfinite(o)
    assert torch.equal(where["parallel"], where["recurrent"]), "parallel and recurrent disagree on where"
    assert torch.equal(where["chunkwise"], where["recurrent"]), "chunkwise and recurrent disagree on where"


@pytest.mark.parametrize("part", ["S", "z"])
def test_non_finite_initial_state_agrees_across_forms(part):
    x, lg = _inputs()
    S = torch.randn(B, H, K, V)
    z = torch.randn(B, H, K)
    (S if part == "S" else z)[0, 1, 2, ...] = float("nan")
    where = {}
    for form in FORMS:
        o, _ = _run(form, x, lg, RetentionState(S.clone(), z.clone(), torch.full((B,), 3)))
        clean, _ = _run(form, x, lg, RetentionState(torch.zeros_like(S), torch.zeros_like(z), torch.full((B,), 3)))
        assert not torch.isfinite(o[0, :, 1]).all(dim=-1).any(), f"{form}: the state reaches every position"
        assert torch.isfinite(o[1]).all() and torch.isfinite(o[0, :, 0]).all(), f"{form}: other rows/heads changed"
        assert clean.isfinite().all()
        where[form] = ~torch.isfinite(o)
    assert torch.equal(where["parallel"], where["recurrent"]) and torch.equal(where["chunkwise"], where["recurrent"])
    pytest.importorskip("triton")
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # the interpreter on CPU
    state = RetentionState(S.to(dev), z.to(dev), torch.full((B,), 3, device=dev))
    o, _ = retention(
        **{n: t.to(dev) for n, t in x.items()}, log_decay=lg.to(dev), initial_state=state, backend="triton"
    )
    assert torch.equal(~torch.isfinite(o).cpu(), where["recurrent"]), "the kernels and the recurrence disagree on where"


@pytest.mark.parametrize("form", FORMS)
def test_model_overflow_at_one_token_leaves_earlier_logits_intact(form):
    torch.manual_seed(0)
    model = RetNetForCausalLM(RetNetConfig.from_preset("debug", vocab_size=97, backend="torch")).eval()
    ids = torch.randint(0, 97, (1, 50))
    with torch.no_grad():
        clean = model(ids, form=form, chunk_size=16).logits

        seen = [0]  # tokens embedded so far (the recurrent form embeds one token per call)

        def overflow(module, args, out):
            start, seen[0] = seen[0], seen[0] + out.shape[1]
            if start <= 40 < seen[0]:
                out = out.clone()
                out[:, 40 - start] = float("inf")  # what an fp16 overflow at token 40 leaves behind
            return out

        handle = model.model.embed_tokens.register_forward_hook(overflow)
        try:
            logits = model(ids, form=form, chunk_size=16).logits
        finally:
            handle.remove()
    assert torch.isfinite(logits[:, :40]).all()
    assert torch.equal(logits[:, :40], clean[:, :40])
    assert (~torch.isfinite(logits[:, 40:])).any(dim=-1).all()  # and from token 40 on it is everywhere


def test_fp16_overflow_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(reference, "_fp16_overflow_logged", False)
    q = torch.full((1, 8, 1, 4), 60.0, dtype=torch.float16)
    lg = log_decay_schedule(1, "torchscale")
    with caplog.at_level(logging.WARNING, logger="retnet.ops.retention.reference"):
        for _ in range(2):
            o, _ = retention(q, q, q, lg, form="parallel", normalize=False, backend="torch")
            assert torch.isinf(o).any()
        o, _ = retention(q, q, q, lg, form="parallel", backend="torch")  # normalised: in range, no warning
        assert torch.isfinite(o).all()
    assert caplog.text.count("float16 output overflowed to inf") == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_triton_kernels_keep_non_finite_inputs_causal(name, value):
    """The chunkwise kernels (the interpreter on CPU) put non-finite outputs where the reference does: a planted
    value at position p inside a chunk reaches positions >= p only, and every finite output is unchanged."""
    pytest.importorskip("triton")
    torch.manual_seed(1)
    Tl, p = 37, 21  # several kernel chunks; p inside one, not at its start
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # the interpreter on CPU
    q, k, v = (torch.randn(B, Tl, H, d, device=dev) for d in (K, K, V))
    k = k * K**-0.5
    lg = log_decay_schedule(H, "torchscale").to(dev)
    clean = {"q": q, "k": k, "v": v}
    bad = {n: t.clone() for n, t in clean.items()}
    bad[name][0, p, 1, 0] = value
    o_clean, _ = retention(**clean, log_decay=lg, form="chunkwise", backend="triton")
    o, _ = retention(**bad, log_decay=lg, form="chunkwise", backend="triton")
    ref, _ = retention(**bad, log_decay=lg, form="recurrent", backend="torch")
    assert torch.isfinite(o[:, :p]).all(), "a non-finite value reached earlier positions"
    assert torch.equal(~torch.isfinite(o), ~torch.isfinite(ref)), "the kernels and the recurrence disagree on where"
    assert torch.equal(o[:, :p], o_clean[:, :p])
    if name == "v":  # a value reaches its own channel only: every other output is unchanged
        finite = torch.isfinite(o)
        assert torch.equal(o[finite], o_clean[finite])
