"""An independent oracle for retention: the definition of docs/spec.md §1 and §3 in float64, O(T²), written here
from the document rather than from the implementation, against every form and backend.

The forms agree with one another by construction of the test suite (``test_retention_reference.py``); this file
checks that what they agree on is the documented function: the γ of each decay schedule written out from its
formula, the decay matrix D[n, m] = γ^(n−m), the initial state's decay γ^(t+1), the normaliser
o_n / max(|s_n|, √c_n) with c_n = Σ_(i=0..n) γ^i (n + 1 for γ = 1) and its denominator carrying no gradient, left
padding contributing nothing, for every schedule, with and without normalisation, with and without a state, in
the three forms on PyTorch (float64) and on the Triton kernels under the interpreter (float32).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from retnet.ops.retention import RetentionState, log_decay_schedule, retention  # noqa: E402
from tests.utils import assert_close  # noqa: E402

F64 = torch.float64
FORMS = ("parallel", "recurrent", "chunkwise")
SCHEDULES = ("torchscale", "paper", "single", "none")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def schedule_gammas(schedule: str, num_heads: int) -> list[float]:
    """γ_h of docs/spec.md §1, from the formulas (Python floats, double precision)."""
    H = num_heads
    if schedule == "torchscale":
        return [1.0 - 2.0 ** (-5 - h) for h in range(H)]
    if schedule == "paper":  # 1 − exp(linspace(ln 1/32, ln 1/512, H)); one head takes the first value
        lo, hi = math.log(1 / 32), math.log(1 / 512)
        return [1.0 - math.exp(lo + (hi - lo) * h / max(H - 1, 1)) for h in range(H)]
    if schedule == "single":
        return [127.0 / 128.0] * H
    if schedule == "none":
        return [1.0] * H
    raise ValueError(f"no oracle for schedule {schedule!r}")


def retention_oracle(q, k, v, gammas, start, S0=None, z0=None, normalize=True):
    """Retention by its definition, in float64.

    Args:
        q, k: ``(B, T, H, K)`` (k already scaled); v: ``(B, T, H, V)``.
        gammas: H decays.
        start: ``(B,)`` absolute position of each row's first token (negative: left padding).
        S0, z0: ``(B, H, K, V)`` and ``(B, H, K)`` state before the first token, or None (zero).
        normalize: divide o_n by max(|s_n|, √c_n) (docs/spec.md §3, factors 2 and 3; no gradient through it).

    Returns:
        ``(o, S, z)``: o ``(B, T, H, V)``; the state after the last token.
    """
    q, k, v = q.to(F64), k.to(F64), v.to(F64)
    B, T, H, K = q.shape
    V = v.shape[-1]
    S0 = torch.zeros(B, H, K, V, dtype=F64) if S0 is None else S0.to(F64)
    z0 = torch.zeros(B, H, K, dtype=F64) if z0 is None else z0.to(F64)
    g = torch.tensor(gammas, dtype=F64)  # (H,)
    n_BT = start.to(F64)[:, None] + torch.arange(T, dtype=F64)  # absolute positions
    real = (n_BT >= 0).to(F64)  # (B, T): padded tokens contribute nothing
    k = k * real[:, :, None, None]
    v = v * real[:, :, None, None]
    t = torch.arange(T, dtype=F64)
    gap = t[:, None] - t[None, :]  # (T, T): n − m
    D_HTT = torch.where(gap >= 0, g[:, None, None] ** gap.clamp(min=0), torch.zeros((), dtype=F64))
    scores_BHTT = torch.einsum("bnhk,bmhk->bhnm", q, k) * D_HTT
    decay_in_HT = g[:, None] ** (t + 1)  # the state before the segment, decayed to token t
    o = torch.einsum("bhnm,bmhv->bnhv", scores_BHTT, v)
    o = o + torch.einsum("bnhk,bhkv->bnhv", q, S0) * decay_in_HT.T[None, :, :, None]
    s = scores_BHTT.sum(-1).transpose(1, 2) + torch.einsum("bnhk,bhk->bnh", q, z0) * decay_in_HT.T[None]  # (B, T, H)
    if normalize:
        n = n_BT.clamp(min=0)[:, :, None]  # (B, T, 1)
        c = torch.where(g == 1, n + 1, (1 - g ** (n + 1)) / (1 - torch.where(g == 1, 0.5, g)))  # Σ_{i<=n} γ^i
        o = o / torch.maximum(s.abs(), c.sqrt()).detach()[..., None]
    o = o * real[:, :, None, None]
    decay_out_HT = g[:, None] ** (T - 1 - t)  # token t's contribution to the final state
    S = g[None, :, None, None] ** T * S0 + torch.einsum("bthk,bthv,ht->bhkv", k, v, decay_out_HT)
    z = g[None, :, None] ** T * z0 + torch.einsum("bthk,ht->bhk", k, decay_out_HT)
    return o, S, z


def test_schedules_are_the_documented_ones():
    """The decay module's log γ equals log of the documented γ for every schedule (float64 to rounding)."""
    for schedule in SCHEDULES:
        for H in (1, 3, 8):
            expected = torch.tensor(schedule_gammas(schedule, H), dtype=F64).log()
            assert_close(log_decay_schedule(H, schedule, dtype=F64), expected, 1e-13, f"{schedule} H={H}")


