"""Triton retention kernels against the float64 reference (``reference.py``), forward and backward.

On a machine without CUDA the kernels run through Triton's CPU interpreter (small shapes, fp32/fp16 only:
the interpreter has no bf16 dot); ``gpu`` tests cover bf16, large head dims, ``torch.compile`` and CUDA graphs.
"""

import os

import pytest
import torch

# Must happen before the kernel modules are imported (triton.jit reads it at decoration); at collection time.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

from retnet.ops.retention import RetentionState, log_decay_schedule, retention  # noqa: E402
from retnet.ops.retention.triton import (  # noqa: E402
    MAX_K,
    MIN_SEGMENT_CHUNKS,
    WIDE_FROM,
    plan_segments,
    retention_step,
    retention_tuning,
    wide_offsets,
)
from tests.utils import assert_within_reference_error  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DTYPE_NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

pytestmark = [
    pytest.mark.filterwarnings("ignore:tl.make_block_ptr is deprecated"),
    pytest.mark.usefixtures("exact_fp32_dots"),
]


def _inputs(B, T, H, K, V, dtype, offset, with_state, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g)
    k = torch.randn(B, T, H, K, generator=g) * K**-0.5
    v = torch.randn(B, T, H, V, generator=g)
    pos = torch.as_tensor(offset, dtype=torch.long).expand(B).clone()
    state = None
    if with_state:
        state = RetentionState(0.3 * torch.randn(B, H, K, V, generator=g), torch.randn(B, H, K, generator=g), pos)
    w = torch.randn(B, T, H, V, generator=g)  # cotangent of o
    wS = torch.randn(B, H, K, V, generator=g)  # cotangent of the final S
    return [x.to(dtype) for x in (q, k, v)], state, pos, w, wS


def _run(qkv, state, pos, w, wS, dtype, H, backend, normalize):
    """Forward + backward of retention; returns (o, S, z, position, dq, dk, dv, dS0) on the CPU in float64."""
    lg = log_decay_schedule(H, dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=DEVICE)
    xs = [x.to(DEVICE, dtype).clone().requires_grad_() for x in qkv]
    kwargs = {"offset": pos.to(DEVICE)}
    S0 = None
    if state is not None:
        sdt = torch.float64 if dtype == torch.float64 else torch.float32
        S0 = state.S.to(DEVICE, sdt).clone().requires_grad_()
        kwargs = {"initial_state": RetentionState(S0, state.z.to(DEVICE, sdt), state.position.to(DEVICE))}
    o, fs = retention(*xs, lg, output_final_state=True, normalize=normalize, backend=backend, **kwargs)
    loss = (o.double() * w.to(DEVICE)).sum() + (fs.S.double() * wS.to(DEVICE)).sum()
    loss.backward()
    grads = [x.grad for x in xs] + ([S0.grad] if S0 is not None else [])
    outs = [o, fs.S, fs.z]
    return [t.detach().double().cpu() for t in outs], fs.position.cpu(), [t.double().cpu() for t in grads]


def _compare(B, T, H, K, V, dtype, offset=0, with_state=False, normalize=True):
    qkv, state, pos, w, wS = _inputs(B, T, H, K, V, dtype, offset, with_state)
    out_k, pos_k, g_k = _run(qkv, state, pos, w, wS, dtype, H, "triton", normalize)
    out_64, pos_64, g_64 = _run([x.double() for x in qkv], state, pos, w, wS, torch.float64, H, "torch", normalize)
    out_lp, _, g_lp = _run(qkv, state, pos, w, wS, dtype, H, "torch", normalize)
    assert torch.equal(pos_k, pos_64)
    for name, a, b, c in zip(("o", "S", "z"), out_k, out_64, out_lp):
        assert_within_reference_error(name, a, b, c, dtype)
    for name, a, b, c in zip(("dq", "dk", "dv", "dS0"), g_k, g_64, g_lp):
        assert_within_reference_error(name, a, b, c, dtype, scale=4.0)


def _case_id(B, T, H, K, V, dtype, *rest):
    extra = "".join(f"-{r}" for r in rest if r)
    return f"B{B}-T{T}-H{H}-K{K}-V{V}-{DTYPE_NAME[dtype]}{extra}"


