"""Launch tuning of the Triton kernels as values: ``KernelTuning``, ``retention_tuning`` and the per-call plans.

The tuning changes how the kernels launch, never what they compute: these tests check that overrides are validated,
scoped (per thread, restored on exit), reach the launches, survive to a backward pass run outside their scope, and
work under ``torch.compile``.
"""

import os
import threading

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

from retnet.ops.retention import RetentionState, log_decay_schedule, retention  # noqa: E402
from retnet.ops.retention.triton import (  # noqa: E402
    BLOCK_TABLE,
    FP32_BLOCK,
    KERNELS,
    KernelTuning,
    chunk_plan,
    current_tuning,
    keeps_states,
    retention_tuning,
    step_launch,
)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = [
    pytest.mark.filterwarnings("ignore:tl.make_block_ptr is deprecated"),
    pytest.mark.usefixtures("exact_fp32_dots"),
]


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"keep_states": "sometimes"}, "keep_states"),
        ({"segment_chunks": 0}, "segment_chunks"),
        ({"segment_chunks": 2.0}, "segment_chunks"),
        ({"step_launch": (24, 4)}, "step_launch"),
        ({"step_launch": (32, 3)}, "num_warps"),
        ({"blocks": {"output_fwd": (64, 96, 4, 2)}}, "blocks"),
        ({"blocks": {"output_fwd": (64, 64, 4, 0)}}, "blocks"),
        ({"blocks": {"nope": (64, 64, 4, 2)}}, "unknown kernel"),
        ({"wide_from": -1}, "wide_from"),
    ],
    ids=lambda x: x if isinstance(x, str) else next(iter(x)),
)
def test_bad_overrides_are_refused(overrides, field):
    with pytest.raises(ValueError, match=field):
        KernelTuning(**overrides)
    with pytest.raises(ValueError, match=field):
        with retention_tuning(**overrides):
            pass
    assert current_tuning() == KernelTuning()


def test_unknown_field_is_a_type_error():
    with pytest.raises(TypeError):
        with retention_tuning(keep_state="always"):
            pass


def test_scopes_nest_merge_blocks_and_restore():
    assert current_tuning() == KernelTuning()
    with retention_tuning(segment_chunks=4, blocks={"state_fwd": (64, 64, 4, 3)}) as outer:
        assert current_tuning() is outer and outer.segment_chunks == 4
        with retention_tuning(keep_states="always", blocks={"dv_bwd": (64, 64, 2, 1)}) as inner:
            assert inner.segment_chunks == 4 and inner.keep_states == "always"
            assert dict(inner.blocks) == {"state_fwd": (64, 64, 4, 3), "dv_bwd": (64, 64, 2, 1)}
        assert current_tuning() == outer
        with pytest.raises(RuntimeError):
            with retention_tuning(segment_chunks=1):
                raise RuntimeError("restored on the way out")
        assert current_tuning() == outer
    assert current_tuning() == KernelTuning()


def test_other_threads_keep_their_own_tuning():
    seen = []
    with retention_tuning(keep_states="never"):
        thread = threading.Thread(target=lambda: seen.append(current_tuning()))
        thread.start()
        thread.join()
        assert current_tuning().keep_states == "never"
    assert seen == [KernelTuning()]


def test_chunk_plan_takes_the_table_the_overrides_and_round_trips():
    bf16 = chunk_plan(256, 512, torch.bfloat16, KernelTuning())
    fp32 = chunk_plan(256, 512, torch.float32, KernelTuning())
    for name in KERNELS:
        assert (bf16.launch(name).num_warps, bf16.launch(name).num_stages) == BLOCK_TABLE[name][2:]
        assert (fp32.launch(name).num_warps, fp32.launch(name).num_stages) == FP32_BLOCK[2:]
    tuned = chunk_plan(32, 48, torch.float32, KernelTuning(segment_chunks=3, blocks={"dv_bwd": (64, 64, 2, 1)}))
    assert tuned.launch("dv_bwd").options == {"num_warps": 2, "num_stages": 1}
    assert tuned.launch("dqk_bwd").options == {"num_warps": FP32_BLOCK[2], "num_stages": FP32_BLOCK[3]}
    assert tuned.segment_chunks == 3 and not tuned.keep_states
    for tuning in (KernelTuning(), KernelTuning(keep_states="never", segment_chunks=3, step_launch=(64, 8),
                   blocks={"dv_bwd": (64, 64, 2, 1)}, wide_from=0)):  # fmt: skip
        assert KernelTuning.from_ints(tuning.to_ints()) == tuning  # the form the custom ops take
    with pytest.raises(ValueError, match="ints"):
        KernelTuning.from_ints(KernelTuning().to_ints()[:-1])


def test_keep_states_policy():
    assert keeps_states("auto", 8192, 128, 128, 2, 2)  # states as large as k and v: kept
    assert not keeps_states("auto", 8192, 256, 512, 2, 2)  # 2.7 times k and v: recomputed
    assert keeps_states("always", 8192, 256, 512, 2, 2) and not keeps_states("never", 8192, 128, 128, 2, 2)