def _inputs(B, T, H, K, V, with_state, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g, dtype=F64)
    k = torch.randn(B, T, H, K, generator=g, dtype=F64) * K**-0.5
    v = torch.randn(B, T, H, V, generator=g, dtype=F64)
    # One row starts inside its left padding (3 pads), one far from position 0.
    start = torch.tensor([-3, 1000])
    S0 = z0 = None
    if with_state:
        S0 = 0.5 * torch.randn(B, H, K, V, generator=g, dtype=F64)
        z0 = torch.randn(B, H, K, generator=g, dtype=F64)
    return (q, k, v), start, S0, z0


def _op(qkv, start, S0, z0, lg, form, normalize, backend, dtype, chunk_size=None, grads=True):
    """retention(...) in ``dtype``, with gradients wanted for q, k, v (and S0) when ``grads``; (o, state, leaves)."""
    sdt = F64 if dtype == F64 else torch.float32
    xs = [x.to(DEVICE, dtype).requires_grad_(grads) for x in qkv]
    leaves = list(xs)
    kwargs = {"offset": start.to(DEVICE)}
    if S0 is not None:
        S = S0.to(DEVICE, sdt).requires_grad_(grads)
        leaves.append(S)
        kwargs = {"initial_state": RetentionState(S, z0.to(DEVICE, sdt), start.to(DEVICE))}
    o, final = retention(
        *xs, lg.to(DEVICE), form=form, output_final_state=True, chunk_size=chunk_size, normalize=normalize,
        backend=backend, **kwargs,
    )  # fmt: skip
    return o, final, leaves


def _oracle_with_grads(qkv, start, S0, z0, gammas, normalize, w_o, w_S):
    xs = [x.clone().requires_grad_() for x in qkv]
    leaves = list(xs) + ([S0.clone().requires_grad_()] if S0 is not None else [])
    o, S, z = retention_oracle(*xs, gammas, start, leaves[3] if S0 is not None else None, z0, normalize)
    grads = torch.autograd.grad((o * w_o).sum() + (S * w_S).sum(), leaves)
    return o.detach(), S.detach(), z.detach(), grads


def _check(qkv, start, S0, z0, schedule, normalize, form, backend, dtype, rtol, chunk_size=None, grads=True):
    H = qkv[0].shape[2]
    gammas = schedule_gammas(schedule, H)
    lg = log_decay_schedule(H, schedule, dtype=F64 if dtype == F64 else torch.float32)
    gen = torch.Generator().manual_seed(99)
    w_o = torch.randn(qkv[2].shape, generator=gen, dtype=F64)  # cotangents of o and of the final S
    w_S = torch.randn(qkv[0].shape[0], H, qkv[0].shape[-1], qkv[2].shape[-1], generator=gen, dtype=F64)
    o_x, S_x, z_x, g_x = _oracle_with_grads(qkv, start, S0, z0, gammas, normalize, w_o, w_S)
    o, final, leaves = _op(qkv, start, S0, z0, lg, form, normalize, backend, dtype, chunk_size, grads)
    rows = lambda x: x.detach().double().cpu().reshape(-1, x.shape[-1])  # noqa: E731  one row per token and head
    assert_close(rows(o), rows(o_x), rtol, f"{form}/{backend} o")
    assert_close(rows(final.S), rows(S_x), rtol, f"{form}/{backend} S")
    assert_close(rows(final.z), rows(z_x), rtol, f"{form}/{backend} z")
    assert final.position.cpu().tolist() == (start + qkv[0].shape[1]).tolist()
    if grads:
        loss = (o.double() * w_o.to(DEVICE)).sum() + (final.S.double() * w_S.to(DEVICE)).sum()
        for name, a, b in zip(("dq", "dk", "dv", "dS0"), torch.autograd.grad(loss, leaves), g_x):
            assert_close(rows(a), rows(b), 2 * rtol, f"{form}/{backend} {name}")


