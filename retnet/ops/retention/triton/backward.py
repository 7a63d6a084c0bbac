"""Chunkwise retention backward in Triton (paper §2.1, Eq. 7; docs/spec.md §3): kernels and their launcher.

The forward pass is in ``forward.py`` and the differentiable op that joins the two in ``op.py``. The backward takes
the per-chunk states S_i kept by the forward or recomputes them with the forward's state scan (the plan's
``keep_states``), then (with dS_i = dL/dS_i, the normaliser's row factors r detached, so dO is scaled by r):

    dS_{i−1} = γ^L dS_i + (Q_i ⊙ ξ ⊙ r)ᵀ dO_i,
    dQ_i = ((dO_i V_iᵀ) ⊙ D ⊙ r) K_i + (ξ ⊙ r) ⊙ dO_i S_{i−1}ᵀ,
    dK_i = ((dO_i V_iᵀ) ⊙ D ⊙ r)ᵀ Q_i + ζ ⊙ V_i dS_iᵀ,
    dV_i = (Q_i K_iᵀ ⊙ D)ᵀ (r ⊙ dO_i) + ζ ⊙ K_i dS_i.

Kernels: ``_state_bwd_kernel`` (the reverse scan, per (K block, V block, segment, batch·head); writes ``dh``
and the initial state's gradient; scans with too few programs are cut into segments like the forward's, whose
own contributions ``_dstate_segment_kernel`` sums first), ``_dqk_bwd_kernel`` and ``_dv_bwd_kernel`` (per chunk,
fully parallel). All accumulation is float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...triton_utils import dot_precision
from .forward import state_scan
from .tiles import (
    chunk_decays,
    decay_mask_t,
    dstate_tile_step,
    state_block,
    state_block_t,
    token_block,
    token_block_t,
    wide_offsets,
)
from .tuning import ChunkPlan, chunk_len, plan_segments


@triton.jit
def _dstate_segment_kernel(
    q, do, rden, position, log_decay, G,
    T, NT, SEG_NT, BH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """G[s − 1] = what segment s (s >= 1) alone contributes to dL/d(state before it): its reverse scan from zero."""
    i_k, i_v, i_sbh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_s, i_bh = i_sbh // BH + 1, i_sbh % BH
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    b_dS = tl.zeros([BK, BV], dtype=tl.float32)
    t_end = tl.minimum(NT, (i_s + 1) * SEG_NT)
    for i_r in range(t_end - i_s * SEG_NT):
        i_t = t_end - 1 - i_r
        b_dS = dstate_tile_step(
            q, do, rden, b_dS, lg, p0, i_b, i_h, i_bh, i_k, i_v, i_t, T, H, K, V, BT, BK, BV, IP, WIDE
        )
    p_G = state_block(G, i_sbh, K, V, i_k, i_v, BK, BV, WIDE)
    tl.store(p_G, b_dS, boundary_check=(0, 1))


@triton.jit
def _state_bwd_kernel(
    q, do, rden, position, log_decay, dS_final, G, dh, dS0,
    T, NT, SEG_NT, BH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_DSF: tl.constexpr, STORE_DS0: tl.constexpr, IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """Reverse scan over segment s: dh[i] = dL/dS_i (state after chunk i);
    dL/dS_{i−1} = γ^L dL/dS_i + (Q_i ⊙ ξ ⊙ r)ᵀ dO_i.

    Segment s ends at token e_s and starts from γ^(T − e_s) dS_final + Σ_{j>s} γ^((j−s−1)·N) G[j − 1], N the
    tokens of a (full) segment."""
    i_k, i_v, i_sbh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_s, i_bh = i_sbh // BH, i_sbh % BH
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    t_end = tl.minimum(NT, (i_s + 1) * SEG_NT)
    if HAS_DSF:
        p_dSf = state_block(dS_final, i_bh, K, V, i_k, i_v, BK, BV, WIDE)
        g_f = tl.exp(lg * tl.maximum(T - t_end * BT, 0))  # the last segment ends at T: no decay
        b_dS = tl.load(p_dSf, boundary_check=(0, 1), padding_option="zero").to(tl.float32) * g_f
    else:
        b_dS = tl.zeros([BK, BV], dtype=tl.float32)
    n_seg = tl.cdiv(NT, SEG_NT)
    for j in range(i_s + 1, n_seg):
        g_j = tl.exp(lg * ((j - i_s - 1) * SEG_NT * BT))
        p_Gj = state_block(G, ((j - 1) * BH + i_bh), K, V, i_k, i_v, BK, BV, WIDE)
        b_dS += tl.load(p_Gj, boundary_check=(0, 1), padding_option="zero") * g_j
    for i_r in range(t_end - i_s * SEG_NT):
        i_t = t_end - 1 - i_r
        p_dh = state_block(dh, i_bh * NT + i_t, K, V, i_k, i_v, BK, BV, WIDE)
        tl.store(p_dh, b_dS.to(p_dh.dtype.element_ty), boundary_check=(0, 1))
        b_dS = dstate_tile_step(
            q, do, rden, b_dS, lg, p0, i_b, i_h, i_bh, i_k, i_v, i_t, T, H, K, V, BT, BK, BV, IP, WIDE
        )
    if STORE_DS0 and i_s == 0:
        p_dS0 = state_block(dS0, i_bh, K, V, i_k, i_v, BK, BV, WIDE)
        tl.store(p_dS0, b_dS.to(p_dS0.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def _dqk_bwd_kernel(
    q, k, v, h, dh, do, rden, position, log_decay, dq, dk,
    T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """dQ_i = ((dO_i V_iᵀ) ⊙ D) K_i + ξ ⊙ dO_i S_{i−1}ᵀ;  dK_i = ((dO_i V_iᵀ) ⊙ D)ᵀ Q_i + ζ ⊙ V_i dS_iᵀ.

    dO is scaled by the saved row factors r first.
    """
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)
    b_dAt = tl.zeros([BT, BT], dtype=tl.float32)
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        p_v = token_block(v, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
        p_vt = token_block_t(v, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
        p_do = token_block(do, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
        p_dot = token_block_t(do, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
        # Transposed (V, K) views of the (K, V) state tiles.
        p_ht = state_block_t(h, i_bh * NT + i_t, K, V, i_k, i_v, BK, BV, WIDE)
        p_dht = state_block_t(dh, i_bh * NT + i_t, K, V, i_k, i_v, BK, BV, WIDE)
        b_v = tl.load(p_v, boundary_check=(0, 1), padding_option="zero")
        b_vt = tl.load(p_vt, boundary_check=(0, 1), padding_option="zero")
        b_do = tl.load(p_do, boundary_check=(0, 1), padding_option="zero")
        b_dot = tl.load(p_dot, boundary_check=(0, 1), padding_option="zero")
        b_ht = tl.load(p_ht, boundary_check=(0, 1), padding_option="zero")
        b_dht = tl.load(p_dht, boundary_check=(0, 1), padding_option="zero")
        # (BT, BV) @ (BV, BT) -> (BT, BT); dAᵀ gets its own dot (a transposed dot result would miscompile)
        b_dA += tl.dot(b_do, b_vt, input_precision=IP)
        b_dAt += tl.dot(b_v, b_dot, input_precision=IP)
        # (BT, BV) @ (BV, BK) -> (BT, BK)
        b_dq += tl.dot(b_do, b_ht, input_precision=IP)
        # (BT, BV) @ (BV, BK) -> (BT, BK)
        b_dk += tl.dot(b_v, b_dht, input_precision=IP)
    b_valid, b_xi, b_zeta, b_gL, b_D, n = chunk_decays(lg, p0, i_t, T, BT)
    o_t = i_t * BT + tl.arange(0, BT)
    b_r = tl.load(rden + i_bh * T + o_t, mask=o_t < T, other=0.0)
    p_q = token_block(q, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
    p_k = token_block(k, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
    b_q = tl.load(p_q, boundary_check=(0, 1), padding_option="zero")
    b_k = tl.load(p_k, boundary_check=(0, 1), padding_option="zero")
    b_dA = (b_dA * b_r[:, None] * b_D).to(b_k.dtype)
    b_dAt = (b_dAt * b_r[None, :] * decay_mask_t(lg, b_valid, BT)).to(b_q.dtype)
    # (BT, BT) @ (BT, BK) -> (BT, BK)
    b_dq = b_dq * (b_xi * b_r)[:, None] + tl.dot(b_dA, b_k, input_precision=IP)
    # (BT, BT) @ (BT, BK) -> (BT, BK)
    b_dk = b_dk * b_zeta[:, None] + tl.dot(b_dAt, b_q, input_precision=IP)
    b_dk = tl.where(b_valid[:, None], b_dk, 0.0)
    p_dq = token_block(dq, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
    p_dk = token_block(dk, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
    tl.store(p_dq, b_dq.to(p_dq.dtype.element_ty), boundary_check=(0, 1))
    tl.store(p_dk, b_dk.to(p_dk.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def _dv_bwd_kernel(
    q, k, dh, do, rden, position, log_decay, dv,
    T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """dV_i = (Q_i K_iᵀ ⊙ D)ᵀ (r ⊙ dO_i) + (K_i ⊙ ζ) dS_i."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    b_At = tl.zeros([BT, BT], dtype=tl.float32)
    b_dv = tl.zeros([BT, BV], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        p_k = token_block(k, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
        p_qt = token_block_t(q, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
        p_dh = state_block(dh, i_bh * NT + i_t, K, V, i_k, i_v, BK, BV, WIDE)
        b_k = tl.load(p_k, boundary_check=(0, 1), padding_option="zero")
        b_qt = tl.load(p_qt, boundary_check=(0, 1), padding_option="zero")
        b_dh = tl.load(p_dh, boundary_check=(0, 1), padding_option="zero")
        # (BT, BK) @ (BK, BT) -> (BT, BT)
        b_At += tl.dot(b_k, b_qt, input_precision=IP)
        # (BT, BK) @ (BK, BV) -> (BT, BV)
        b_dv += tl.dot(b_k, b_dh, input_precision=IP)
    b_valid, b_xi, b_zeta, b_gL, b_D, n = chunk_decays(lg, p0, i_t, T, BT)
    o_t = i_t * BT + tl.arange(0, BT)
    b_r = tl.load(rden + i_bh * T + o_t, mask=o_t < T, other=0.0)
    p_do = token_block(do, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
    b_do = tl.load(p_do, boundary_check=(0, 1), padding_option="zero")
    b_At = (b_At * decay_mask_t(lg, b_valid, BT) * b_r[None, :]).to(b_do.dtype)
    # (BT, BT) @ (BT, BV) -> (BT, BV)
    b_dv = b_dv * b_zeta[:, None] + tl.dot(b_At, b_do, input_precision=IP)
    b_dv = tl.where(b_valid[:, None], b_dv, 0.0)
    p_dv = token_block(dv, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
    tl.store(p_dv, b_dv.to(p_dv.dtype.element_ty), boundary_check=(0, 1))


# ---------------------------------------------------------------------------------------------------------
# Launcher (blocks, warps, stages and segments come from the forward call's ``ChunkPlan``)
# ---------------------------------------------------------------------------------------------------------


def chunk_retention_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: torch.Tensor | None,
    position: torch.Tensor,
    rden: torch.Tensor,
    do: torch.Tensor,
    dS: torch.Tensor | None,
    h: torch.Tensor | None,
    plan: ChunkPlan,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunkwise retention backward: gradients of q, k, v and the initial state S (the normaliser is detached).

    Args:
        q, k, v, log_decay, position: as for :func:`~.forward.chunk_retention_fwd`.
        S0: ``(B, H, K, V)`` float32 initial state, or None (zero, and no gradient wanted).
        rden: ``(B, H, T)`` row factors saved by the forward pass.
        do: ``(B, T, H, V)`` gradient of the output.
        dS: ``(B, H, K, V)`` gradient of the final state S, or None.
        h: the per-chunk states kept by the forward pass, or None to recompute them.
        plan: the forward call's launches.

    Returns:
        ``(dq, dk, dv, dS0)`` with the dtypes and shapes of q, k, v and S0 (dS0 empty when S0 is None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_len(T)
    NT = triton.cdiv(T, BT)
    ip = dot_precision(q.dtype)
    has_s0 = S0 is not None
    if h is None:
        z0 = S0.new_zeros(B, H, K) if has_s0 else None
        h, _, _, _ = state_scan(k, v, S0, z0, position, log_decay, BT, plan, store_z=False, store_final=False, ip=ip)
    dh = torch.empty_like(h)
    wide = wide_offsets(q.numel(), v.numel(), h.numel(), wide_from=plan.wide_from)
    dS0 = torch.empty_like(S0) if has_s0 else rden.new_empty(0)
    launch = plan.launch("state_bwd")
    BK, BV, cfg = launch.BK, launch.BV, launch.options
    NK, NV = triton.cdiv(K, BK), triton.cdiv(V, BV)
    seg_nt, nseg = plan_segments(NT, NK * NV * B * H, q.device, plan.segment_chunks)
    G = dh  # unread without segments
    if nseg > 1:
        G = torch.empty(nseg - 1, B * H, K, V, device=q.device, dtype=torch.float32)
        _dstate_segment_kernel[(NK, NV, (nseg - 1) * B * H)](
            q, do, rden, position, log_decay, G, T, NT, seg_nt, B * H,
            H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, IP=ip, WIDE=wide, **cfg,
        )  # fmt: skip
    _state_bwd_kernel[(NK, NV, nseg * B * H)](
        q, do, rden, position, log_decay, dS if dS is not None else dh, G, dh, dS0, T, NT, seg_nt, B * H,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, HAS_DSF=dS is not None, STORE_DS0=has_s0, IP=ip, WIDE=wide, **cfg,
    )  # fmt: skip
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    launch = plan.launch("dqk_bwd")
    BK, BV, cfg = launch.BK, launch.BV, launch.options
    _dqk_bwd_kernel[(triton.cdiv(K, BK), NT, B * H)](
        q, k, v, h, dh, do, rden, position, log_decay, dq, dk, T, NT,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, IP=ip, WIDE=wide, **cfg,
    )  # fmt: skip
    launch = plan.launch("dv_bwd")
    BK, BV, cfg = launch.BK, launch.BV, launch.options
    _dv_bwd_kernel[(triton.cdiv(V, BV), NT, B * H)](
        q, k, dh, do, rden, position, log_decay, dv, T, NT,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, IP=ip, WIDE=wide, **cfg,
    )  # fmt: skip
    return dq, dk, dv, dS0