def test_step_launch_rule_and_override():
    assert step_launch(1, 8, 256, 512, KernelTuning()) == (16, 4)  # few rows: narrow slices
    assert step_launch(16, 8, 256, 512, KernelTuning()) == (64, 4)
    assert step_launch(1, 16, 128, 128, KernelTuning()) == (32, 4)
    assert step_launch(1, 2, 32, 8, KernelTuning()) == (16, 4)  # never wider than V's power of two (>= 16)
    assert step_launch(1, 8, 256, 512, KernelTuning(step_launch=(128, 8))) == (128, 8)


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: records each launch's grid and keywords, then runs it."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.launches = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((grid, kwargs))
            return self.kernel[grid](*args, **kwargs)

        return launch


def _inputs(B, T, H, K, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g)
    k = torch.randn(B, T, H, K, generator=g) * K**-0.5
    v = torch.randn(B, T, H, V, generator=g)
    S0 = 0.3 * torch.randn(B, H, K, V, generator=g)
    z0 = torch.randn(B, H, K, generator=g)
    do = torch.randn(B, T, H, V, generator=g)
    return [x.to(DEVICE) for x in (q, k, v, S0, z0, do)]


def _forward_backward(q, k, v, S0, z0, do, lg, tuning=None):
    """Forward under ``tuning`` (when given), backward after its scope has closed; outputs and gradients."""
    xs = [x.clone().requires_grad_() for x in (q, k, v, S0)]
    state = RetentionState(xs[3], z0, torch.full((q.shape[0],), 5, device=DEVICE))
    if tuning is None:
        o, fs = retention(*xs[:3], lg, initial_state=state, output_final_state=True, backend="triton")
    else:
        with retention_tuning(**tuning):
            o, fs = retention(*xs[:3], lg, initial_state=state, output_final_state=True, backend="triton")
    ((o * do).sum() + fs.S.sum()).backward()
    return [o.detach(), fs.S.detach(), *(x.grad for x in xs)]


def test_tuning_reaches_the_launches_and_the_backward_keeps_the_forwards_plan(monkeypatch):
    from retnet.ops.retention.triton import backward, forward

    recorders = {}
    for module, name in ((forward, "_segment_state_kernel"), (backward, "_dstate_segment_kernel"),
                         (backward, "_dqk_bwd_kernel")):  # fmt: skip
        recorders[name] = _Recorder(getattr(module, name))
        monkeypatch.setattr(module, name, recorders[name])
    inputs = _inputs(2, 150, 2, 32, 40)
    lg = log_decay_schedule(2, device=DEVICE)
    plain = _forward_backward(*inputs, lg)
    assert not recorders["_segment_state_kernel"].launches and not recorders["_dstate_segment_kernel"].launches
    assert recorders["_dqk_bwd_kernel"].launches[-1][1]["num_warps"] == FP32_BLOCK[2]
    tuning = {"segment_chunks": 1, "keep_states": "never", "blocks": {"dqk_bwd": (64, 64, 2, 1)}}
    tuned = _forward_backward(*inputs, lg, tuning)
    NT = triton.cdiv(150, 64)
    # Forward scan and the backward's recomputation each launch the pre-pass over NT − 1 segments, per (b, h).
    assert [grid[2] for grid, _ in recorders["_segment_state_kernel"].launches] == [(NT - 1) * 4] * 2
    assert [grid[2] for grid, _ in recorders["_dstate_segment_kernel"].launches] == [(NT - 1) * 4]
    _, kwargs = recorders["_dqk_bwd_kernel"].launches[-1]
    assert (kwargs["num_warps"], kwargs["num_stages"]) == (2, 1)
    for a, b in zip(tuned, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_compiled_op_under_a_tuning_matches_eager(dynamic):
    """``torch.compile(fullgraph=True)`` traces the tuned op whole (the tuning is read without the shapes, so
    dynamic shapes trace too); forward and gradients equal eager bit for bit."""
    inputs = _inputs(1, 100, 2, 16, 24, seed=1)
    lg = log_decay_schedule(2, device=DEVICE)
    tuning = {"segment_chunks": 1, "keep_states": "always"}

    def run(q, k, v, S0, z0, do):
        state = RetentionState(S0, z0, torch.full((q.shape[0],), 7, device=DEVICE))
        o, fs = retention(q, k, v, lg, initial_state=state, output_final_state=True, backend="triton")
        return o, fs.S

    results = []
    for fn in (run, torch.compile(run, fullgraph=True, dynamic=dynamic)):
        xs = [x.clone().requires_grad_() for x in inputs[:4]]
        with retention_tuning(**tuning):
            o, S = fn(*xs, *inputs[4:])
        ((o * inputs[5]).sum() + S.sum()).backward()
        results.append([o.detach(), S.detach(), *(x.grad for x in xs)])
    for a, b in zip(*results):
        assert torch.equal(a, b)
