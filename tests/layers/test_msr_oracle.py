"""Multi-scale retention against an independent oracle (docs/spec.md §2, §4): the layer's weights applied by hand.

q = x W_Qᵀ, k = x W_Kᵀ · K^−½, v = x W_Vᵀ, g = x W_Gᵀ; q and k rotated as complex numbers (pair (2i, 2i+1) times
e^(i n θ_i), θ_i = 10000^(−i/(K/2 − 1))); retention by its definition (``tests/ops/test_retention_oracle.py``);
the head norm as an explicit RMS formula or ``torch.nn.functional.group_norm``; the swish gate; W_O. For every
decay schedule and head norm, in the three forms on PyTorch (float64), on the Triton kernels under the interpreter
(float32), and in the static decoding path (prefill, then one token at a time).
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.nn import functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from retnet.layers import MultiScaleRetention  # noqa: E402
from retnet.ops.retention import RetentionState  # noqa: E402
from tests.ops.test_retention_oracle import SCHEDULES, retention_oracle, schedule_gammas  # noqa: E402
from tests.utils import assert_close  # noqa: E402

F64 = torch.float64
D, H, VALUE_DIM = 16, 2, 24  # K = 8, V = 12
HEAD_NORMS = ("rms", "groupnorm", "none")
EPS = 1e-5  # not the default, so that the layer is shown to use the one it is given


def rotate(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``(B, T, H, K)`` rotated at ``(B, T)`` positions: channel pair (2i, 2i+1) as a + ib, times e^(i n θ_i)."""
    K = x.shape[-1]
    theta = torch.tensor([10000.0 ** (-i / (K // 2 - 1)) if K > 2 else 1.0 for i in range(K // 2)], dtype=F64)
    turn = torch.polar(torch.ones((), dtype=F64), positions.to(F64)[..., None] * theta)  # (B, T, K/2)
    pairs = torch.view_as_complex(x.to(F64).reshape(*x.shape[:-1], K // 2, 2).contiguous())
    return torch.view_as_real(pairs * turn[:, :, None]).reshape(x.shape)


def msr_oracle(layer: MultiScaleRetention, x, start, schedule, head_norm, S0=None, z0=None):
    """The layer's output ``(B, T, D)`` and final state from its weights, by the definitions (float64).

    Args:
        layer: the layer whose weights are used (its dims; the head norm's eps and affine parameters).
        x: ``(B, T, D)`` input.
        start: ``(B,)`` position of each row's first token.
        schedule: decay schedule name; head_norm: ``"rms"``, ``"groupnorm"`` or ``"none"``.
        S0, z0: state before the segment, or None.
    """
    B, T, _ = x.shape
    H, K, V = layer.num_heads, layer.key_dim, layer.head_value_dim
    eps = layer.group_norm.eps if layer.group_norm is not None else None
    x = x.to(F64)

    def proj(linear):
        return x @ linear.weight.to(F64).T

    q = proj(layer.q_proj).view(B, T, H, K)
    k = (proj(layer.k_proj) * K**-0.5).view(B, T, H, K)
    v = proj(layer.v_proj).view(B, T, H, V)
    positions = start[:, None] + torch.arange(T)
    o, S, z = retention_oracle(rotate(q, positions), rotate(k, positions), v, schedule_gammas(schedule, H), start,
                               S0, z0)  # fmt: skip
    if head_norm == "rms":
        o = (o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + eps)).flatten(-2)
    elif head_norm == "groupnorm":
        w, b = layer.group_norm.weight.to(F64), layer.group_norm.bias.to(F64)
        o = F.group_norm(o.reshape(B * T, H * V), H, w, b, eps).reshape(B, T, H * V)
    else:
        o = o.flatten(-2)
    if layer.g_proj is not None:
        o = F.silu(proj(layer.g_proj)) * o
    return o @ layer.out_proj.weight.to(F64).T, S, z


def make_layer(schedule, head_norm, use_gate=True, backend="torch", dtype=F64, seed=0):
    torch.manual_seed(seed)
    layer = MultiScaleRetention(
        D, H, VALUE_DIM, decay_schedule=schedule, head_norm=head_norm, group_norm_eps=EPS, use_gate=use_gate,
        backend=backend,
    ).to(dtype)  # fmt: skip
    if head_norm == "groupnorm":  # an affine map other than the identity, so that it is checked too
        with torch.no_grad():
            layer.group_norm.weight.copy_(1 + 0.5 * torch.randn(H * (VALUE_DIM // H)))
            layer.group_norm.bias.copy_(torch.randn(H * (VALUE_DIM // H)))
    return layer


def _state(B, seed):
    g = torch.Generator().manual_seed(seed)
    K, V = D // H, VALUE_DIM // H
    return 0.5 * torch.randn(B, H, K, V, generator=g, dtype=F64), torch.randn(B, H, K, generator=g, dtype=F64)


def _compare(layer, schedule, head_norm, form, with_state, dtype, rtol, T=11):
    """Layer output, final state and dL/dx against the oracle, for a padded row and a row far from position 0."""
    B = 2
    g = torch.Generator().manual_seed(7)
    x = torch.randn(B, T, D, generator=g, dtype=F64) + 0.3  # a mean, so that the head norm's centring matters
    w = torch.randn(B, T, D, generator=g, dtype=F64)  # cotangent of y
    start = torch.tensor([-2, 300])
    S0, z0 = _state(B, 5) if with_state else (None, None)
    xo = x.clone().requires_grad_()
    y_x, S_x, z_x = msr_oracle(layer, xo, start, schedule, head_norm, S0, z0)
    (dx_x,) = torch.autograd.grad((y_x * w).sum(), xo)
    xl = x.to(dtype).requires_grad_()
    if with_state:
        sdt = F64 if dtype == F64 else torch.float32
        kwargs = {"state": RetentionState(S0.to(sdt), z0.to(sdt), start)}
    else:
        kwargs = {"offset": start}
    y, state = layer(xl, form=form, chunk_size=4, output_state=True, **kwargs)
    (dx,) = torch.autograd.grad((y.double() * w).sum(), xl)
    name = f"{schedule}/{head_norm}/{form}"
    assert_close(y.reshape(-1, D), y_x.detach().reshape(-1, D), rtol, f"{name} y")  # one row per token
    assert_close(dx.reshape(-1, D), dx_x.reshape(-1, D), 2 * rtol, f"{name} dx")
    assert_close(state.S.reshape(-1, state.S.shape[-1]), S_x.detach().reshape(-1, S_x.shape[-1]), rtol, f"{name} S")
    assert_close(state.z, z_x.detach(), rtol, f"{name} z")


@pytest.mark.parametrize("with_state", [False, True], ids=["offset", "state"])
@pytest.mark.parametrize("form", ["parallel", "recurrent", "chunkwise"])
@pytest.mark.parametrize("head_norm", HEAD_NORMS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_layer_matches_the_oracle(schedule, head_norm, form, with_state):
    layer = make_layer(schedule, head_norm)
    _compare(layer, schedule, head_norm, form, with_state, F64, 1e-10)


def test_layer_without_gate_matches_the_oracle():
    layer = make_layer("paper", "groupnorm", use_gate=False)
    _compare(layer, "paper", "groupnorm", "chunkwise", True, F64, 1e-10)


@pytest.mark.parametrize(
    "schedule,head_norm,with_state", [("paper", "groupnorm", True), ("torchscale", "rms", False)],
    ids=["paper-groupnorm-state", "torchscale-rms-offset"],
)  # fmt: skip
@pytest.mark.usefixtures("exact_fp32_dots")
def test_layer_on_triton_matches_the_oracle(schedule, head_norm, with_state):
    pytest.importorskip("triton")
    layer = make_layer(schedule, head_norm, backend="triton", dtype=torch.float32)
    _compare(layer, schedule, head_norm, "chunkwise", with_state, torch.float32, 1e-4)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_static_decoding_matches_the_oracle(schedule):
    """The decoding engine's path (PyTorch step in float64): ``prefill_decode_state_`` over 6 tokens, then 3
    ``decode_step_`` calls; and 9 ``decode_step_`` calls from a fresh state (position 0 onwards). Every output
    equals the oracle's over the 9 tokens."""
    layer = make_layer(schedule, "rms")
    B, T, prompt = 2, 9, 6
    x = torch.randn(B, T, D, dtype=F64)
    expected, _, _ = msr_oracle(layer, x, torch.zeros(B, dtype=torch.long), schedule, "rms")
    rows = torch.arange(B)
    for first in (prompt, 0):
        state = layer.allocate_decode_state(B, T, torch.device("cpu"), F64)
        with torch.no_grad():
            outs = [layer.prefill_decode_state_(x[:, :first], state, rows, 0, chunk_size=4)] if first else []
            outs += [layer.decode_step_(x[:, t], state)[:, None] for t in range(first, T)]
        name = f"{schedule} decoding after a prefill of {first}"
        assert_close(torch.cat(outs, 1).reshape(-1, D), expected.reshape(-1, D), 1e-10, name)
        assert state.position.tolist() == [T, T]
