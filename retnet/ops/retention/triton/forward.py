"""Chunkwise retention forward in Triton: a state scan, then a parallel output pass (paper Eq. 7; docs/spec.md §3).

Sequences are cut into chunks of ``BT`` tokens (the last may be shorter). With S_i the state after chunk i
(S_{−1} the initial state), ξ_j = γ^(j+1), ζ_j = γ^(L_i−1−j) and D the intra-chunk decay mask:

    O_i = (Q_i K_iᵀ ⊙ D) V_i + (Q_i ⊙ ξ) S_{i−1},      S_i = γ^(L_i) S_{i−1} + (K_i ⊙ ζ)ᵀ V_i,
    s_i = rowsum(Q_i K_iᵀ ⊙ D) + ξ ⊙ (Q_i z_{i−1}),    z_i = γ^(L_i) z_{i−1} + (K_i ⊙ ζ)ᵀ 1,

and each output row is scaled by r = 1 / max(|s|, √c) (docs/spec.md §3 factors 2 and 3), which is stored for the
backward pass. Kernels:

* ``_state_fwd_kernel``: the sequential scan over chunks, one program per (K block, V block, segment,
  batch·head); it writes every chunk's incoming state ``h`` (in the input dtype, a dot operand), optionally the
  incoming key sums ``zh`` and the final state. The backward pass reuses it to recompute ``h``; a launch
  without ``h`` (``STORE_H`` off) gives the final state alone (context parallelism's slice summary,
  ``summary.py``).
* ``_segment_state_kernel``: when (K blocks)·(V blocks)·batch·heads is too few programs to fill the GPU (long
  sequences, small batches), the chunks are cut into segments scanned in parallel; this pre-pass sums what each
  segment but the last adds to the state, and each segment's scan starts from the decayed sum of the earlier
  ones (and of the initial state).
* ``_output_fwd_kernel``: one program per (V block, chunk, batch·head), parallel over chunks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...triton_utils import dot_precision
from .tiles import (
    causal_tile,
    causal_values_dot,
    chunk_decays,
    nonfinite_count,
    row_ptr,
    row_scale,
    state_block,
    state_tile_step,
    token_block,
    token_block_t,
    wide_offsets,
    widen,
)
from .tuning import ChunkPlan, chunk_len, plan_segments


@triton.jit
def _segment_state_kernel(
    k, v, position, log_decay, S_seg, z_seg,
    T, SEG_NT, BH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """What segment s (all of its chunks full) adds to the state, starting from zero; not the last segment."""
    i_k, i_v, i_sbh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_s, i_bh = i_sbh // BH, i_sbh % BH
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    o_k = i_k * BK + tl.arange(0, BK)
    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    b_z = tl.zeros([BK], dtype=tl.float32)
    for i_t in range(i_s * SEG_NT, (i_s + 1) * SEG_NT):
        b_S, b_gL, b_kz = state_tile_step(k, v, b_S, lg, p0, i_b, i_h, i_k, i_v, i_t, T, H, K, V, BT, BK, BV, IP, WIDE)
        b_z = b_z * b_gL + b_kz
    p_S = state_block(S_seg, i_sbh, K, V, i_k, i_v, BK, BV, WIDE)
    tl.store(p_S, b_S, boundary_check=(0, 1))
    tl.store(z_seg + i_sbh * K + o_k, b_z, mask=(o_k < K) & (i_v == 0))


@triton.jit
def _state_fwd_kernel(
    k, v, S0, z0, S_seg, z_seg, position, log_decay, h, zh, S_out, z_out,
    T, NT, SEG_NT, BH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_S0: tl.constexpr, STORE_H: tl.constexpr, STORE_Z: tl.constexpr, STORE_FINAL: tl.constexpr,
    IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """h[i] = S_{i−1} (and zh[i] = z_{i−1}), the state entering chunk i, for the chunks of segment s; the final
    state after the last chunk. Segment s starts from γ^(s·N) S0 + Σ_{j<s} γ^((s−1−j)·N) S_seg[j], N its tokens.

    Without ``STORE_H`` only the final state is wanted: the launch has one program per (K block, V block,
    batch·head), each running the last segment only (the earlier ones come summed from the pre-pass)."""
    i_k, i_v, i_sbh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if STORE_H:
        i_s, i_bh = i_sbh // BH, i_sbh % BH
    else:
        i_s, i_bh = tl.cdiv(NT, SEG_NT) - 1, i_sbh
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    if HAS_S0:
        p_S0 = state_block(S0, i_bh, K, V, i_k, i_v, BK, BV, WIDE)
        g_s = tl.exp(lg * (i_s * SEG_NT * BT))
        b_S = tl.load(p_S0, boundary_check=(0, 1), padding_option="zero").to(tl.float32) * g_s
        b_z = tl.load(z0 + i_bh * K + o_k, mask=m_k, other=0.0).to(tl.float32) * g_s
    else:
        b_S = tl.zeros([BK, BV], dtype=tl.float32)
        b_z = tl.zeros([BK], dtype=tl.float32)
    for j in range(i_s):
        g_j = tl.exp(lg * ((i_s - 1 - j) * SEG_NT * BT))
        p_Sj = state_block(S_seg, j * BH + i_bh, K, V, i_k, i_v, BK, BV, WIDE)
        b_S += tl.load(p_Sj, boundary_check=(0, 1), padding_option="zero") * g_j
        b_z += tl.load(z_seg + (j * BH + i_bh) * K + o_k, mask=m_k, other=0.0) * g_j
    t_end = tl.minimum(NT, (i_s + 1) * SEG_NT)
    for i_t in range(i_s * SEG_NT, t_end):
        if STORE_H:
            p_h = state_block(h, i_bh * NT + i_t, K, V, i_k, i_v, BK, BV, WIDE)
            tl.store(p_h, b_S.to(p_h.dtype.element_ty), boundary_check=(0, 1))
        if STORE_Z:
            tl.store(zh + (i_bh * NT + i_t) * K + o_k, b_z, mask=m_k & (i_v == 0))
        b_S, b_gL, b_kz = state_tile_step(k, v, b_S, lg, p0, i_b, i_h, i_k, i_v, i_t, T, H, K, V, BT, BK, BV, IP, WIDE)
        b_z = b_z * b_gL + b_kz
    if STORE_FINAL and t_end == NT:
        p_S = state_block(S_out, i_bh, K, V, i_k, i_v, BK, BV, WIDE)
        tl.store(p_S, b_S.to(p_S.dtype.element_ty), boundary_check=(0, 1))
        tl.store(z_out + i_bh * K + o_k, b_z.to(z_out.dtype.element_ty), mask=m_k & (i_v == 0))


@triton.jit
def _output_fwd_kernel(
    q, k, v, h, zh, position, log_decay, o, rden,
    T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NORMALIZE: tl.constexpr, IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    o_t = i_t * BT + tl.arange(0, BT)
    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    b_qz = tl.zeros([BT], dtype=tl.float32)
    if WIDE:  # the row part of q·z's plain load of Q below, in int64
        q_rows = q + (tl.cast(i_b, tl.int64) * T + i_t * BT) * (H * K) + i_h * K + tl.arange(0, BT)[:, None] * (H * K)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        p_q = token_block(q, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
        p_kt = token_block_t(k, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
        p_h = state_block(h, i_bh * NT + i_t, K, V, i_k, i_v, BK, BV, WIDE)
        b_q = tl.load(p_q, boundary_check=(0, 1), padding_option="zero")
        b_kt = tl.load(p_kt, boundary_check=(0, 1), padding_option="zero")
        b_h = tl.load(p_h, boundary_check=(0, 1), padding_option="zero")
        # (BT, BK) @ (BK, BV) -> (BT, BV)
        b_o += tl.dot(b_q, b_h, input_precision=IP)
        # (BT, BK) @ (BK, BT) -> (BT, BT)
        b_A += tl.dot(b_q, b_kt, input_precision=IP)
        if NORMALIZE:
            # q·z from a second, plain load of Q (L1 hit): the tile feeding the dots is not reused elementwise.
            m_q = (o_t < T)[:, None] & (o_k < K)[None, :]
            if WIDE:
                b_qf = tl.load(q_rows + o_k[None, :], mask=m_q, other=0.0)
            else:
                b_qf = tl.load(q + (i_b * T + o_t[:, None]) * H * K + i_h * K + o_k[None, :], mask=m_q, other=0.0)
            b_z = tl.load(zh + (i_bh * NT + i_t) * K + o_k, mask=o_k < K, other=0.0)
            b_qz += tl.sum(b_qf.to(tl.float32) * b_z[None, :], axis=1)
    b_valid, b_xi, b_zeta, b_gL, b_D, n = chunk_decays(lg, p0, i_t, T, BT)
    b_A = tl.where(causal_tile(b_valid, BT), b_A * b_D, 0.0)  # where, not D's zeros: a non-finite key stays causal
    p_v = token_block(v, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
    b_v = tl.load(p_v, boundary_check=(0, 1), padding_option="zero")
    # (BT, BT) @ (BT, BV) -> (BT, BV)
    b_Av = tl.dot(b_A.to(b_v.dtype), b_v, input_precision=IP)
    if nonfinite_count(b_Av) > 0:
        # Rare: a non-finite value (or score) in the chunk. Its zeros times inf above the diagonal would be NaN in
        # earlier rows, so the tile is reloaded plainly (the one feeding the dot is not used elementwise) and
        # multiplied without its non-finite values.
        o_v = i_v * BV + tl.arange(0, BV)
        v_rows = row_ptr(v, i_b, i_h, T, H, V, WIDE) + widen(o_t, WIDE)[:, None] * (H * V) + o_v[None, :]
        b_vc = tl.load(v_rows, mask=(o_t < T)[:, None] & (o_v < V)[None, :], other=0.0).to(tl.float32)
        b_Av = causal_values_dot(b_A, b_vc, IP)
    b_o = b_o * b_xi[:, None] + b_Av
    b_r = row_scale(b_qz * b_xi + tl.sum(b_A, axis=1), lg, n, b_valid, NORMALIZE)
    b_o = b_o * b_r[:, None]
    p_o = token_block(o, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
    tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))
    tl.store(rden + i_bh * T + o_t, b_r, mask=(o_t < T) & (i_v == 0))


# ---------------------------------------------------------------------------------------------------------
# Launchers (blocks, warps, stages and segments come from the call's ``ChunkPlan``: ``tuning.py``)
# ---------------------------------------------------------------------------------------------------------


def state_scan(
    k, v, S0, z0, position, log_decay, BT, plan: ChunkPlan, *, store_z, store_final, ip, store_h=True, segments=None
):
    """Run the state scan with the ``state_fwd`` launch of ``plan``; returns ``(h, zh, S, z)``: h
    ``(B, H, N, K, V)`` in k's dtype (when ``store_h``; else empty), zh ``(B, H, N, K)`` float32 (when
    ``store_z``), and the final S, z in float32 (when ``store_final``; else empty). ``segments`` fixes
    ``(chunks per segment, segments)`` instead of :func:`~.tuning.plan_segments`' choice.

    Without ``store_h`` (the final state alone, ``store_final`` and not ``store_z``), every segment but the last
    is summed by the pre-pass in parallel, and one program per tile scans the last segment from their sum."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, BT)
    f32 = {"device": k.device, "dtype": torch.float32}
    if not store_h and (store_z or not store_final):
        raise ValueError("a scan without per-chunk states (store_h=False) returns the final state only")
    h = k.new_empty(B, H, NT, K, V) if store_h else k.new_empty(0)
    zh = torch.empty(B, H, NT, K, **f32) if store_z else h.new_empty(0)
    S = torch.empty(B, H, K, V, **f32) if store_final else h.new_empty(0, dtype=torch.float32)
    z = torch.empty(B, H, K, **f32) if store_final else h.new_empty(0, dtype=torch.float32)
    has_s0 = S0 is not None
    wide = wide_offsets(k.numel(), v.numel(), h.numel(), wide_from=plan.wide_from)
    launch = plan.launch("state_fwd")
    BK, BV, cfg = launch.BK, launch.BV, launch.options
    NK, NV = triton.cdiv(K, BK), triton.cdiv(V, BV)
    seg_nt, nseg = segments or plan_segments(NT, NK * NV * B * H, k.device, plan.segment_chunks)
    S_seg = z_seg = h  # unread without segments
    if nseg > 1:
        S_seg = torch.empty(nseg - 1, B * H, K, V, **f32)
        z_seg = torch.empty(nseg - 1, B * H, K, **f32)
        _segment_state_kernel[(NK, NV, (nseg - 1) * B * H)](
            k, v, position, log_decay, S_seg, z_seg, T, seg_nt, B * H,
            H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, IP=ip, WIDE=wide, **cfg,
        )  # fmt: skip
    _state_fwd_kernel[(NK, NV, (nseg if store_h else 1) * B * H)](
        k, v, S0 if has_s0 else h, z0 if has_s0 else h, S_seg, z_seg, position, log_decay, h, zh, S, z,
        T, NT, seg_nt, B * H,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, HAS_S0=has_s0, STORE_H=store_h, STORE_Z=store_z,
        STORE_FINAL=store_final, IP=ip, WIDE=wide, **cfg,
    )  # fmt: skip
    return h, zh, S, z


