"""``torch.compile`` of the chunkwise retention forward and backward on the CPU, against eager (docs/spec.md §8:
kernels that return wrong values under ``torch.compile``).

Two paths: the pure-PyTorch chunkwise form (the CPU training path), traced whole by dynamo and AOTAutograd
(``aot_eager``: inductor's C++ build of its graphs takes longer than this suite can spend), and the Triton custom
ops under the interpreter, compiled by inductor. Both compile with ``fullgraph=True``, so a graph break fails too.
The custom ops' fake implementations, which the compiler traces instead of the kernels, are checked against what
the kernels return.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from retnet.ops.retention import RetentionState, log_decay_schedule, retention  # noqa: E402
from tests.utils import assert_close  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _inputs(B, T, H, K, V, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g, dtype=dtype)
    k = torch.randn(B, T, H, K, generator=g, dtype=dtype) * K**-0.5
    v = torch.randn(B, T, H, V, generator=g, dtype=dtype)
    S0 = 0.5 * torch.randn(B, H, K, V, generator=g, dtype=dtype)
    z0 = torch.randn(B, H, K, generator=g, dtype=dtype)
    w_o = torch.randn(B, T, H, V, generator=g, dtype=dtype)  # cotangents of o and of the final S
    w_S = torch.randn(B, H, K, V, generator=g, dtype=dtype)
    return [x.to(DEVICE) for x in (q, k, v, S0, z0, w_o, w_S)]


def _forward_backward(fn, differentiable, rest, w_o, w_S):
    """``fn(*differentiable, *rest) -> (o, S, z)``; the outputs and the gradients of ``differentiable``."""
    leaves = [x.clone().requires_grad_() for x in differentiable]
    o, S, z = fn(*leaves, *rest)
    grads = torch.autograd.grad((o.double() * w_o).sum() + (S.double() * w_S).sum(), leaves)
    return [o.detach(), S.detach(), z.detach(), *grads]


def test_pytorch_chunkwise_compiled_matches_eager():
    """float64, T = 13 in chunks of 8 (a short last chunk), from a state, one row left-padded and one at position
    50: outputs, final state and the gradients of q, k, v and the initial state."""
    q, k, v, S0, z0, w_o, w_S = _inputs(2, 13, 2, 4, 3, torch.float64)
    lg = log_decay_schedule(2, "paper", dtype=torch.float64, device=DEVICE)
    position = torch.tensor([-3, 50], device=DEVICE)

    def run(q, k, v, S0, z0):
        state = RetentionState(S0, z0, position)
        o, final = retention(
            q, k, v, lg, form="chunkwise", chunk_size=8, initial_state=state, output_final_state=True, backend="torch"
        )
        return o, final.S, final.z

    compiled_run = torch.compile(run, backend="aot_eager", fullgraph=True)
    eager = _forward_backward(run, (q, k, v, S0), (z0,), w_o, w_S)
    compiled = _forward_backward(compiled_run, (q, k, v, S0), (z0,), w_o, w_S)
    for name, a, b in zip(("o", "S", "z", "dq", "dk", "dv", "dS0"), compiled, eager):
        assert_close(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), 1e-12, f"compiled {name}")


@pytest.mark.filterwarnings("ignore:tl.make_block_ptr is deprecated")
@pytest.mark.usefixtures("exact_fp32_dots")
def test_triton_custom_ops_compiled_match_eager():
    """The Triton forward and backward ops (interpreter on CPU) inside an inductor graph, from no state (the
    kernels' empty-state path) with one row left-padded: the same bits as eager, gradients included."""
    pytest.importorskip("triton")
    q, k, v, _, _, w_o, w_S = _inputs(2, 40, 2, 16, 24, torch.float32, seed=1)
    lg = log_decay_schedule(2, device=DEVICE)
    offset = torch.tensor([-3, 50], device=DEVICE)

    def run(q, k, v):
        o, final = retention(q, k, v, lg, offset=offset, output_final_state=True, backend="triton")
        return o, final.S, final.z

    eager = _forward_backward(run, (q, k, v), (), w_o, w_S)
    compiled = _forward_backward(torch.compile(run, fullgraph=True), (q, k, v), (), w_o, w_S)
    for name, a, b in zip(("o", "S", "z", "dq", "dk", "dv"), compiled, eager):
        assert torch.equal(a, b), f"compiled {name} differs from eager"


@pytest.mark.filterwarnings("ignore:tl.make_block_ptr is deprecated")
def test_fake_implementations_describe_what_the_kernels_return():
    """``torch.compile`` traces the custom ops through their fake implementations: every output's shape, dtype and
    layout there must be what the kernels return (``torch.library.opcheck``), for the forward with and without a
    state, kept states and the final state, the backward, and the in-place decode step."""
    pytest.importorskip("triton")
    from retnet.ops.retention.triton import KernelTuning

    B, T, H, K, V = 2, 20, 2, 16, 8
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(B, T, H, d, generator=g).to(DEVICE) for d in (K, K, V))
    S0 = torch.randn(B, H, K, V, generator=g).to(DEVICE)
    z0 = torch.randn(B, H, K, generator=g).to(DEVICE)
    position = torch.tensor([-3, 50], device=DEVICE)
    lg = log_decay_schedule(H, device=DEVICE)
    tuning = KernelTuning().to_ints()
    ops = torch.ops.retnet
    fwd = (q, k, v, lg, S0, z0, position, True, True, tuning, True)
    for args in (fwd, (q, k, v, lg, None, None, position, False, False, tuning, False)):
        torch.library.opcheck(ops.chunk_retention_fwd.default, args, test_utils=("test_faketensor",))
    _, rden, _, _, h = ops.chunk_retention_fwd(*fwd)
    bwd = (q, k, v, lg, S0, position, rden, torch.randn_like(v), torch.randn_like(S0), h, tuning, True)
    torch.library.opcheck(ops.chunk_retention_bwd.default, bwd, test_utils=("test_faketensor",))
    step = (q[:, :1], k[:, :1], v[:, :1], lg, S0.clone(), z0.clone(), position.clone(), True, tuning)
    torch.library.opcheck(ops.retention_step_.default, step, test_utils=("test_faketensor",))