# (B, T, H, K, V, dtype, offset, with_state, normalize)
CPU_CASES = [
    (2, 100, 2, 32, 48, torch.float32, 0, False, True),
    (1, 1, 1, 16, 16, torch.float32, 0, False, True),
    (2, 130, 2, 60, 40, torch.float32, [-7, 3], True, True),
    (2, 100, 2, 32, 48, torch.float16, 0, True, True),
    (1, 70, 2, 32, 32, torch.float32, 5, True, False),
    # 16-bit with a state far from position 0 (an early sm90 build got normaliser rows wrong in this case).
    (2, 150, 2, 32, 48, torch.float16, [3000, 250_000], True, True),
]


def _off_id(off):
    if isinstance(off, list):
        return "off" + "_".join(str(o) for o in off)
    return f"off{off}" if off else ""


def _ids(cases):
    return [
        _case_id(B, T, H, K, V, dt, "state" if st else "", _off_id(off), "" if nrm else "raw")
        for B, T, H, K, V, dt, off, st, nrm in cases
    ]


@pytest.mark.parametrize("B,T,H,K,V,dtype,offset,with_state,normalize", CPU_CASES, ids=_ids(CPU_CASES))
def test_chunkwise_matches_reference(B, T, H, K, V, dtype, offset, with_state, normalize):
    _compare(B, T, H, K, V, dtype, offset, with_state, normalize)


@pytest.mark.parametrize("seg_chunks", [1, 2], ids=["seg1", "seg2"])
@pytest.mark.parametrize("with_state", [False, True], ids=["nostate", "state"])
def test_segmented_scan_matches_reference(seg_chunks, with_state):
    """The state scan split into parallel segments (long T, small batch) computes the same function; the
    backward recomputes the states through the same segmented scan."""
    with retention_tuning(segment_chunks=seg_chunks, keep_states="never"):
        _compare(2, 150, 2, 32, 40, torch.float32, [-20, 9], with_state, True)


@pytest.mark.parametrize("seg_chunks", [None, 1], ids=["whole", "seg1"])
def test_int64_offsets_give_the_same_results(seg_chunks):
    """The kernels' int64-offset variant (taken past 2^31 elements) computes exactly what the int32 one does,
    forward and backward, chunkwise and decode step."""
    qkv, state, pos, w, wS = _inputs(2, 150, 2, 32, 40, torch.float32, [-20, 9], True)
    lg = log_decay_schedule(2, device=DEVICE)
    results = []
    for wide_from in (WIDE_FROM, 0):
        with retention_tuning(segment_chunks=seg_chunks, keep_states="never", wide_from=wide_from):
            outs, position, grads = _run(qkv, state, pos, w, wS, torch.float32, 2, "triton", True)
            st = RetentionState(*(x.to(DEVICE).clone() for x in state))
            step = retention_step(*(x[:, :1].to(DEVICE) for x in qkv), lg, st)
        results.append([*outs, position, *grads, step, st.S, st.z])
    for narrow, wide in zip(*results):
        assert torch.equal(narrow, wide)


def test_wide_offsets_from_two_to_the_31():
    assert not wide_offsets(2**31 - 1, 5)
    assert wide_offsets(10, 2**31)
    assert wide_offsets(10, wide_from=10) and not wide_offsets(9, wide_from=10)


def test_segment_plan_fills_the_gpu_only_when_needed():
    cpu = torch.device("cpu")
    assert plan_segments(1024, 32, cpu) == (1024, 1)  # one program is enough off the GPU
    assert plan_segments(10, 32, cpu, segment_chunks=4) == (4, 3)  # a fixed length: the last segment is shorter
    assert plan_segments(10, 32, cpu, segment_chunks=50) == (10, 1)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        seg_nt, nseg = plan_segments(1024, 32, gpu)
        assert nseg > 1 and seg_nt * (nseg - 1) < 1024 <= seg_nt * nseg and seg_nt >= MIN_SEGMENT_CHUNKS
        assert plan_segments(1024, 100_000, gpu) == (1024, 1)  # already enough programs
        assert plan_segments(1024, torch.cuda.get_device_properties(0).multi_processor_count, gpu) == (1024, 1)
        assert plan_segments(MIN_SEGMENT_CHUNKS, 1, gpu) == (MIN_SEGMENT_CHUNKS, 1)  # too short to split


