"""The three reference forms compute one function (docs/spec.md §3): float64 to 1e-10, outputs, states and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retnet.ops import RetentionState, log_decay_schedule, retention
from retnet.ops.retention.decay import decay_row_norm
from tests.utils import assert_close

FORMS = ("parallel", "recurrent", "chunkwise")
F64 = torch.float64


def make_inputs(B, T, H, K, V, dtype=F64, with_state=False, position=0, schedule="torchscale"):
    q = torch.randn(B, T, H, K, dtype=dtype)
    k = torch.randn(B, T, H, K, dtype=dtype) * K**-0.5
    v = torch.randn(B, T, H, V, dtype=dtype)
    lg = log_decay_schedule(H, schedule, dtype=F64 if dtype == F64 else torch.float32)
    state = None
    if with_state:
        cd = F64 if dtype == F64 else torch.float32
        state = RetentionState(
            torch.randn(B, H, K, V, dtype=cd), torch.randn(B, H, K, dtype=cd), torch.full((B,), position)
        )
    return q, k, v, lg, state


def run_form(form, q, k, v, lg, state, chunk_size=16, **kw):
    o, final = retention(
        q, k, v, lg, form=form, initial_state=state, output_final_state=True, chunk_size=chunk_size, **kw
    )
    return o, final


def brute_force(q, k, v, lg, S0=None, z0=None, start=0, normalize=True):
    """Definition of docs/spec.md §3 as a double loop over (n, m): independent of the three implementations."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    gamma = lg.exp()
    o = torch.zeros(B, T, H, V, dtype=F64)
    for n in range(T):
        for h in range(H):
            acc = torch.zeros(B, V, dtype=F64)
            s = torch.zeros(B, dtype=F64)
            for m in range(n + 1):
                w = gamma[h] ** (n - m) * (q[:, n, h] * k[:, m, h]).sum(-1)
                acc += w[:, None] * v[:, m, h]
                s += w
            if S0 is not None:
                acc += gamma[h] ** (n + 1) * (q[:, n, h, :, None] * S0[:, h]).sum(-2)
                s += gamma[h] ** (n + 1) * (q[:, n, h] * z0[:, h]).sum(-1)
            if normalize:
                pos = start + n
                c = sum(gamma[h].item() ** i for i in range(pos + 1))
                acc = acc / torch.maximum(s.abs(), torch.tensor(c, dtype=F64).sqrt())[:, None]
            o[:, n, h] = acc
    return o


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_reference_matches_definition(normalize, with_state):
    q, k, v, lg, state = make_inputs(2, 11, 2, 4, 3, with_state=with_state, position=5)
    kw = dict(S0=state.S, z0=state.z, start=5) if with_state else {}
    expected = brute_force(q, k, v, lg, normalize=normalize, **kw)
    for form in FORMS:
        o, _ = run_form(form, q, k, v, lg, state, chunk_size=4, normalize=normalize)
        assert_close(o, expected, 1e-12, f"{form} vs definition")


def _grads(form, q, k, v, lg, state, chunk_size, offset=None):
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    S0 = state.S.clone().requires_grad_() if state is not None else None
    st_in = RetentionState(S0, state.z, state.position) if state is not None else None
    o, final = retention(
        *leaves, lg, form=form, initial_state=st_in, output_final_state=True, chunk_size=chunk_size, offset=offset
    )
    # A loss touching the output and the final state, with random weights so no gradient is trivially symmetric.
    g = torch.Generator().manual_seed(1)
    w_o = torch.randn(o.shape, generator=g, dtype=o.dtype)
    w_S = torch.randn(final.S.shape, generator=g, dtype=final.S.dtype)
    (o * w_o).sum().backward(inputs=leaves + ([S0] if S0 is not None else []), retain_graph=True)
    (final.S * w_S).sum().backward(inputs=leaves + ([S0] if S0 is not None else []))
    grads = [x.grad for x in leaves] + ([S0.grad] if S0 is not None else [])
    return o.detach(), final, grads


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 2),
    T=st.integers(1, 40),
    H=st.integers(1, 3),
    K=st.sampled_from([2, 4, 6]),
    V=st.integers(1, 5),
    C=st.integers(1, 17),
    with_state=st.booleans(),
    position=st.integers(0, 1000),
    schedule=st.sampled_from(["torchscale", "paper", "single", "none"]),
)
def test_three_forms_agree_float64(B, T, H, K, V, C, with_state, position, schedule):
    torch.manual_seed(T * 1000 + C)
    q, k, v, lg, state = make_inputs(B, T, H, K, V, with_state=with_state, position=position, schedule=schedule)
    offset = None if with_state else position
    ref_o, ref_state, ref_grads = _grads("parallel", q, k, v, lg, state, C, offset)
    for form in ("recurrent", "chunkwise"):
        o, final, grads = _grads(form, q, k, v, lg, state, C, offset)
        assert_close(o, ref_o, 1e-10, f"{form} output")
        assert_close(final.S, ref_state.S, 1e-10, f"{form} final S")
        assert_close(final.z, ref_state.z, 1e-10, f"{form} final z")
        assert torch.equal(final.position, ref_state.position)
        for name, g, rg in zip(("dq", "dk", "dv", "dS0"), grads, ref_grads):
            assert_close(g, rg, 1e-10, f"{form} {name}")


