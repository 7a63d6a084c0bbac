"""The context-parallel slice summary on the Triton kernels (``triton/summary.py``) against its ``einsum``
reference, forward and backward; and the work the split path skips (docs/parallel.md).

On a machine without CUDA the kernels run through Triton's CPU interpreter (float32 and fp16: the interpreter has
no bf16 dot). 16-bit results are judged by the usual rule: the error against float64 within twice the float32
reference's own error on the same 16-bit inputs plus a small slack, and an RMS-relative backstop.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

import torch.distributed as dist  # noqa: E402

from retnet.ops.retention import context_parallel, log_decay_schedule, retention  # noqa: E402
from retnet.ops.retention.context_parallel import ContextParallelGroup, _summary_is_folded, slice_summary  # noqa: E402
from retnet.ops.retention.triton import MAX_K, retention_tuning  # noqa: E402
from retnet.ops.retention.triton.tuning import plan_segments  # noqa: E402
from tests.utils import assert_within_reference_error  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

pytestmark = [
    pytest.mark.filterwarnings("ignore:tl.make_block_ptr is deprecated"),
    pytest.mark.usefixtures("exact_fp32_dots"),
]


def _inputs(B, T, H, K, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, H, K, generator=g) * K**-0.5
    v = torch.randn(B, T, H, V, generator=g)
    w = torch.randn(B, H, K, V + 1, generator=g, dtype=torch.float64)  # cotangent of X = [S | z]
    return k, v, w


def _summary_and_grads(k, v, w, dtype, backend, **kwargs):
    """X and the gradients of Σ w ⊙ X with respect to k and v, in float64 on the CPU."""
    H = k.shape[2]
    lg = log_decay_schedule(H, dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=DEVICE)
    kk, vv = (x.to(DEVICE, dtype).clone().requires_grad_() for x in (k, v))
    X = slice_summary(kk, vv, lg, backend=backend, **kwargs)
    (X.double() * w.to(DEVICE)).sum().backward()
    return [t.detach().double().cpu() for t in (X, kk.grad, vv.grad)]


def _compare(B, T, H, K, V, dtype, **kwargs):
    k, v, w = _inputs(B, T, H, K, V)
    k, v = k.to(dtype), v.to(dtype)  # every run sees the same rounded inputs
    got = _summary_and_grads(k, v, w, dtype, "triton", **kwargs)
    ref64 = _summary_and_grads(k, v, w, torch.float64, "torch", **kwargs)
    ref_lp = _summary_and_grads(k, v, w, dtype, "torch", **kwargs)
    for name, a, b, c, scale in zip(("X", "dk", "dv"), got, ref64, ref_lp, (1.0, 4.0, 4.0)):
        assert_within_reference_error(name, a, b, c, dtype, scale)
    return got, ref64


# (B, T, H, K, V, dtype, offset, tail_start, segment_chunks): T not a multiple of the 64-token chunk; left padding
# (one row padded past its first chunk); a document start inside the slice; the scan split into segments.
CASES = [
    (2, 150, 2, 32, 40, torch.float32, [-70, 9], 0, None),
    (2, 150, 2, 32, 40, torch.float32, [-20, 3], 0, 1),
    (1, 130, 2, 60, 24, torch.float32, 0, 37, 2),
    (1, 1, 1, 16, 8, torch.float32, 0, 0, None),
    (2, 100, 2, 32, 48, torch.float16, [-5, 0], 0, None),
    (1, 90, 2, 16, 32, torch.float16, 0, 11, 1),
]
IDS = [
    f"B{B}-T{T}-H{H}-K{K}-V{V}-{str(dt)[6:]}-off{'_'.join(map(str, off)) if isinstance(off, list) else off}"
    f"-tail{tail}-seg{seg}"
    for B, T, H, K, V, dt, off, tail, seg in CASES
]


@pytest.mark.parametrize("B,T,H,K,V,dtype,offset,tail_start,segment_chunks", CASES, ids=IDS)
def test_kernels_match_the_einsum(B, T, H, K, V, dtype, offset, tail_start, segment_chunks):
    offset = torch.tensor(offset, device=DEVICE) if isinstance(offset, list) else offset
    with retention_tuning(segment_chunks=segment_chunks):
        got, ref64 = _compare(B, T, H, K, V, dtype, offset=offset, tail_start=tail_start)
    X, dk, dv = got
    assert not dk[:, :tail_start].any() and not dv[:, :tail_start].any(), "tokens before the tail got a gradient"
    if isinstance(offset, torch.Tensor) and int(offset[0]) < 0:  # row 0's padded tokens: no gradient
        pad = -int(offset[0])
        assert not dk[0, :pad].any() and not dv[0, :pad].any()


GPU_CASES = [
    (B, T, H, K, V, dt, off, tail, seg)
    for dt in (torch.bfloat16, torch.float16, torch.float32)
    for B, T, H, K, V, off, tail, seg in (
        (1, 1000, 2, 256, 512, 0, 0, None),
        (1, 1000, 2, 256, 512, 0, 0, 3),
        (2, 333, 2, 64, 96, [-17, 4], 0, None),
        (1, 300, 2, 256, 432, 0, 77, 2),  # the torchscale 1.3B geometry, a document start inside the slice
    )
]
GPU_IDS = [f"B{B}-T{T}-K{K}-V{V}-{str(dt)[6:]}-tail{tail}-seg{seg}" for B, T, H, K, V, dt, off, tail, seg in GPU_CASES]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("B,T,H,K,V,dtype,offset,tail_start,segment_chunks", GPU_CASES, ids=GPU_IDS)
def test_kernels_match_the_einsum_gpu(B, T, H, K, V, dtype, offset, tail_start, segment_chunks):
    test_kernels_match_the_einsum(B, T, H, K, V, dtype, offset, tail_start, segment_chunks)


def test_fully_padded_rows_and_one_sided_gradients():
    """A row that is all left padding summarises to zeros; a loss on S alone or on z alone gives the einsum's
    gradients (the other output gets none)."""
    k, v, _ = _inputs(2, 40, 2, 16, 24, seed=3)
    lg = log_decay_schedule(2, device=DEVICE)
    offset = torch.tensor([-40, 2], device=DEVICE)
    X = slice_summary(k.to(DEVICE), v.to(DEVICE), lg, offset=offset, backend="triton")
    assert torch.equal(X[0], torch.zeros_like(X[0])) and X[1].abs().sum() > 0
    for part in (slice(None, -1), slice(-1, None)):
        grads = []
        for backend in ("triton", "torch"):
            kk, vv = (x.to(DEVICE).clone().requires_grad_() for x in (k, v))
            slice_summary(kk, vv, lg, offset=offset, backend=backend)[..., part].square().sum().backward()
            grads.append((kk.grad, vv.grad))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_backends_and_bad_arguments():
    k, v, _ = _inputs(1, 20, 2, 8, 4)
    lg = log_decay_schedule(2)
    positions = torch.arange(20)[None]
    exact = context_parallel._slice_summary(k, v, lg, positions, 0)
    assert torch.equal(slice_summary(k, v, lg), exact)  # "auto" takes the kernels only for CUDA tensors
    assert torch.equal(slice_summary(k, v, lg, backend="torch"), exact)
    big = torch.randn(1, 4, 1, 2 * MAX_K, device=DEVICE)  # CPU tensors take Triton only under the interpreter
    with pytest.raises(NotImplementedError, match="K <= 256"):
        slice_summary(big, big[..., :8], log_decay_schedule(1, device=DEVICE), backend="triton")
    with pytest.raises(ValueError, match=r"tail_start must be an int in \[0, T\)"):
        slice_summary(k, v, lg, tail_start=20)
    with pytest.raises(ValueError, match="log_decay must be a tensor of shape"):
        slice_summary(k, v, lg[:1])


def test_fake_implementations_describe_what_the_kernels_return():
    """``torch.compile`` traces the summary ops through their fake implementations (``torch.library.opcheck``)."""
    from retnet.ops.retention.triton import KernelTuning

    k, v, _ = _inputs(2, 20, 2, 16, 8, seed=4)
    k, v = k.to(DEVICE), v.to(DEVICE)
    lg = log_decay_schedule(2, device=DEVICE)
    position = torch.tensor([-3, 50], device=DEVICE)
    tuning = KernelTuning().to_ints()
    ops = torch.ops.retnet
    torch.library.opcheck(
        ops.slice_summary_fwd.default, (k, v, lg, position, tuning),
        test_utils=("test_faketensor", "test_autograd_registration"),
    )  # fmt: skip
    dS, dz = torch.randn(2, 2, 16, 8, device=DEVICE), torch.randn(2, 2, 16, device=DEVICE)
    bwd = (k, v, lg, position, dS, dz, tuning)
    torch.library.opcheck(ops.slice_summary_bwd.default, bwd, test_utils=("test_faketensor",))


def test_segment_plan_splits_the_final_state_scan():
    cpu = torch.device("cpu")
    assert plan_segments(1024, 4, cpu, final_state_only=True) == (1024, 1)  # off the GPU one program per tile is enough
    assert plan_segments(10, 32, cpu, segment_chunks=4, final_state_only=True) == (4, 3)
    if torch.cuda.is_available():
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        seg_nt, nseg = plan_segments(512, 128, torch.device("cuda"), final_state_only=True)
        assert nseg > 1 and (nseg - 1) * 128 <= 4 * sms and seg_nt * nseg >= 512


def test_summary_is_folded_only_where_a_later_rank_reads_it():
    assert _summary_is_folded(0, 4, 12, None) and not _summary_is_folded(8, 4, 12, None)  # not the last rank
    assert not _summary_is_folded(0, 4, 12, [0, 4, 12])  # the next rank starts a document: it resets
    assert _summary_is_folded(0, 4, 12, [0, 3, 5, 12])  # a document crosses into the next slice


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.parametrize("backend,leaves", [("torch", "qkv"), ("triton", "qkv"), ("torch", "v")])
def test_one_rank_runs_the_plain_op(backend, leaves, monkeypatch):
    """With one rank (first and last) nothing is summarised and the op runs from an empty state: the split path
    gives the plain op's output, final state and gradients bit for bit (also when only v takes a gradient)."""
    calls = []
    real = context_parallel._slice_summary
    monkeypatch.setattr(context_parallel, "_slice_summary", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    group_backend = "nccl" if DEVICE.type == "cuda" else "gloo"
    dist.init_process_group(group_backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        g = torch.Generator().manual_seed(5)
        B, T, H, K, V = 2, 70, 2, 16, 8
        base = [torch.randn(B, T, H, d, generator=g).to(DEVICE) for d in (K, K, V)]
        w = torch.randn(B, T, H, V, generator=g).to(DEVICE)
        lg = log_decay_schedule(H, device=DEVICE)
        offset = torch.tensor([-9, 4], device=DEVICE)
        results = []
        for cp in (None, ContextParallelGroup.balanced(T)):
            q, k, v = (x.clone().requires_grad_(name in leaves) for name, x in zip("qkv", base))
            o, final = retention(q, k, v, lg, offset=offset, output_final_state=True, backend=backend, cp_group=cp)
            o.mul_(2.0)  # the output is the caller's to modify, as the plain op's is
            ((o * w).sum() + final.S.sum()).backward()
            results.append([o, final.S, final.z, final.position, q.grad, k.grad, v.grad])
    finally:
        dist.destroy_process_group()
    assert not calls, "the only rank's summary is folded by no rank"
    for name, a, b in zip(("o", "S", "z", "position", "dq", "dk", "dv"), *results):
        assert (a is None and b is None) or torch.equal(a, b), f"{name} differs from the plain op"