@pytest.mark.parametrize("use", ["output", "state"])
def test_gradients_through_one_output_only(use):
    """Backward with only o or only the final state in the loss (the other output gets no gradient at all)."""
    qkv, state, _, w, wS = _inputs(1, 70, 2, 32, 48, torch.float32, 0, True)
    lg = log_decay_schedule(2, device=DEVICE)
    grads = {}
    for backend in ("triton", "torch"):
        xs = [x.to(DEVICE).clone().requires_grad_() for x in qkv]
        S0 = state.S.to(DEVICE).clone().requires_grad_()
        st = RetentionState(S0, state.z.to(DEVICE), state.position.to(DEVICE))
        o, fs = retention(*xs, lg, initial_state=st, output_final_state=True, backend=backend)
        loss = (o * w.to(DEVICE)).sum() if use == "output" else (fs.S * wS.to(DEVICE)).sum()
        loss.backward()
        grads[backend] = [torch.zeros_like(x) if x.grad is None else x.grad for x in xs + [S0]]  # q: none via S
    for a, b in zip(grads["triton"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_kept_states_give_the_recomputed_gradients(monkeypatch):
    """The backward reusing the forward's per-chunk states equals the one that recomputes them, bit for bit."""
    from retnet.ops.retention.triton import backward

    qkv, state, pos, w, wS = _inputs(2, 150, 2, 32, 40, torch.float32, [-9, 4], True)
    scans = []
    real_scan = backward.state_scan
    monkeypatch.setattr(backward, "state_scan", lambda *a, **kw: scans.append(1) or real_scan(*a, **kw))
    results = {}
    for policy in ("always", "never"):
        scans.clear()
        with retention_tuning(keep_states=policy):
            out, _, grads = _run(qkv, state, pos, w, wS, torch.float32, 2, "triton", True)
        results[policy] = (out + grads, len(scans))  # the backward's recomputations of the states
    assert results["always"][1] == 0 and results["never"][1] == 1
    for a, b in zip(results["always"][0], results["never"][0]):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="keep_states"):
        with retention_tuning(keep_states="sometimes"):
            pass


def test_head_dim_above_limit_is_refused():
    K = 2 * MAX_K
    q = torch.randn(1, 4, 1, K, device=DEVICE)
    lg = log_decay_schedule(1, device=DEVICE)
    with pytest.raises(NotImplementedError, match="K <= 256"):
        retention(q, q, q[..., :16], lg, backend="triton")
    o, _ = retention(q, q, q[..., :16], lg, backend="auto")  # the reference answers instead
    expected, _ = retention(q, q, q[..., :16], lg, backend="torch")
    assert torch.equal(o, expected)


def test_all_left_padding_gives_zeros():
    qkv, _, _, _, _ = _inputs(1, 40, 2, 16, 16, torch.float32, 0, False)
    lg = log_decay_schedule(2, device=DEVICE)
    o, fs = retention(*(x.to(DEVICE) for x in qkv), lg, offset=-50, output_final_state=True, backend="triton")
    assert torch.equal(o, torch.zeros_like(o))
    assert torch.equal(fs.S, torch.zeros_like(fs.S))


def test_continuation_equals_one_call():
    qkv, _, _, _, _ = _inputs(2, 90, 2, 32, 32, torch.float32, 0, False)
    q, k, v = (x.to(DEVICE) for x in qkv)
    lg = log_decay_schedule(2, device=DEVICE)
    o_all, s_all = retention(q, k, v, lg, output_final_state=True, backend="triton")
    o1, s1 = retention(q[:, :70], k[:, :70], v[:, :70], lg, output_final_state=True, backend="triton")
    o2, s2 = retention(q[:, 70:], k[:, 70:], v[:, 70:], lg, initial_state=s1, output_final_state=True, backend="triton")
    torch.testing.assert_close(torch.cat([o1, o2], 1), o_all, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s2.S, s_all.S, rtol=1e-5, atol=1e-5)


def test_chunk_size_none_is_the_backends_choice(caplog):
    """None: 64 on the PyTorch reference, the kernels' own chunks on Triton; an explicit chunk size, which the
    kernels do not use, is logged once per value and changes nothing."""
    qkv, _, _, _, _ = _inputs(1, 90, 2, 16, 24, torch.float32, 0, False)
    q, k, v = (x.to(DEVICE) for x in qkv)
    lg = log_decay_schedule(2, device=DEVICE)
    o_none, _ = retention(q, k, v, lg, backend="torch")
    o_64, _ = retention(q, k, v, lg, backend="torch", chunk_size=64)
    o_16, _ = retention(q, k, v, lg, backend="torch", chunk_size=16)
    assert torch.equal(o_none, o_64) and not torch.equal(o_16, o_64)  # the reference's default stays 64
    logger = "retnet.ops.retention.triton.dispatch"
    with caplog.at_level("INFO", logger=logger):
        o_auto, _ = retention(q, k, v, lg, backend="triton")
        assert not [r for r in caplog.records if r.name == logger]
        o_23, _ = retention(q, k, v, lg, backend="triton", chunk_size=23)
        retention(q, k, v, lg, backend="triton", chunk_size=23)
    records = [r.getMessage() for r in caplog.records if r.name == logger]
    assert len(records) == 1 and "chunk_size=23 is not used" in records[0]
    assert torch.equal(o_23, o_auto)
    torch.testing.assert_close(o_auto, o_64, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="chunk_size"):
        retention(q, k, v, lg, backend="triton", chunk_size=0)


@pytest.mark.parametrize("T", [1, 3], ids=["T1", "T3"])
def test_recurrent_step_matches_reference(T):
    B, H, K, V = 2, 2, 32, 24
    qkv, state, _, _, _ = _inputs(B, T, H, K, V, torch.float32, [-2, 5], True)
    lg = log_decay_schedule(H, device=DEVICE)
    q, k, v = (x.to(DEVICE) for x in qkv)
    st = RetentionState(*(x.to(DEVICE) for x in state))
    o, fs = retention(q, k, v, lg, form="recurrent", initial_state=st, output_final_state=True, backend="triton")
    st64 = RetentionState(state.S.double(), state.z.double(), state.position)
    o64, fs64 = retention(*(x.double() for x in qkv), lg.double().cpu(), form="recurrent", initial_state=st64,
                          output_final_state=True, backend="torch")  # fmt: skip
    torch.testing.assert_close(o.double().cpu(), o64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fs.S.double().cpu(), fs64.S, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fs.z.double().cpu(), fs64.z, rtol=1e-5, atol=1e-5)
    assert torch.equal(fs.position.cpu(), fs64.position)
    assert torch.equal(st.S.cpu(), state.S), "retention(form='recurrent') must not modify its input state"
    # retention_step updates in place.
    o_step = retention_step(q, k, v, lg, st)
    torch.testing.assert_close(o_step, o, rtol=0, atol=0)
    torch.testing.assert_close(st.S, fs.S, rtol=0, atol=0)
    assert torch.equal(st.position, fs.position)


def test_decode_launch_choices_give_identical_steps():
    """Every (BV, num_warps) the decode sweep may pick computes the same step: the state update bit for bit, the
    output up to the order of its sum over K (which the warp count changes on a GPU). Rows at a negative
    position (left padding) only decay."""
    B, H, K, V = 2, 2, 32, 40
    qkv, state, _, _, _ = _inputs(B, 1, H, K, V, torch.float32, [-1, 3], True)
    lg = log_decay_schedule(H, device=DEVICE)
    q, k, v = (x.to(DEVICE) for x in qkv)
    outs = []
    for launch in (None, (16, 4), (64, 8)):
        st = RetentionState(*(x.to(DEVICE).clone() for x in state))
        with retention_tuning(step_launch=launch):
            outs.append((retention_step(q, k, v, lg, st), st.S, st.z, st.position))
    for o, S, z, position in outs[1:]:
        torch.testing.assert_close(o, outs[0][0], rtol=1e-6, atol=1e-6)
        assert torch.equal(S, outs[0][1]) and torch.equal(z, outs[0][2]) and torch.equal(position, outs[0][3])
    g = lg.exp().to(DEVICE)[:, None, None]
    torch.testing.assert_close(outs[0][1][0], state.S[0].to(DEVICE) * g)  # the padded row only decays
    assert outs[0][3].tolist() == [0, 4]


def test_step_rejects_a_state_it_cannot_update_in_place():
    B, H, K, V = 2, 2, 16, 8
    qkv, state, _, _, _ = _inputs(B, 1, H, K, V, torch.float32, 0, True)
    lg = log_decay_schedule(H, device=DEVICE)
    q, k, v = (x.to(DEVICE) for x in qkv)
    S, z, pos = (x.to(DEVICE) for x in state)
    bad = [
        ("does not match", RetentionState(S[:1], z[:1], pos[:1])),
        ("contiguous float32", RetentionState(S.double(), z, pos)),
        ("contiguous float32", RetentionState(S.transpose(-1, -2).contiguous().transpose(-1, -2), z, pos)),
        ("int64", RetentionState(S, z, pos.int())),
        ("position must be contiguous", RetentionState(S, z, torch.stack([pos, pos], 1)[:, 0])),
    ]
    for message, st in bad:
        with pytest.raises(ValueError, match=message):
            retention_step(q, k, v, lg, st)
    assert torch.equal(S, state.S.to(DEVICE)) and torch.equal(pos, state.position.to(DEVICE))  # untouched


def test_steps_under_torch_compile_match_eager():
    """Two decode steps in one compiled graph (the op mutates S, z and position) equal two eager steps."""
    B, H, K, V = 2, 3, 16, 24
    qkv, state, _, _, _ = _inputs(B, 2, H, K, V, torch.float32, [-1, 4], True)
    lg = log_decay_schedule(H, device=DEVICE)
    q, k, v = (x.to(DEVICE) for x in qkv)

    def two_steps(st):
        return torch.cat([retention_step(q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], lg, st) for t in (0, 1)])

    eager = RetentionState(*(x.to(DEVICE).clone() for x in state))
    compiled = RetentionState(*(x.to(DEVICE).clone() for x in state))
    o_e = two_steps(eager)
    o_c = torch.compile(two_steps, fullgraph=True)(compiled)
    assert torch.equal(o_c, o_e)
    for a, b in zip(compiled, eager):
        assert torch.equal(a, b)
    assert compiled.position.tolist() == [1, 6]