@pytest.mark.parametrize("T", [1, 7, 64, 65, 100])
@pytest.mark.parametrize("chunk_size", [16, 32, 64])
def test_chunk_sizes_and_lengths(T, chunk_size):
    q, k, v, lg, state = make_inputs(2, T, 2, 8, 6, with_state=True, position=3)
    ref, ref_state = run_form("parallel", q, k, v, lg, state)
    o, final = run_form("chunkwise", q, k, v, lg, state, chunk_size=chunk_size)
    assert_close(o, ref, 1e-10, "chunkwise output")
    assert_close(final.S, ref_state.S, 1e-10, "chunkwise state")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("split", [1, 13, 29])
def test_continuation_equals_one_call(form, split):
    q, k, v, lg, _ = make_inputs(2, 30, 3, 4, 5)
    whole, whole_state = run_form("parallel", q, k, v, lg, None)
    o1, s1 = run_form(form, q[:, :split], k[:, :split], v[:, :split], lg, None, chunk_size=8)
    o2, s2 = run_form(form, q[:, split:], k[:, split:], v[:, split:], lg, s1, chunk_size=8)
    assert_close(torch.cat([o1, o2], 1), whole, 1e-10, "continued output")
    assert_close(s2.S, whole_state.S, 1e-10, "continued state")
    assert s2.position.tolist() == [30, 30]


@pytest.mark.parametrize("form", FORMS)
def test_no_state_equals_an_explicit_zero_state(form):
    """A call without a state starts from a broadcast zero (nothing allocated per element) and gives exactly
    what an explicit, allocated zero state gives."""
    q, k, v, lg, _ = make_inputs(2, 9, 2, 4, 3)
    empty = RetentionState.zeros(2, 2, 4, 3, dtype=F64, position=5, broadcast=True)
    assert empty.S.untyped_storage().nbytes() == 8 and not empty.S.any() and empty.S.shape == (2, 2, 4, 3)
    o_a, st_a = retention(q, k, v, lg, form=form, offset=5, output_final_state=True)
    o_b, st_b = retention(q, k, v, lg, form=form, output_final_state=True,
                          initial_state=RetentionState.zeros(2, 2, 4, 3, dtype=F64, position=5))  # fmt: skip
    assert torch.equal(o_a, o_b)
    for a, b in zip(st_a, st_b):
        assert torch.equal(a, b)


@pytest.mark.parametrize("form", FORMS)
def test_left_padding_contributes_nothing(form):
    q, k, v, lg, _ = make_inputs(1, 9, 2, 4, 3)
    pad = 4
    qp, kp, vp = (torch.cat([torch.randn(1, pad, *x.shape[2:], dtype=F64), x], 1) for x in (q, k, v))
    alone, alone_state = run_form(form, q, k, v, lg, None, chunk_size=4)
    padded, padded_state = run_form(form, qp, kp, vp, lg, None, chunk_size=4, offset=torch.tensor([-pad]))
    assert torch.all(padded[:, :pad] == 0)
    assert_close(padded[:, pad:], alone, 1e-12, "padded row")
    assert_close(padded_state.S, alone_state.S, 1e-12, "padded state")
    assert padded_state.position.tolist() == [9]


@pytest.mark.parametrize("form", FORMS)
def test_documents_reset_state(form):
    q, k, v, lg, _ = make_inputs(1, 20, 2, 4, 3)
    bounds = [0, 6, 7, 20]
    o, final = retention(q, k, v, lg, form=form, cu_seqlens=torch.tensor(bounds), output_final_state=True, chunk_size=4)
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        alone, alone_state = run_form("parallel", q[:, a:b], k[:, a:b], v[:, a:b], lg, None)
        assert_close(o[:, a:b], alone, 1e-12, f"document {i}")
        assert_close(final.S[i : i + 1], alone_state.S, 1e-12, f"document {i} state")
        assert final.position[i].item() == b - a


