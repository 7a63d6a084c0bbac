"""Every loop of the Triton retention kernels on CPU (Triton's interpreter), against the float64 PyTorch reference.

The interpreter's block rule (``tuning.block_size``) takes blocks of at most 128 over a head dim, so K = 256 and
V = 160 give two K blocks and two V blocks (the second one partial): the loops over K blocks (output and dV
kernels) and over V blocks (dQ/dK kernel) and the state scans' grid over (K block, V block) all run more than once,
which the suite's other interpreter cases (K, V <= 128: one block) never do. T = 80 gives two chunks of the
kernels (the second of 16 tokens); ``segment_chunks=1`` cuts the state scans into two segments, so the segment
pre-passes and the sums over earlier (forward) and later (backward) segments run too. Each case checks the output,
the final state and the gradients of q, k, v and the initial state, row by row (one row per token and head).
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

from retnet.ops.retention import RetentionState, log_decay_schedule, retention  # noqa: E402
from retnet.ops.retention.triton import chunk_len, chunk_plan, plan_segments, retention_tuning  # noqa: E402
from tests.utils import assert_close  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
K, V = 256, 160
T = 80
RTOL = 1e-4  # float32 kernels against float64 (docs/architecture.md, "Tests")
GRAD_RTOL = 2e-4

pytestmark = [
    pytest.mark.filterwarnings("ignore:tl.make_block_ptr is deprecated"),
    pytest.mark.usefixtures("exact_fp32_dots"),
]


def _inputs(B, T, H, with_state, position, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g)
    k = torch.randn(B, T, H, K, generator=g) * K**-0.5
    v = torch.randn(B, T, H, V, generator=g)
    state = None
    if with_state:
        pos = torch.as_tensor(position, dtype=torch.long).expand(B).clone()
        state = RetentionState(0.3 * torch.randn(B, H, K, V, generator=g), torch.randn(B, H, K, generator=g), pos)
    w_o = torch.randn(B, T, H, V, generator=g)  # cotangents of o and of the final S
    w_S = torch.randn(B, H, K, V, generator=g)
    return (q, k, v), state, w_o, w_S


def _forward_backward(qkv, state, w_o, w_S, backend, *, dtype, **kwargs):
    """Outputs ``(o, S, z)`` and gradients ``(dq, dk, dv[, dS0])`` of one call, in float64 on the CPU."""
    sdt = torch.float64 if dtype == torch.float64 else torch.float32
    lg = log_decay_schedule(qkv[0].shape[2], dtype=sdt, device=DEVICE)
    xs = [x.to(DEVICE, dtype).requires_grad_() for x in qkv]
    leaves = list(xs)
    if state is not None:
        S0 = state.S.to(DEVICE, sdt).requires_grad_()
        leaves.append(S0)
        kwargs["initial_state"] = RetentionState(S0, state.z.to(DEVICE, sdt), state.position.to(DEVICE))
    o, final = retention(*xs, lg, output_final_state=True, backend=backend, **kwargs)
    loss = (o.double() * w_o.to(DEVICE)).sum() + (final.S.double() * w_S.to(DEVICE)).sum()
    grads = torch.autograd.grad(loss, leaves)
    return [t.detach().double().cpu() for t in (o, final.S, final.z)], [g.double().cpu() for g in grads], final


def _compare(qkv, state, w_o, w_S, **kwargs):
    """The kernels (float32) against the reference (float64), each tensor compared row by row."""
    out, grads, final = _forward_backward(qkv, state, w_o, w_S, "triton", dtype=torch.float32, **kwargs)
    ref_out, ref_grads, ref_final = _forward_backward(qkv, state, w_o, w_S, "torch", dtype=torch.float64, **kwargs)
    assert torch.equal(final.position.cpu(), ref_final.position)
    for name, a, b in zip(("o", "S", "z"), out, ref_out):
        assert_close(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), RTOL, name)
    for name, a, b in zip(("dq", "dk", "dv", "dS0"), grads, ref_grads):
        assert_close(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), GRAD_RTOL, name)


def test_the_cases_below_run_every_loop():
    """Several K and V blocks in every kernel, several chunks, and two scan segments at ``segment_chunks=1``:
    should the interpreter's block rule change, these cases must be resized rather than silently shrink to one
    block."""
    plan = chunk_plan(K, V, torch.float32)
    for launch in plan.launches:
        assert triton.cdiv(K, launch.BK) >= 2 and triton.cdiv(V, launch.BV) >= 2, launch
        assert V % launch.BV, "the last V block should be partial"
    NT = triton.cdiv(T, chunk_len(T))
    assert NT == 2 and T % chunk_len(T)
    assert plan_segments(NT, 1, torch.device("cpu"), segment_chunks=1) == (1, 2)


def test_blocks_segments_state_and_far_offsets():
    """Normalised, from an initial state, one row left-padded (37 tokens) and one past 2^31 positions; the scans
    in two segments (the backward recomputes the states through them)."""
    qkv, state, w_o, w_S = _inputs(2, T, 1, True, [-37, 3_000_000_000])
    with retention_tuning(segment_chunks=1, keep_states="never"):
        _compare(qkv, state, w_o, w_S)


def test_blocks_raw_output_with_kept_states():
    """Unnormalised, from no state at offsets 0 and 5,000, the scans whole, the backward on the states the forward
    kept."""
    qkv, _, w_o, w_S = _inputs(2, T, 1, False, 0, seed=1)
    with retention_tuning(keep_states="always"):
        _compare(qkv, None, w_o, w_S, normalize=False, offset=torch.tensor([0, 5000]))


def test_blocks_packed_documents():
    """Three packed documents (70, 3 and 7 tokens: three length buckets of left-padded rows), each from an empty
    state at position 0; scans in segments of one chunk."""
    qkv, _, w_o, w_S = _inputs(1, T, 1, False, 0, seed=2)
    w_S = torch.randn(3, 1, K, V, generator=torch.Generator().manual_seed(3))  # one final state per document
    with retention_tuning(segment_chunks=1):
        _compare(qkv, None, w_o, w_S, cu_seqlens=torch.tensor([0, 70, 73, T]))