# --------------------------------------------------------------------------------------------------------
# GPU tier
# --------------------------------------------------------------------------------------------------------

GPU_CASES = [
    (B, T, H, K, V, dt, off, st, True)
    for dt in (torch.float32, torch.bfloat16, torch.float16)
    for B, T, H, K, V, off, st in (
        (2, 100, 4, 64, 128, 0, False),
        (2, 1, 2, 64, 64, 0, True),
        (2, 333, 2, 60, 40, [-17, 4], True),
        (1, 300, 2, 256, 512, 0, True),
        (2, 64, 2, 128, 128, 1000, False),
        (2, 100, 2, 32, 48, 0, True),  # head dims below the 64-wide GPU blocks
        (1, 200, 2, 256, 432, 0, True),  # the torchscale 1.3B geometry (V = 2d·(3/4)/H, not a power of two)
        (1, 1000, 2, 256, 512, 0, False),
    )
] + [(2, 200, 2, 64, 128, dt, 3, True, False) for dt in (torch.bfloat16, torch.float32)]  # raw output


@pytest.mark.parametrize(
    "B,T,H,K,V,dtype,offset,with_state,normalize",
    [pytest.param(*c, marks=GPU, id=i) for c, i in zip(GPU_CASES, _ids(GPU_CASES))],
)
def test_chunkwise_matches_reference_gpu(B, T, H, K, V, dtype, offset, with_state, normalize):
    _compare(B, T, H, K, V, dtype, offset, with_state, normalize)