@pytest.mark.parametrize("with_state", [False, True], ids=["offset", "state"])
@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "raw"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("form", FORMS)
def test_torch_forms_match_the_oracle(form, schedule, normalize, with_state):
    """float64, T = 23 in chunks of 8 (the last one short), outputs, final state and gradients to 1e-10."""
    qkv, start, S0, z0 = _inputs(2, 23, 3, 6, 5, with_state, seed=SCHEDULES.index(schedule))
    _check(qkv, start, S0, z0, schedule, normalize, form, "torch", F64, 1e-10, chunk_size=8)


# (schedule, normalize, with_state): every schedule once (the kernels take γ from log γ alone, so the γ = 1 case
# is the one that differs), normalised from a state, normalised from an offset (the kernels' empty-state path) and
# raw.
TRITON_CASES = [("torchscale", True, True), ("none", True, True), ("paper", True, False), ("single", False, True)]


@pytest.mark.usefixtures("exact_fp32_dots")
@pytest.mark.parametrize(
    "schedule,normalize,with_state",
    TRITON_CASES,
    ids=[f"{s}-{'normalized' if n else 'raw'}-{'state' if st else 'offset'}" for s, n, st in TRITON_CASES],
)
def test_triton_matches_the_oracle(schedule, normalize, with_state):
    """The kernels in float32 (interpreter on CPU): the chunkwise kernels forward and backward over T = 40, the
    parallel form (the same kernels) forward, and the decode-step kernel (the recurrent form without gradients)
    over 5 tokens."""
    pytest.importorskip("triton")
    qkv, start, S0, z0 = _inputs(2, 40, 2, 16, 8, with_state, seed=10 + SCHEDULES.index(schedule))
    _check(qkv, start, S0, z0, schedule, normalize, "chunkwise", "triton", torch.float32, 1e-4)
    _check(qkv, start, S0, z0, schedule, normalize, "parallel", "triton", torch.float32, 1e-4, grads=False)
    short = [x[:, :5] for x in qkv]
    _check(short, start, S0, z0, schedule, normalize, "recurrent", "triton", torch.float32, 1e-4, grads=False)


@pytest.mark.parametrize("form", FORMS)
def test_selected_rows_of_a_state_continue_as_the_oracle(form):
    """Rows picked from a state (beam search, dropping finished rows: ``RetentionState.index_select``) continue as
    those rows of one call over the whole sequence: S, z and each row's own position travel together."""
    qkv, _, _, _ = _inputs(3, 12, 2, 4, 3, False, seed=20)
    start = torch.tensor([0, 5, 900])
    lg = log_decay_schedule(2, "paper", dtype=F64)
    _, state = retention(*(x[:, :7] for x in qkv), lg, form=form, offset=start, output_final_state=True)
    rows = torch.tensor([2, 0])
    o, final = retention(*(x[rows, 7:] for x in qkv), lg, form=form, initial_state=state.index_select(rows),
                         output_final_state=True, chunk_size=2)  # fmt: skip
    o_x, S_x, _ = retention_oracle(*(x[rows] for x in qkv), schedule_gammas("paper", 2), start[rows])
    assert_close(o.reshape(-1, 3), o_x[:, 7:].reshape(-1, 3), 1e-10, f"{form} continued rows")
    assert_close(final.S.reshape(-1, 3), S_x.reshape(-1, 3), 1e-10, f"{form} final S")
    assert final.position.tolist() == (start[rows] + 12).tolist()