@pytest.mark.parametrize("form", FORMS)
def test_many_packed_documents_match_separate_calls_with_gradients(form):
    bounds = [0, 1, 2, 9, 12, 40, 41, 57, 64, 100]  # lengths 1..36 across several length buckets
    q, k, v, lg, _ = make_inputs(1, bounds[-1], 2, 4, 3)
    cu = torch.tensor(bounds)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    o, final = retention(*leaves, lg, form=form, cu_seqlens=cu, output_final_state=True, chunk_size=8)
    w = torch.randn_like(o)
    (o * w).sum().backward()
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        alone = [x[:, a:b].clone().requires_grad_() for x in (q, k, v)]
        o_i, s_i = retention(*alone, lg, form="parallel", output_final_state=True)
        (o_i * w[:, a:b]).sum().backward()
        assert_close(o[:, a:b], o_i, 1e-12, f"document {i}")
        assert_close(final.S[i : i + 1], s_i.S, 1e-12, f"document {i} state")
        assert final.position[i].item() == b - a
        for name, g, g_i in zip("qkv", leaves, alone):
            assert_close(g.grad[:, a:b], g_i.grad, 1e-12, f"document {i} d{name}")


def test_packed_documents_continue_from_states():
    q, k, v, lg, _ = make_inputs(1, 30, 2, 4, 3)
    _, states = retention(q[:, :6], k[:, :6], v[:, :6], lg, output_final_state=True,
                              cu_seqlens=torch.tensor([0, 2, 6]))  # fmt: skip
    cont, final = retention(q[:, 6:], k[:, 6:], v[:, 6:], lg, initial_state=states, output_final_state=True,
                            cu_seqlens=torch.tensor([0, 10, 24]))  # fmt: skip
    whole0, _ = retention(torch.cat([q[:, :2], q[:, 6:16]], 1), torch.cat([k[:, :2], k[:, 6:16]], 1),
                          torch.cat([v[:, :2], v[:, 6:16]], 1), lg, form="parallel")  # fmt: skip
    assert_close(cont[:, :10], whole0[:, 2:], 1e-12, "document 0 continued")
    assert final.position.tolist() == [12, 18]


def test_normalisation_factors_are_exact():
    q, k, v, lg, _ = make_inputs(1, 12, 2, 4, 3)
    raw, _ = run_form("parallel", q, k, v, lg, None, normalize=False)
    ones, _ = run_form("parallel", q, k, torch.ones_like(v[..., :1]), lg, None, normalize=False)
    c = decay_row_norm(lg, torch.arange(12)[None]).transpose(1, 2)  # (1, T, H)
    expected = raw / torch.maximum(ones[..., 0].abs(), c.sqrt())[..., None]
    for form in FORMS:
        o, _ = run_form(form, q, k, v, lg, None, chunk_size=5)
        assert_close(o, expected, 1e-12, f"{form} normalised")


def test_decay_row_norm_gamma_near_one():
    lg = log_decay_schedule(16, dtype=F64)  # γ up to 1 − 2^−20
    n = torch.tensor([[0, 1, 10**6]])
    c = decay_row_norm(lg, n)
    gamma = lg.exp()
    assert_close(c[0, :, 0], torch.ones(16, dtype=F64), 1e-15, "c_0")
    assert_close(c[0, :, 1], 1 + gamma, 1e-15, "c_1")
    assert torch.all(c[0, :, 2] <= 1 / (1 - gamma) + 1e-6)


def test_log_decay_float64_is_not_a_widened_float32():
    lg64 = log_decay_schedule(8, "paper", dtype=F64)
    lg32 = log_decay_schedule(8, "paper", dtype=torch.float32)
    exact = torch.log1p(
        -torch.exp(
            torch.linspace(
                torch.log(torch.tensor(1 / 32.0, dtype=F64)).item(),
                torch.log(torch.tensor(1 / 512.0, dtype=F64)).item(),
                8,
                dtype=F64,
            )
        )
    )
    assert_close(lg64, exact, 1e-15, "float64 log-decay")
    assert (lg32.double() - exact).abs().max() > 0  # the float32 schedule differs, so float64 runs need their own