@pytest.mark.gpu
@GPU[1]
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    "B,T,H,K,V,seg_chunks,with_state",
    [(2, 300, 2, 64, 96, 2, True), (1, 1000, 2, 256, 512, 3, False)],
    ids=["K64-V96-seg2-state", "K256-V512-seg3"],
)
def test_segmented_scan_matches_reference_gpu(B, T, H, K, V, seg_chunks, with_state, dtype):
    with retention_tuning(segment_chunks=seg_chunks, keep_states="never"):
        _compare(B, T, H, K, V, dtype, 0, with_state, True)


@pytest.mark.gpu
@GPU[1]
def test_torch_compile_matches_eager():
    qkv, _, _, w, _ = _inputs(2, 200, 4, 64, 64, torch.bfloat16, 0, False)
    lg = log_decay_schedule(4, device=DEVICE)

    def f(q, k, v):
        return retention(q, k, v, lg, backend="triton")[0]

    xs = [x.to(DEVICE).requires_grad_() for x in qkv]
    ys = [x.to(DEVICE).requires_grad_() for x in qkv]
    o_e = f(*xs)
    (o_e.float() * w.to(DEVICE)).sum().backward()
    o_c = torch.compile(f, fullgraph=True)(*ys)
    (o_c.float() * w.to(DEVICE)).sum().backward()
    torch.testing.assert_close(o_c, o_e, rtol=0, atol=0)
    for a, b in zip(xs, ys):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0)


