"""A slice's summary on the Triton kernels: the final state of an empty start, and its gradient (docs/parallel.md).

Context parallelism (``context_parallel.py``) summarises each rank's slice of T tokens as the state an empty start
reaches at its end (docs/spec.md §3), with w_m = γ^(T−1−m) (0 on left padding, rows at negative positions):

    S = Σ_m w_m k_mᵀ v_m  (K × V),      z = Σ_m w_m k_m  (K),

which is the final state of the chunkwise state scan. The forward runs that scan (``forward.state_scan``) without
writing the per-chunk states: the segment pre-pass sums all segments but the last in parallel, and one program per
(K block, V block, batch·head) scans the last segment from their sum. The operands are those of the op's own
scan (k ⊙ ζ rounded to the input dtype, v as given) and the state accumulates in float32; it is never rounded to
16 bits. The gradient is parallel over the tokens (no scan): with dS, dz the gradients of S and z,

    dk_m = w_m (dS v_m + dz),      dv_m = w_m (k_m dS),

one program per (block, chunk, batch·head), dS rounded to the input dtype as the op's backward rounds its state
gradients, float32 accumulation. Both are ``torch.library`` custom ops with autograd, so ``torch.compile`` traces
them whole (like ``op.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...triton_utils import dot_precision
from .forward import state_scan
from .tiles import state_block, state_block_t, token_block, wide_offsets
from .tuning import (
    MAX_K,
    ChunkPlan,
    chunk_len,
    plan_from_ints,
    plan_segments,
    tuning_ints,
)


@triton.jit
def _summary_weights(lg, p0, o_t, T):
    """(BT,) w_m = γ^(T−1−m) at tokens m = ``o_t`` inside the slice and at non-negative positions; else 0."""
    b_valid = (o_t < T) & (p0 + o_t >= 0)
    return b_valid, tl.where(b_valid, tl.exp(lg * tl.maximum(T - 1 - o_t, 0).to(tl.float32)), 0.0)


@triton.jit
def _summary_dk_kernel(
    v, dS, dz, position, log_decay, dk,
    T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """dK = w ⊙ (V dSᵀ + dz) on one (BT, BK) tile."""
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    o_t = i_t * BT + tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        p_v = token_block(v, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
        p_dSt = state_block_t(dS, i_bh, K, V, i_k, i_v, BK, BV, WIDE)  # (BV, BK), loaded transposed
        b_v = tl.load(p_v, boundary_check=(0, 1), padding_option="zero")
        b_dSt = tl.load(p_dSt, boundary_check=(0, 1), padding_option="zero")
        # (BT, BV) @ (BV, BK) -> (BT, BK)
        b_dk += tl.dot(b_v, b_dSt, input_precision=IP)
    b_dz = tl.load(dz + i_bh * K + o_k, mask=o_k < K, other=0.0)
    b_valid, b_w = _summary_weights(lg, p0, o_t, T)
    # where, not a product with w's zeros: a non-finite padded value must not reach the gradient
    b_dk = tl.where(b_valid[:, None], (b_dk + b_dz[None, :]) * b_w[:, None], 0.0)
    p_dk = token_block(dk, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
    tl.store(p_dk, b_dk.to(p_dk.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def _summary_dv_kernel(
    k, dS, position, log_decay, dv,
    T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """dV = w ⊙ (K dS) on one (BT, BV) tile."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    o_t = i_t * BT + tl.arange(0, BT)
    b_dv = tl.zeros([BT, BV], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        p_k = token_block(k, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
        p_dS = state_block(dS, i_bh, K, V, i_k, i_v, BK, BV, WIDE)
        b_k = tl.load(p_k, boundary_check=(0, 1), padding_option="zero")
        b_dS = tl.load(p_dS, boundary_check=(0, 1), padding_option="zero")
        # (BT, BK) @ (BK, BV) -> (BT, BV)
        b_dv += tl.dot(b_k, b_dS, input_precision=IP)
    b_valid, b_w = _summary_weights(lg, p0, o_t, T)
    b_dv = tl.where(b_valid[:, None], b_dv * b_w[:, None], 0.0)
    p_dv = token_block(dv, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
    tl.store(p_dv, b_dv.to(p_dv.dtype.element_ty), boundary_check=(0, 1))


# ---------------------------------------------------------------------------------------------------------
# Launchers (blocks, warps and stages from the call's ``ChunkPlan``: the scan's ``state_fwd`` row; the gradient
# tiles are those of the op's dK and dV kernels, whose state terms they compute)
# ---------------------------------------------------------------------------------------------------------


def slice_summary_fwd(
    k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, position: torch.Tensor, plan: ChunkPlan
) -> tuple[torch.Tensor, torch.Tensor]:
    """The final state (S, z) of an empty start over k, v (no autograd).

    Args:
        k: ``(B, T, H, K)`` contiguous, fp16/bf16/fp32, K <= ``MAX_K``.
        v: ``(B, T, H, V)`` contiguous, same dtype.
        log_decay: ``(H,)`` float32 log γ.
        position: ``(B,)`` int64 absolute position of each row's first token (negative: left padding).
        plan: the launches (:func:`~.tuning.chunk_plan`).

    Returns:
        ``(S, z)``: ``(B, H, K, V)`` and ``(B, H, K)`` float32.
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    BT = chunk_len(T)
    NT = triton.cdiv(T, BT)
    launch = plan.launch("state_fwd")
    programs = triton.cdiv(K, launch.BK) * triton.cdiv(V, launch.BV) * B * H
    segments = plan_segments(NT, programs, k.device, plan.segment_chunks, final_state_only=True)
    _, _, S, z = state_scan(
        k, v, None, None, position, log_decay, BT, plan, store_z=False, store_final=True, ip=dot_precision(k.dtype),
        store_h=False, segments=segments,
    )  # fmt: skip
    return S, z


def slice_summary_bwd(
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    position: torch.Tensor,
    dS: torch.Tensor,
    dz: torch.Tensor,
    plan: ChunkPlan,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of k and v from those of the summary's S ``(B, H, K, V)`` and z ``(B, H, K)`` (float32).

    Args:
        k: ``(B, T, H, K)`` as for :func:`slice_summary_fwd`.
        v: ``(B, T, H, V)`` likewise.
        log_decay: ``(H,)`` likewise.
        position: ``(B,)`` likewise.
        dS: ``(B, H, K, V)`` gradient of S (rounded to k's dtype for the dots).
        dz: ``(B, H, K)`` gradient of z, float32.
        plan: the forward call's launches.

    Returns:
        ``(dk, dv)`` with the shapes and dtypes of k and v.
    """
    B, T, H, K = k.shape
    V = v.shape[-1]
    BT = chunk_len(T)
    NT = triton.cdiv(T, BT)
    ip = dot_precision(k.dtype)
    dS = dS.to(k.dtype).contiguous()
    dz = dz.float().contiguous()
    wide = wide_offsets(k.numel(), v.numel(), wide_from=plan.wide_from)
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    launch = plan.launch("dqk_bwd")
    _summary_dk_kernel[(triton.cdiv(K, launch.BK), NT, B * H)](
        v, dS, dz, position, log_decay, dk, T,
        H=H, K=K, V=V, BT=BT, BK=launch.BK, BV=launch.BV, IP=ip, WIDE=wide, **launch.options,
    )  # fmt: skip
    launch = plan.launch("dv_bwd")
    _summary_dv_kernel[(triton.cdiv(V, launch.BV), NT, B * H)](
        k, dS, position, log_decay, dv, T,
        H=H, K=K, V=V, BT=BT, BK=launch.BK, BV=launch.BV, IP=ip, WIDE=wide, **launch.options,
    )  # fmt: skip
    return dk, dv


# ---------------------------------------------------------------------------------------------------------
# The differentiable op (the tuning read once at the forward call and passed to both ops as ints, as in op.py)
# ---------------------------------------------------------------------------------------------------------


@torch.library.custom_op("retnet::slice_summary_fwd", mutates_args=())
def _summary_fwd_op(
    k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, position: torch.Tensor, tuning: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    plan = plan_from_ints(k.shape[-1], v.shape[-1], k.dtype, tuple(tuning), False)
    return slice_summary_fwd(k, v, log_decay, position, plan)


@_summary_fwd_op.register_fake
def _(k, v, log_decay, position, tuning):
    B, _, H, K = k.shape
    return k.new_empty(B, H, K, v.shape[-1], dtype=torch.float32), k.new_empty(B, H, K, dtype=torch.float32)


@torch.library.custom_op("retnet::slice_summary_bwd", mutates_args=())
def _summary_bwd_op(
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    position: torch.Tensor,
    dS: torch.Tensor,
    dz: torch.Tensor,
    tuning: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    plan = plan_from_ints(k.shape[-1], v.shape[-1], k.dtype, tuple(tuning), False)
    return slice_summary_bwd(k, v, log_decay, position, dS, dz, plan)


@_summary_bwd_op.register_fake
def _(k, v, log_decay, position, dS, dz, tuning):
    return torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    k, v, log_decay, position, tuning = inputs
    ctx.tuning = tuning
    ctx.save_for_backward(k, v, log_decay, position)
    ctx.set_materialize_grads(False)


def _backward(ctx, dS, dz):
    k, v, log_decay, position = ctx.saved_tensors
    B, _, H, K = k.shape
    if dS is None and dz is None:
        return None, None, None, None, None
    f32 = {"device": k.device, "dtype": torch.float32}
    dS = torch.zeros(B, H, K, v.shape[-1], **f32) if dS is None else dS.contiguous()
    dz = torch.zeros(B, H, K, **f32) if dz is None else dz.float().contiguous()
    dk, dv = _summary_bwd_op(k, v, log_decay, position, dS, dz, ctx.tuning)
    return dk, dv, None, None, None


_summary_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def slice_summary(
    k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, position: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable summary of a slice on Triton: the state (S, z) an empty start reaches after its last token.

    The launches follow :func:`~.tuning.current_tuning` (``retention_tuning``), fixed here for the backward too.

    Args:
        k: ``(B, T, H, K)`` fp16/bf16/fp32 keys (scaled by K^−½), K <= ``MAX_K``.
        v: ``(B, T, H, V)`` of k's dtype.
        log_decay: ``(H,)`` log γ (used in float32).
        position: ``(B,)`` integer absolute position of each row's first token; negative positions are left
            padding and contribute nothing.

    Returns:
        ``(S, z)``: S ``(B, H, K, V)`` and z ``(B, H, K)`` in float32; gradients flow to k and v.

    Raises:
        ValueError: K > ``MAX_K``, or a position that is not one integer per row.
    """
    B, _, _, K = k.shape
    if K > MAX_K:
        raise ValueError(f"the Triton summary kernels support K <= {MAX_K}, got K = {K}")
    if position.shape != (B,) or position.dtype.is_floating_point:
        raise ValueError(f"position must be an integer tensor of shape (B,) = ({B},), got {tuple(position.shape)}")
    return _summary_fwd_op(
        k.contiguous(), v.contiguous(), log_decay.float().contiguous(), position.long().contiguous(), tuning_ints()
    )
