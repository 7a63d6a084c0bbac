"""The recurrent retention step of the fused decode path (paper Eq. 6; docs/spec.md §3).

The arithmetic of :func:`retnet.ops.retention.triton.retention_step` for one token, with two differences of
plumbing: q, k and v are read straight from the stacked q/k/v/g product's output row (already rotated, k scaled),
and each program also writes the sum and the sum of squares of its slice of the output, which the output
projection's kernel reduces into the head-wise norm (:func:`~.projections.gated_output_residual`), so that no
kernel runs between the two. The new key sums go to ``z_new`` (every V block reads z); the output projection's
kernel moves them into place and advances the positions.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..retention.state import RetentionState
from ..retention.triton.tiles import row_scale
from ..retention.triton.tuning import step_launch
from ..triton_utils import next_power_of_2
from .dependent import await_previous, launch_options


@triton.jit
def _step_with_stats_kernel(
    qkvg, log_decay, S, z, z_new, position, o, stats,
    QKVG_STRIDE, NVB,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, DEPENDENT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr,
):  # fmt: skip
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    # Before the wait: the state, which only this layer's step of the previous token wrote.
    p_S = S + i_bh * K * V + o_k[:, None] * V + o_v[None, :]
    m_S = m_k[:, None] & m_v[None, :]
    b_S = tl.load(p_S, mask=m_S, other=0.0)
    b_z = tl.load(z + i_bh * K + o_k, mask=m_k, other=0.0)
    lg = tl.load(log_decay + i_h).to(tl.float32)
    await_previous(DEPENDENT)
    n = tl.load(position + i_b)
    row = qkvg + i_b * QKVG_STRIDE
    b_q = tl.load(row + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    b_k = tl.load(row + (H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    b_v = tl.load(row + 2 * H * K + i_h * V + o_v, mask=m_v, other=0.0).to(tl.float32)
    # Left padding (n < 0): k = v = 0, so the state only decays, and the output row is 0.
    b_k = tl.where(n >= 0, b_k, 0.0)
    b_v = tl.where(n >= 0, b_v, 0.0)
    g = tl.exp(lg)
    b_S = b_S * g + b_k[:, None] * b_v[None, :]
    b_z = b_z * g + b_k
    tl.store(p_S, b_S, mask=m_S)
    tl.store(z_new + i_bh * K + o_k, b_z, mask=m_k & (i_v == 0))
    b_o = tl.sum(b_q[:, None] * b_S, axis=0)  # (BV,)
    b_s = tl.sum(b_q * b_z, axis=0)
    n_row = tl.full([1], 0, tl.int64) + n
    b_o = b_o * tl.sum(row_scale(tl.full([1], 0.0, tl.float32) + b_s, lg, n_row, n_row >= 0, True), axis=0)
    b_o = tl.where(m_v, b_o, 0.0)
    tl.store(o + i_bh * V + o_v, b_o, mask=m_v)
    p_stats = stats + (i_bh * NVB + i_v) * 2
    tl.store(p_stats, tl.sum(b_o, axis=0))
    tl.store(p_stats + 1, tl.sum(b_o * b_o, axis=0))


def head_stat_blocks(batch_size: int, num_heads: int, key_dim: int, value_dim: int) -> int:
    """NVB, the number of V blocks of a step (the third dim of its ``stats`` buffer), from the decode launch of
    :func:`~retnet.ops.retention.triton.tuning.step_launch` in effect."""
    block_v, _ = step_launch(batch_size, num_heads, key_dim, value_dim)
    return triton.cdiv(value_dim, block_v)


def retention_step_with_stats(
    qkvg: torch.Tensor,
    log_decay: torch.Tensor,
    state: RetentionState,
    o: torch.Tensor,
    stats: torch.Tensor,
    z_new: torch.Tensor,
    dependent: bool = False,
) -> None:
    """Advance S in place by one token per row and write its outputs and their partial sums.

    z is not updated here: the new key sums are written to ``z_new`` and the positions are left as they were, for
    :func:`~.projections.gated_output_residual` to finish the step.

    Args:
        qkvg: ``(B, N)`` float32 rows ``[q | k | v | …]``: q and k ``(H·K)`` each, rotated, k scaled by K^−½,
            then v ``(H·V)``.
        log_decay: ``(H,)`` float32 log γ.
        state: float32 S ``(B, H, K, V)``, z ``(B, H, K)``, int64 position ``(B,)``, contiguous.
        o: ``(B, H, V)`` float32 output buffer (row-normalised retention outputs).
        stats: ``(B, H, NVB, 2)`` float32 buffer (:func:`head_stat_blocks`): Σo and Σo² of each V block.
        z_new: ``(B, H, K)`` float32 buffer for the new key sums.
        dependent: launch as a programmatic dependent of the previous kernel (:mod:`~.dependent`).
    """
    S, z, position = state
    B, H, K, V = S.shape
    block_v, num_warps = step_launch(B, H, K, V)
    nvb = triton.cdiv(V, block_v)
    if stats.shape != (B, H, nvb, 2):
        raise ValueError(f"stats must be {(B, H, nvb, 2)} for the step's launch, got {tuple(stats.shape)}")
    _step_with_stats_kernel[(nvb, B * H)](
        qkvg, log_decay, S, z, z_new, position, o, stats, qkvg.shape[1], nvb,
        H=H, K=K, V=V, DEPENDENT=dependent, BK=max(16, next_power_of_2(K)), BV=block_v, num_warps=num_warps,
        **launch_options(dependent, S.device),
    )  # fmt: skip