@pytest.mark.gpu
@GPU[1]
def test_tensors_past_two_billion_elements_gpu():
    """Element offsets past 2^31 do not wrap: v of 64 × 8,192 × 8 × 512 values (2^31) and per-chunk states four
    times larger. The last row of the batch, forward and backward, equals that row run alone, bit for bit."""
    B, T, H, K, V = 64, 8192, 8, 256, 512
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    q, k, v = (torch.randn(B, T, H, d, device=DEVICE, dtype=torch.bfloat16, generator=gen) for d in (K, K, V))
    k = k * K**-0.5
    do = torch.randn(B, T, H, V, device=DEVICE, dtype=torch.bfloat16, generator=gen)
    lg = log_decay_schedule(H, device=DEVICE)

    def run(q, k, v, do):
        q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
        o, state = retention(q, k, v, lg, backend="triton", output_final_state=True)
        o.backward(do)
        return o.detach(), state.S, q.grad, k.grad, v.grad

    full = run(q, k, v, do)
    last = run(*(x[-1:] for x in (q, k, v, do)))
    for name, a, b in zip(("o", "S", "dq", "dk", "dv"), full, last):
        assert torch.equal(a[-1:], b), f"{name} of the last row differs"


@pytest.mark.gpu
@GPU[1]
def test_training_calls_never_wait_for_the_gpu():
    """The op and the retention layer, forward and backward, issue no host synchronisation (one per layer would
    idle the GPU while the host catches up). The decay check reads log γ back once per tensor: the warm call."""
    from retnet.layers.retention import MultiScaleRetention

    layer = MultiScaleRetention(256, 4, 512, backend="triton").to(DEVICE, torch.bfloat16)
    x = torch.randn(2, 300, 256, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    qkv, _, _, _, _ = _inputs(2, 300, 4, 64, 128, torch.bfloat16, 0, False)
    q, k, v = (t.to(DEVICE).requires_grad_() for t in qkv)
    lg = log_decay_schedule(4, device=DEVICE)

    def step():
        o, state = retention(q, k, v, lg, backend="triton", output_final_state=True)
        (o.float().sum() + state.S.sum()).backward()
        y, _ = layer(x)
        y.float().sum().backward()
        y, _ = layer(x, offset=5)
        y.float().sum().backward()

    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@GPU[1]
def test_step_under_cuda_graph():
    B, H, K, V = 4, 8, 256, 512
    lg = log_decay_schedule(H, device=DEVICE)
    state = RetentionState.zeros(B, H, K, V, device=DEVICE)
    q, k, v = (torch.randn(B, 1, H, d, device=DEVICE, dtype=torch.bfloat16) for d in (K, K, V))
    ref_state = RetentionState(state.S.clone(), state.z.clone(), state.position.clone())
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up (compiles the kernel) outside the capture
        retention_step(q, k, v, lg, RetentionState(*(x.clone() for x in state)))
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        o = retention_step(q, k, v, lg, state)
    outs = []
    for _ in range(3):
        graph.replay()
        outs.append(o.clone())
    for i in range(3):
        o_ref, ref_state = retention(q, k, v, lg, form="recurrent", initial_state=ref_state, output_final_state=True,
                                     backend="torch")  # fmt: skip
        torch.testing.assert_close(outs[i].float(), o_ref.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(state.S, ref_state.S, rtol=1e-4, atol=1e-4)
    assert state.position.tolist() == [3] * B