def chunk_retention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: torch.Tensor | None,
    z0: torch.Tensor | None,
    position: torch.Tensor,
    normalize: bool,
    store_final: bool,
    plan: ChunkPlan,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunkwise retention forward (no autograd).

    Args:
        q, k: ``(B, T, H, K)`` contiguous, fp16/bf16/fp32, K <= ``MAX_K``.
        v: ``(B, T, H, V)`` contiguous, same dtype.
        log_decay: ``(H,)`` float32 log γ.
        S0: ``(B, H, K, V)`` float32 initial state, or None for zero; z0: ``(B, H, K)`` float32 key sum, or None.
        position: ``(B,)`` int64 absolute position of each row's first token.
        normalize: fuse docs/spec.md §3 factors 2 and 3.
        store_final: compute the final state (else S and z come back empty).
        plan: the launches (:func:`~.tuning.chunk_plan`); with ``plan.keep_states`` the per-chunk states ``h`` are
            returned for the backward pass to reuse, else an empty h.

    Returns:
        ``(o, rden, S, z, h)``: o ``(B, T, H, V)`` in v's dtype; rden ``(B, H, T)`` float32, the row factor
        applied to the raw output (0 on padded rows); S ``(B, H, K, V)``, z ``(B, H, K)`` the final state in
        float32; h ``(B, H, N, K, V)`` the state entering each chunk, in k's dtype (or empty).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_len(T)
    NT = triton.cdiv(T, BT)
    ip = dot_precision(q.dtype)
    h, zh, S, z = state_scan(
        k, v, S0, z0, position, log_decay, BT, plan, store_z=normalize, store_final=store_final, ip=ip
    )  # fmt: skip
    o = torch.empty_like(v)
    rden = torch.empty(B, H, T, device=q.device, dtype=torch.float32)
    launch = plan.launch("output_fwd")
    BK, BV, cfg = launch.BK, launch.BV, launch.options
    _output_fwd_kernel[(triton.cdiv(V, BV), NT, B * H)](
        q, k, v, h, zh if normalize else rden, position, log_decay, o, rden, T, NT,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, NORMALIZE=normalize, IP=ip,
        WIDE=wide_offsets(q.numel(), v.numel(), h.numel(), wide_from=plan.wide_from), **cfg,
    )  # fmt: skip
    return o, rden, S, z, (h if plan.keep_states else h.new_empty(0))