@pytest.mark.parametrize("form, T", [("recurrent", 5_000), ("chunkwise", 200_000)])
def test_long_float32_runs_match_float64(form, T):
    """γ = 1, the hardest case (the state only grows): float32 outputs and final state stay within float32
    tolerance of float64 over 200k tokens (chunkwise) or 5k (recurrent, a Python loop per token)."""
    q = torch.randn(1, T, 2, 4)
    k = torch.randn(1, T, 2, 4) * 0.5
    v = torch.randn(1, T, 2, 4)
    lg = log_decay_schedule(2, "none")
    o, final = retention(q, k, v, lg, form=form, output_final_state=True, chunk_size=64)
    o64, final64 = retention(
        q.double(), k.double(), v.double(), lg.double(), form="chunkwise", output_final_state=True, chunk_size=250
    )
    assert o.dtype == torch.float32 and final.S.dtype == torch.float32
    assert_close(o[0], o64[0], 1e-4, f"{form} output over {T} tokens")  # rows are positions
    assert_close(final.S, final64.S, 1e-4, f"{form} final state")
    assert_close(final.z, final64.z, 1e-4, f"{form} final normaliser")


def test_bf16_inputs_keep_float32_state():
    q, k, v, lg, _ = make_inputs(1, 40, 2, 8, 8, dtype=torch.bfloat16)
    o, final = retention(q, k, v, lg, form="chunkwise", output_final_state=True, chunk_size=16)
    ref, _ = retention(q.double(), k.double(), v.double(), lg.double(), form="parallel")
    assert o.dtype == torch.bfloat16 and final.S.dtype == torch.float32
    assert_close(o, ref, 2e-2, "bf16 chunkwise")


class TestBadInput:
    def setup_method(self):
        self.q, self.k, self.v, self.lg, _ = make_inputs(1, 5, 2, 4, 3)

    def call(self, **kw):
        args = dict(q=self.q, k=self.k, v=self.v, log_decay=self.lg)
        args.update(kw)
        return retention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("log_decay"), **args)

    @pytest.mark.parametrize(
        "kw, match",
        [
            (dict(q=torch.randn(5, 2, 4, dtype=F64)), "4 dims"),
            (dict(k=torch.randn(1, 5, 2, 6, dtype=F64)), "same shape"),
            (dict(v=torch.randn(1, 4, 2, 3, dtype=F64)), "v must be"),
            (dict(log_decay=torch.zeros(3, dtype=F64)), r"shape \(H,\)"),
            (dict(log_decay=torch.full((2,), 0.1, dtype=F64)), "<= 0"),
            (dict(form="fast"), "unknown form"),
            (dict(backend="cuda"), "unknown backend"),
            (dict(chunk_size=0), "chunk_size"),
            (dict(q=torch.randn(1, 0, 2, 4, dtype=F64), k=torch.randn(1, 0, 2, 4, dtype=F64),
                  v=torch.randn(1, 0, 2, 3, dtype=F64)), "at least one token"),
            (dict(initial_state=RetentionState(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4), torch.zeros(1).long())),
             "initial_state.S"),
            (dict(initial_state=RetentionState.zeros(1, 2, 4, 3, position=7), offset=3), "disagrees"),
            (dict(cu_seqlens=torch.tensor([0, 3, 2, 5])), "cu_seqlens"),
        ],
    )  # fmt: skip
    def test_value_errors(self, kw, match):
        with pytest.raises(ValueError, match=match):
            self.call(**kw)

    def test_decay_values_are_checked_again_after_an_in_place_change(self):
        lg = self.lg.clone()
        self.call(log_decay=lg)  # passes and is remembered
        lg[0] = float("nan")
        with pytest.raises(ValueError, match="finite"):
            self.call(log_decay=lg)
        lg[0] = 0.5
        with pytest.raises(ValueError, match="<= 0"):
            self.call(log_decay=lg)

    def test_dtype_errors(self):
        with pytest.raises(TypeError, match="share a dtype"):
            self.call(v=self.v.float())
        with pytest.raises(TypeError, match="floating"):
            self.call(q=self.q.long())
        with pytest.raises(TypeError, match="float32 or float64"):
            self.call(log_decay=self.lg.bfloat16())

    @pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
    def test_triton_backend_without_gpu_raises(self, monkeypatch):
        monkeypatch.setenv("TRITON_INTERPRET", "0")  # the interpreter (kernel tests) would make the CPU eligible
        with pytest.raises(RuntimeError, match="triton"):
            self.call(backend="triton")
