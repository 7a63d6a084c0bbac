"""Recurrent retention in Triton: the fused decode step (paper §2.1, Eq. 6; docs/spec.md §3).

One kernel advances the state token by token, in place:

    S_n = γ S_{n−1} + k_nᵀ v_n,   z_n = γ z_{n−1} + k_n,   o_n = q_n S_n / max(|q_n z_n|, √c_n).

Each program owns one ``(K, BV)`` slice of one (batch, head) state and keeps it in registers across the T
tokens, so the state is read and written once per call: decoding is bound by the state's bytes. The kernel
allocates nothing and synchronises with nothing, so :func:`retention_step` can be captured in a CUDA graph;
a second, one-warp launch moves the new key sums into place and advances the positions. The launch (BV,
num_warps) follows the tuning in effect, read on the host (``tuning.tuning_ints``) and passed to the custom op.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...triton_utils import check_cuda_or_interpreter, next_power_of_2
from ..state import RetentionState
from .tiles import row_scale, state_ptr, wide_offsets, widen
from .tuning import step_launch_from_ints, tuning_ints


@triton.jit
def _recurrent_step_kernel(
    q, k, v, log_decay, S, z, z_new, position, o,
    T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, NORMALIZE: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    g = tl.exp(lg)
    p0 = tl.load(position + i_b)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    p_S = state_ptr(S, i_bh, K, V, WIDE) + o_k[:, None] * V + o_v[None, :]
    m_S = m_k[:, None] & m_v[None, :]
    b_S = tl.load(p_S, mask=m_S, other=0.0).to(tl.float32)
    b_z = tl.load(z + i_bh * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    for t in range(T):
        n = p0 + t
        b_q = tl.load(q + ((widen(i_b, WIDE) * T + t) * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_k = tl.load(k + ((widen(i_b, WIDE) * T + t) * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + ((widen(i_b, WIDE) * T + t) * H + i_h) * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        # Left padding (n < 0): k = v = 0, so the state only decays.
        b_k = tl.where(n >= 0, b_k, 0.0)
        b_v = tl.where(n >= 0, b_v, 0.0)
        b_S = b_S * g + b_k[:, None] * b_v[None, :]
        b_z = b_z * g + b_k
        b_o = tl.sum(b_q[:, None] * b_S, axis=0)  # (BV,)
        b_s = tl.sum(b_q * b_z, axis=0)
        n_row = tl.full([1], 0, tl.int64) + n
        b_r = row_scale(tl.full([1], 0.0, tl.float32) + b_s, lg, n_row, n_row >= 0, NORMALIZE)
        b_o = b_o * tl.sum(b_r, axis=0)
        tl.store(o + ((widen(i_b, WIDE) * T + t) * H + i_h) * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
    tl.store(p_S, b_S.to(p_S.dtype.element_ty), mask=m_S)
    # z is read by every V block, so the new key sum goes to a separate buffer (no read/write race).
    tl.store(z_new + i_bh * K + o_k, b_z.to(z_new.dtype.element_ty), mask=m_k & (i_v == 0))


@triton.jit
def _step_finish_kernel(z, z_new, position, T, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr):
    """The step's bookkeeping in one launch: z ← z_new per (batch, head) row; position += T per batch row."""
    i_bh = tl.program_id(0)
    o_k = tl.arange(0, BK)
    tl.store(z + i_bh * K + o_k, tl.load(z_new + i_bh * K + o_k, mask=o_k < K), mask=o_k < K)
    if i_bh % H == 0:
        p = position + i_bh // H
        tl.store(p, tl.load(p) + T)


@torch.library.custom_op("retnet::retention_step_", mutates_args=("S", "z", "position"))
def _step_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S: torch.Tensor,
    z: torch.Tensor,
    position: torch.Tensor,
    normalize: bool,
    tuning: list[int],
) -> torch.Tensor:
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = torch.empty_like(v)
    z_new = torch.empty_like(z)
    block_v, num_warps, wide_from = step_launch_from_ints(B, H, K, V, tuple(tuning))
    BK = max(16, next_power_of_2(K))
    wide = wide_offsets(q.numel(), v.numel(), S.numel(), wide_from=wide_from)
    _recurrent_step_kernel[(triton.cdiv(V, block_v), B * H)](
        q, k, v, log_decay, S, z, z_new, position, o, T,
        H=H, K=K, V=V, BK=BK, BV=block_v, NORMALIZE=normalize, WIDE=wide, num_warps=num_warps,
    )  # fmt: skip
    _step_finish_kernel[(B * H,)](z, z_new, position, T, H=H, K=K, BK=BK, num_warps=1)
    return o


@_step_op.register_fake
def _(q, k, v, log_decay, S, z, position, normalize, tuning):
    return torch.empty_like(v)


def retention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    state: RetentionState,
    normalize: bool = True,
) -> torch.Tensor:
    """Advance a retention state by T tokens in place and return their outputs (recurrent form, Eq. 6).

    The decoding primitive: ``state.S``, ``state.z`` and ``state.position`` are updated in place, nothing is
    allocated beyond the output, and there is no host synchronisation, so a decode loop built on it can be
    captured in a CUDA graph (keep the state tensors at fixed addresses). No autograd. The launch follows
    :func:`~.tuning.current_tuning` (``retention_tuning(step_launch=...)``).

    Args:
        q: ``(B, T, H, K)`` fp16/bf16/fp32, usually T = 1.
        k: ``(B, T, H, K)`` of q's dtype, scaled by K^−½.
        v: ``(B, T, H, V)`` same dtype.
        log_decay: ``(H,)`` float32 log γ.
        state: :class:`RetentionState` with contiguous float32 S ``(B, H, K, V)`` and z ``(B, H, K)`` and int64
            position ``(B,)``; rows at negative positions treat their tokens as left padding.
        normalize: apply docs/spec.md §3 factors 2 and 3.

    Returns:
        o: ``(B, T, H, V)`` in v's dtype.

    Raises:
        ValueError: if the state is not float32, contiguous (S, z and position), or of the wrong shape.
    """
    S, z, position = state
    B, T, H, K = q.shape
    V = v.shape[-1]
    if S.shape != (B, H, K, V) or z.shape != (B, H, K) or position.shape != (B,):
        raise ValueError("state does not match q/v shapes (B, H, K, V)")
    if S.dtype != torch.float32 or z.dtype != torch.float32 or not (S.is_contiguous() and z.is_contiguous()):
        raise ValueError("retention_step needs contiguous float32 S and z (updated in place)")
    if position.dtype != torch.long:
        raise ValueError("state.position must be int64")
    check_cuda_or_interpreter(q, S)
    if not position.is_contiguous():
        raise ValueError("state.position must be contiguous (updated in place)")
    return _step_op(
        q.contiguous(), k.contiguous(), v.contiguous(), log_decay.float(), S, z, position, normalize, tuning_ints()
    )  # fmt: skip
