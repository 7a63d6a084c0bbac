"""Chunkwise retention in Triton: the backward pass and the differentiable op (paper §2.1, Eq. 7; SPEC §3).

The forward pass lives in ``chunkwise_forward.py`` (one fused pass that keeps the state on chip). The backward
recomputes the per-chunk states S_i and runs the reverse scan of their gradients, with chunks of ``BT``
tokens, S_i the state after chunk i (S_{−1} the initial state), ξ_j = γ^(j+1), ζ_j = γ^(L_i−1−j) and D the
intra-chunk decay mask:

    O_i = (Q_i K_iᵀ ⊙ D) V_i + (Q_i ⊙ ξ) S_{i−1},      S_i = γ^(L_i) S_{i−1} + (K_i ⊙ ζ)ᵀ V_i.

The normaliser's row factors r (saved by the forward) are detached, so dO is scaled by r and the rest is the
gradient of the raw output. Kernels:

* ``_state_fwd_kernel``: the forward scan, one program per (K block, V block, batch·head); it writes every
  chunk's incoming state ``h`` in the input dtype (a dot operand).
* ``_dstate_dv_bwd_kernel``: the reverse scan of dS_i = dL/dS_i with the full-K slice dS[:, V block] in
  registers, computing dV on the way and writing ``dh`` (and d initial state); like the forward, it splits long
  sequences into segments, whose starting gradients ``_dstate_segment_kernel`` sums first.
* ``_dqk_bwd_kernel``: dQ and dK per chunk from ``h`` and ``dh`` (both contract over V).

All accumulation is float32. Tokens at negative absolute positions (left padding) act as k = v = 0 and
produce o = 0.
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from ..triton_utils import dot_precision
from .chunkwise_forward import (
    FUSED_MAX_K,
    block_size,
    chunk_len,
    chunk_retention_fwd,
    fused_block,
    plan_segments,
)
from .kernel_common import chunk_decays, decay_mask_t, state_tile_step

# ---------------------------------------------------------------------------------------------------------
# Backward kernels
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _state_fwd_kernel(
    k, v, S0, position, log_decay, h,
    T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_S0: tl.constexpr, IP: tl.constexpr,
):  # fmt: skip
    """h[i] = S_{i−1}, the state entering chunk i (the backward's recompute of the forward scan)."""
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    if HAS_S0:
        p_S0 = tl.make_block_ptr(S0 + i_bh * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_S = tl.load(p_S0, boundary_check=(0, 1), padding_option="zero").to(tl.float32)
    else:
        b_S = tl.zeros([BK, BV], dtype=tl.float32)
    for i_t in range(NT):
        p_h = tl.make_block_ptr(h + (i_bh * NT + i_t) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_h, b_S.to(p_h.dtype.element_ty), boundary_check=(0, 1))
        b_S, _, _ = state_tile_step(k, v, b_S, lg, p0, i_b, i_h, i_k, i_v, i_t, T, H, K, V, BT, BK, BV, IP)


@triton.jit
def _dstate_segment_kernel(
    q, do, rden, position, log_decay, G,
    T, NT, SEG_NT, BH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr,
):  # fmt: skip
    """G_s = dL/dS at the start of segment s + 1 from that segment's own outputs (reverse scan from zero).

    G_s = Σ_{i in segment s+1} γ^(start_i − start_seg) (Q_i ⊙ ξ ⊙ r)ᵀ dO_i; segment 0 needs no G.
    """
    i_k, i_v, i_sbh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_s, i_bh = i_sbh // BH + 1, i_sbh % BH
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    b_dS = tl.zeros([BK, BV], dtype=tl.float32)
    t_first = i_s * SEG_NT
    t_last = tl.minimum((i_s + 1) * SEG_NT, NT) - 1
    for i_r in range(0, t_last - t_first + 1):
        i_t = t_last - i_r
        b_valid, b_xi, b_zeta, b_gL, b_D, n = chunk_decays(lg, p0, i_t, T, BT)
        o_t = i_t * BT + tl.arange(0, BT)
        b_r = tl.load(rden + i_bh * T + o_t, mask=o_t < T, other=0.0)
        p_qt = tl.make_block_ptr(
            q + i_b * T * H * K + i_h * K, (K, T), (1, H * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1)
        )
        p_do = tl.make_block_ptr(
            do + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0)
        )
        b_qt = tl.load(p_qt, boundary_check=(0, 1), padding_option="zero").to(tl.float32) * (b_xi * b_r)[None, :]
        b_do = tl.load(p_do, boundary_check=(0, 1), padding_option="zero")
        # (BK, BT) @ (BT, BV) -> (BK, BV)
        b_dS = b_dS * b_gL + tl.dot(b_qt.to(b_do.dtype), b_do, input_precision=IP)
    p_G = tl.make_block_ptr(G + i_sbh * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
    tl.store(p_G, b_dS, boundary_check=(0, 1))


@triton.jit
def _dstate_dv_bwd_kernel(
    q, k, do, rden, dS_final, G, position, log_decay, dh, dv, dS0,
    T, NT, SEG_NT, BH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_DSF: tl.constexpr, STORE_DS0: tl.constexpr, IP: tl.constexpr,
):  # fmt: skip
    """The reverse scan of dS_i = dL/dS_i with dV on the fly; one program per (V block, segment, batch·head).

    dS_{i−1} = γ^L dS_i + (Q_i ⊙ ξ ⊙ r)ᵀ dO_i,   dV_i = ζ ⊙ (K_i dS_i) + (Q_i K_iᵀ ⊙ D)ᵀ (r ⊙ dO_i).
    The full-K slice dS[:, V block] stays in registers; dh[i] = dS_i is written for the dQ/dK kernel.
    """
    i_v, i_s, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    n_seg = tl.num_programs(1)
    seg_len = SEG_NT * BT * 1.0
    # dL/dS after this segment: the decayed final-state gradient plus each later segment's share.
    b_dS = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DSF:
        p_dSf = tl.make_block_ptr(dS_final + i_bh * K * V, (K, V), (V, 1), (0, i_v * BV), (BK, BV), (1, 0))
        tail = tl.maximum(T - (i_s + 1) * seg_len, 0.0)
        b_dS = tl.load(p_dSf, boundary_check=(0, 1), padding_option="zero").to(tl.float32) * tl.exp(lg * tail)
    for j in range(i_s + 1, n_seg):
        p_G = tl.make_block_ptr(G + ((j - 1) * BH + i_bh) * K * V, (K, V), (V, 1), (0, i_v * BV), (BK, BV), (1, 0))
        b_dS += tl.load(p_G, boundary_check=(0, 1), padding_option="zero") * tl.exp(lg * ((j - i_s - 1) * seg_len))
    t_first = i_s * SEG_NT
    t_last = tl.minimum((i_s + 1) * SEG_NT, NT) - 1
    for i_r in range(0, t_last - t_first + 1):
        i_t = t_last - i_r
        p_dh = tl.make_block_ptr(dh + (i_bh * NT + i_t) * K * V, (K, V), (V, 1), (0, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_dh, b_dS.to(p_dh.dtype.element_ty), boundary_check=(0, 1))
        b_valid, b_xi, b_zeta, b_gL, b_D, n = chunk_decays(lg, p0, i_t, T, BT)
        o_t = i_t * BT + tl.arange(0, BT)
        b_r = tl.load(rden + i_bh * T + o_t, mask=o_t < T, other=0.0)
        p_qt = tl.make_block_ptr(q + i_b * T * H * K + i_h * K, (K, T), (1, H * K), (0, i_t * BT), (BK, BT), (0, 1))
        p_k = tl.make_block_ptr(k + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, 0), (BT, BK), (1, 0))
        p_do = tl.make_block_ptr(
            do + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0)
        )
        b_qt = tl.load(p_qt, boundary_check=(0, 1), padding_option="zero")
        b_k = tl.load(p_k, boundary_check=(0, 1), padding_option="zero")
        b_do = tl.load(p_do, boundary_check=(0, 1), padding_option="zero")
        # (BT, BK) @ (BK, BT) -> (BT, BT): Aᵀ = (Q Kᵀ ⊙ D)ᵀ, with r folded into its columns
        b_At = tl.dot(b_k, b_qt, input_precision=IP) * decay_mask_t(lg, b_valid, BT) * b_r[None, :]
        # (BT, BK) @ (BK, BV) -> (BT, BV)
        b_dv = tl.dot(b_k, b_dS.to(b_k.dtype), input_precision=IP) * b_zeta[:, None]
        # (BT, BT) @ (BT, BV) -> (BT, BV)
        b_dv += tl.dot(b_At.to(b_do.dtype), b_do, input_precision=IP)
        b_dv = tl.where(b_valid[:, None], b_dv, 0.0)
        p_dv = tl.make_block_ptr(
            dv + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0)
        )
        tl.store(p_dv, b_dv.to(p_dv.dtype.element_ty), boundary_check=(0, 1))
        b_dos = tl.load(p_do, boundary_check=(0, 1), padding_option="zero").to(tl.float32) * (b_xi * b_r)[:, None]
        b_dos = b_dos.to(b_do.dtype)
        # (BK, BT) @ (BT, BV) -> (BK, BV)
        b_dS = b_dS * b_gL + tl.dot(b_qt, b_dos, input_precision=IP)
    if STORE_DS0:
        if i_s == 0:
            p_dS0 = tl.make_block_ptr(dS0 + i_bh * K * V, (K, V), (V, 1), (0, i_v * BV), (BK, BV), (1, 0))
            tl.store(p_dS0, b_dS.to(p_dS0.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def _dqk_bwd_kernel(
    q, k, v, h, dh, do, rden, position, log_decay, dq, dk,
    T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr,
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
        p_v = tl.make_block_ptr(
            v + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0)
        )
        p_vt = tl.make_block_ptr(
            v + i_b * T * H * V + i_h * V, (V, T), (1, H * V), (i_v * BV, i_t * BT), (BV, BT), (0, 1)
        )
        p_do = tl.make_block_ptr(
            do + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0)
        )
        p_dot = tl.make_block_ptr(
            do + i_b * T * H * V + i_h * V, (V, T), (1, H * V), (i_v * BV, i_t * BT), (BV, BT), (0, 1)
        )
        # Transposed (V, K) views of the (K, V) state tiles.
        p_ht = tl.make_block_ptr(h + (i_bh * NT + i_t) * K * V, (V, K), (1, V), (i_v * BV, i_k * BK), (BV, BK), (0, 1))
        p_dht = tl.make_block_ptr(
            dh + (i_bh * NT + i_t) * K * V, (V, K), (1, V), (i_v * BV, i_k * BK), (BV, BK), (0, 1)
        )
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
    p_q = tl.make_block_ptr(q + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    p_k = tl.make_block_ptr(k + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    b_q = tl.load(p_q, boundary_check=(0, 1), padding_option="zero")
    b_k = tl.load(p_k, boundary_check=(0, 1), padding_option="zero")
    b_dA = (b_dA * b_r[:, None] * b_D).to(b_k.dtype)
    b_dAt = (b_dAt * b_r[None, :] * decay_mask_t(lg, b_valid, BT)).to(b_q.dtype)
    # (BT, BT) @ (BT, BK) -> (BT, BK)
    b_dq = b_dq * (b_xi * b_r)[:, None] + tl.dot(b_dA, b_k, input_precision=IP)
    # (BT, BT) @ (BT, BK) -> (BT, BK)
    b_dk = b_dk * b_zeta[:, None] + tl.dot(b_dAt, b_q, input_precision=IP)
    b_dk = tl.where(b_valid[:, None], b_dk, 0.0)
    p_dq = tl.make_block_ptr(dq + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    p_dk = tl.make_block_ptr(dk + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    tl.store(p_dq, b_dq.to(p_dq.dtype.element_ty), boundary_check=(0, 1))
    tl.store(p_dk, b_dk.to(p_dk.dtype.element_ty), boundary_check=(0, 1))


# ---------------------------------------------------------------------------------------------------------
# Launch configuration
# ---------------------------------------------------------------------------------------------------------

# Block sizes per backward kernel: the configuration verified and timed on an H200 (docs/benchmarks); a
# sweep (benchmarks/ops.py --sweep) may find better ones, which must then pass the GPU tests. Values:
# (BK cap, BV cap, num_warps, num_stages); BK / BV are min(cap, next power of two of K / V), at least
# ``MIN_BLOCK`` on the GPU.
BLOCK_TABLE: dict[str, tuple[int, int, int, int]] = {
    "state_fwd": (64, 64, 4, 3),
    "dstate_segment": (64, 64, 4, 3),
    "dqk_bwd": (64, 64, 4, 3),
}
# Keyed by the padded key dim: (BV, num_warps, num_stages) of the reverse scan with dV (as ``FUSED_TABLE``).
DSTATE_DV_TABLE: dict[int, tuple[int, int, int]] = {
    16: (64, 4, 2),
    32: (64, 4, 2),
    64: (64, 4, 2),
    128: (64, 8, 2),
    256: (64, 8, 2),
}
BWD_CHUNK = 64
"""Chunk length of the backward kernels (a tuning choice: every chunk length computes the same function)."""


def _launch_cfg(name: str, K: int, V: int) -> tuple[int, int, dict]:
    bk, bv, warps, stages = BLOCK_TABLE[name]
    return block_size(K, bk), block_size(V, bv), {"num_warps": warps, "num_stages": stages}


# ---------------------------------------------------------------------------------------------------------
# Host wrapper of the backward
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunkwise retention backward: gradients of q, k, v and the initial state S (the normaliser is detached).

    Args:
        q, k, v, log_decay, position: as for :func:`chunk_retention_fwd`.
        S0: ``(B, H, K, V)`` float32 initial state, or None (zero, and no gradient wanted).
        rden: ``(B, H, T)`` row factors saved by the forward pass.
        do: ``(B, T, H, V)`` gradient of the output.
        dS: ``(B, H, K, V)`` gradient of the final state S, or None.

    Returns:
        ``(dq, dk, dv, dS0)`` with the dtypes and shapes of q, k, v and S0 (dS0 empty when S0 is None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_len(T, BWD_CHUNK)
    NT = triton.cdiv(T, BT)
    ip = dot_precision(q.dtype)
    has_s0 = S0 is not None
    h = k.new_empty(B, H, NT, K, V)
    BK, BV, cfg = _launch_cfg("state_fwd", K, V)
    _state_fwd_kernel[(triton.cdiv(K, BK), triton.cdiv(V, BV), B * H)](
        k, v, S0 if has_s0 else h, position, log_decay, h, T, NT,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, HAS_S0=has_s0, IP=ip, **cfg,
    )  # fmt: skip
    dh = torch.empty_like(h)
    dv = torch.empty_like(v)
    dS0 = torch.empty_like(S0) if has_s0 else rden.new_empty(0)
    BKf, BV, cfg = fused_block(K, V, DSTATE_DV_TABLE, q.dtype)
    n_vb = triton.cdiv(V, BV)
    seg_nt, nseg = plan_segments(NT, n_vb * B * H, q.device)
    G = rden  # unread unless there are segments
    if nseg > 1:
        G = torch.empty(nseg - 1, B * H, K, V, device=q.device, dtype=torch.float32)
        BK, BVs, scfg = _launch_cfg("dstate_segment", K, V)
        _dstate_segment_kernel[(triton.cdiv(K, BK), triton.cdiv(V, BVs), (nseg - 1) * B * H)](
            q, do, rden, position, log_decay, G, T, NT, seg_nt, B * H,
            H=H, K=K, V=V, BT=BT, BK=BK, BV=BVs, IP=ip, **scfg,
        )  # fmt: skip
    _dstate_dv_bwd_kernel[(n_vb, nseg, B * H)](
        q, k, do, rden, dS if dS is not None else dh, G, position, log_decay, dh, dv, dS0, T, NT, seg_nt, B * H,
        H=H, K=K, V=V, BT=BT, BK=BKf, BV=BV, HAS_DSF=dS is not None, STORE_DS0=has_s0, IP=ip, **cfg,
    )  # fmt: skip
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    BK, BV, cfg = _launch_cfg("dqk_bwd", K, V)
    _dqk_bwd_kernel[(triton.cdiv(K, BK), NT, B * H)](
        q, k, v, h, dh, do, rden, position, log_decay, dq, dk, T, NT,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, IP=ip, **cfg,
    )  # fmt: skip
    return dq, dk, dv, dS0


# ---------------------------------------------------------------------------------------------------------
# torch.library custom ops (so torch.compile traces through without graph breaks) and autograd
# ---------------------------------------------------------------------------------------------------------


@torch.library.custom_op("retnet::chunk_retention_fwd", mutates_args=())
def _chunk_fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: Optional[torch.Tensor],  # noqa: UP045 (custom_op schema inference)
    z0: Optional[torch.Tensor],  # noqa: UP045
    position: torch.Tensor,
    normalize: bool,
    store_final: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return chunk_retention_fwd(q, k, v, log_decay, S0, z0, position, normalize, store_final)


@_chunk_fwd_op.register_fake
def _(q, k, v, log_decay, S0, z0, position, normalize, store_final):
    B, T, H, K = q.shape
    V = v.shape[-1]
    rden = q.new_empty(B, H, T, dtype=torch.float32)
    if not store_final:
        return torch.empty_like(v), rden, rden.new_empty(0), rden.new_empty(0)
    return torch.empty_like(v), rden, rden.new_empty(B, H, K, V), rden.new_empty(B, H, K)


@torch.library.custom_op("retnet::chunk_retention_bwd", mutates_args=())
def _chunk_bwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: Optional[torch.Tensor],  # noqa: UP045
    position: torch.Tensor,
    rden: torch.Tensor,
    do: torch.Tensor,
    dS: Optional[torch.Tensor],  # noqa: UP045
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return chunk_retention_bwd(q, k, v, log_decay, S0, position, rden, do, dS)


@_chunk_bwd_op.register_fake
def _(q, k, v, log_decay, S0, position, rden, do, dS):
    dS0 = torch.empty_like(S0) if S0 is not None else rden.new_empty(0)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dS0


def _setup_context(ctx, inputs, output):
    q, k, v, log_decay, S0, z0, position, normalize, store_final = inputs
    _, rden, _, _ = output
    ctx.has_s0 = S0 is not None
    ctx.save_for_backward(q, k, v, log_decay, S0 if S0 is not None else rden.new_empty(0), position, rden)
    ctx.mark_non_differentiable(rden, output[3])


def _backward(ctx, do, d_rden, dS, dz):
    q, k, v, log_decay, S0, position, rden = ctx.saved_tensors
    S0 = S0 if ctx.has_s0 else None
    dS = None if dS is None or dS.numel() == 0 else dS.float().contiguous()
    dq, dk, dv, dS0 = _chunk_bwd_op(q, k, v, log_decay, S0, position, rden, do.contiguous(), dS)
    return dq, dk, dv, None, (dS0 if ctx.has_s0 else None), None, None, None, None


_chunk_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: torch.Tensor | None,
    z0: torch.Tensor | None,
    position: torch.Tensor,
    normalize: bool = True,
    output_final_state: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differentiable chunkwise retention on Triton (the kernels' version of ``chunkwise_ref``'s arithmetic).

    Args:
        q, k: ``(B, T, H, K)`` fp16/bf16/fp32 (k already scaled by K^−½), K <= ``FUSED_MAX_K``.
        v: ``(B, T, H, V)`` same dtype.
        log_decay: ``(H,)`` float32 log γ.
        S0: ``(B, H, K, V)`` float32 initial state (gradients flow to it), or None for an empty state.
        z0: ``(B, H, K)`` float32 initial key sum (no gradient: the normaliser is detached); None with S0 None.
        position: ``(B,)`` int64 absolute position of the first token; negative positions are left padding.
        normalize: apply SPEC §3 factors 2 and 3.
        output_final_state: compute the final state (else S and z come back as empty tensors).

    Returns:
        ``(o, S, z)``: o ``(B, T, H, V)`` in v's dtype; final state S and z in float32.

    Raises:
        ValueError: K > ``FUSED_MAX_K``.
    """
    if q.shape[-1] > FUSED_MAX_K:
        raise ValueError(f"the Triton chunkwise kernels support K <= {FUSED_MAX_K}, got K = {q.shape[-1]}")
    if (S0 is None) != (z0 is None):
        raise ValueError("S0 and z0 must both be given or both be None")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if S0 is not None:
        S0, z0 = S0.float().contiguous(), z0.float().contiguous()
    o, _, S, z = _chunk_fwd_op(
        q, k, v, log_decay.float().contiguous(), S0, z0, position.long().contiguous(), normalize,
        output_final_state,
    )  # fmt: skip
    return o, S, z
