"""Chunkwise retention forward in Triton: one fused pass, the state kept on chip (paper Eq. 7; SPEC §3).

Each program owns one (batch·head, V block of BV columns, segment of chunks) and walks its chunks in order,
holding the full-K state slice S[:, V block] (float32) and the key sum z in registers. Per chunk i of length
L, with ξ_j = γ^(j+1), ζ_j = γ^(L−1−j) and D the intra-chunk decay mask:

    O_i = (Q_i K_iᵀ ⊙ D) V_i + (Q_i ⊙ ξ) S_{i−1},      S_i = γ^L S_{i−1} + K_iᵀ (ζ ⊙ V_i),
    s_i = rowsum(Q_i K_iᵀ ⊙ D) + ξ ⊙ (Q_i z_{i−1}),    z_i = γ^L z_{i−1} + K_iᵀ ζ,

and the output row is scaled by r = 1 / max(|s|, √c) (SPEC §3 factors 2 and 3), which is also stored for
the backward pass. Per-chunk states are never written to memory, so the pass reads q, k, v once and writes o.

When (batch·head × V blocks) alone cannot fill the GPU (long T, small batch), the chunks are split into
segments run in parallel: :func:`_segment_state_kernel` first sums each full segment's own contribution to
the state (from zero), and each segment's program starts from the decayed sum of the earlier segments.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..triton_utils import dot_precision, interpreter_active, next_power_of_2
from .kernel_common import chunk_decays, row_scale, state_tile_step


@triton.jit
def _segment_state_kernel(
    k, v, position, log_decay, S_seg, z_seg,
    T, SEG_NT, BH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr,
):  # fmt: skip
    """Contribution of segment s (all chunks full) to the state after it, starting from zero."""
    i_k, i_v, i_sbh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_s, i_bh = i_sbh // BH, i_sbh % BH
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    o_k = i_k * BK + tl.arange(0, BK)
    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    b_z = tl.zeros([BK], dtype=tl.float32)
    for i_t in range(i_s * SEG_NT, (i_s + 1) * SEG_NT):
        b_S, b_gL, b_kz = state_tile_step(k, v, b_S, lg, p0, i_b, i_h, i_k, i_v, i_t, T, H, K, V, BT, BK, BV, IP)
        b_z = b_z * b_gL + b_kz
    p_S = tl.make_block_ptr(S_seg + i_sbh * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
    tl.store(p_S, b_S, boundary_check=(0, 1))
    tl.store(z_seg + i_sbh * K + o_k, b_z, mask=(o_k < K) & (i_v == 0))


@triton.jit
def _fused_fwd_kernel(
    q, k, v, S0, z0, S_seg, z_seg, position, log_decay, o, rden, S_out, z_out,
    T, NT, SEG_NT, BH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_S0: tl.constexpr, NORMALIZE: tl.constexpr, STORE_FINAL: tl.constexpr, IP: tl.constexpr,
):  # fmt: skip
    i_v, i_s, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    seg_len = SEG_NT * BT * 1.0
    # The state entering this segment: the decayed initial state plus every earlier (full) segment's share.
    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    b_z = tl.zeros([BK], dtype=tl.float32)
    if HAS_S0:
        d0 = tl.exp(lg * (i_s * seg_len))
        p_S0 = tl.make_block_ptr(S0 + i_bh * K * V, (K, V), (V, 1), (0, i_v * BV), (BK, BV), (1, 0))
        b_S = tl.load(p_S0, boundary_check=(0, 1), padding_option="zero").to(tl.float32) * d0
        b_z = tl.load(z0 + i_bh * K + o_k, mask=m_k, other=0.0).to(tl.float32) * d0
    for j in range(0, i_s):
        dj = tl.exp(lg * ((i_s - 1 - j) * seg_len))
        p_Sj = tl.make_block_ptr(S_seg + (j * BH + i_bh) * K * V, (K, V), (V, 1), (0, i_v * BV), (BK, BV), (1, 0))
        b_S += tl.load(p_Sj, boundary_check=(0, 1), padding_option="zero") * dj
        b_z += tl.load(z_seg + (j * BH + i_bh) * K + o_k, mask=m_k, other=0.0) * dj
    for i_t in range(i_s * SEG_NT, tl.minimum((i_s + 1) * SEG_NT, NT)):
        b_valid, b_xi, b_zeta, b_gL, b_D, n = chunk_decays(lg, p0, i_t, T, BT)
        o_tk = i_t * BT + tl.arange(0, BT)
        m_tk = (o_tk < T)[:, None] & m_k[None, :]
        p_q = tl.make_block_ptr(q + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, 0), (BT, BK), (1, 0))
        p_kt = tl.make_block_ptr(k + i_b * T * H * K + i_h * K, (K, T), (1, H * K), (0, i_t * BT), (BK, BT), (0, 1))
        p_v = tl.make_block_ptr(
            v + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0)
        )
        b_q = tl.load(p_q, boundary_check=(0, 1), padding_option="zero")
        b_kt = tl.load(p_kt, boundary_check=(0, 1), padding_option="zero")
        b_v = tl.load(p_v, boundary_check=(0, 1), padding_option="zero")
        # (BT, BK) @ (BK, BT) -> (BT, BT)
        b_A = tl.dot(b_q, b_kt, input_precision=IP) * b_D
        # (BT, BK) @ (BK, BV) -> (BT, BV)
        b_o = tl.dot(b_q, b_S.to(b_q.dtype), input_precision=IP) * b_xi[:, None]
        # (BT, BT) @ (BT, BV) -> (BT, BV)
        b_o += tl.dot(b_A.to(b_v.dtype), b_v, input_precision=IP)
        if NORMALIZE:
            # q·z from a second, plain load of Q (L1/L2 hit): the tile feeding the dots is not reused elementwise.
            b_qf = tl.load(q + (i_b * T + o_tk[:, None]) * H * K + i_h * K + o_k[None, :], mask=m_tk, other=0.0)
            b_s = tl.sum(b_qf.to(tl.float32) * b_z[None, :], axis=1) * b_xi + tl.sum(b_A, axis=1)
        else:
            b_s = tl.zeros([BT], dtype=tl.float32)
        b_r = row_scale(b_s, lg, n, b_valid, NORMALIZE)
        b_o = b_o * b_r[:, None]
        p_o = tl.make_block_ptr(
            o + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0)
        )
        tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))
        tl.store(rden + i_bh * T + o_tk, b_r, mask=(o_tk < T) & (i_v == 0))
        # ζ on V's rows (BT × BV) rather than on K's (BT × BK): the same product, fewer multiplies; V loaded again.
        b_vz = tl.load(p_v, boundary_check=(0, 1), padding_option="zero").to(tl.float32) * b_zeta[:, None]
        b_vz = b_vz.to(b_v.dtype)
        # (BK, BT) @ (BT, BV) -> (BK, BV)
        b_S = b_S * b_gL + tl.dot(b_kt, b_vz, input_precision=IP)
        # Kᵀ ζ from a plain load of K, for the same reason as q·z.
        b_kf = tl.load(k + (i_b * T + o_tk[:, None]) * H * K + i_h * K + o_k[None, :], mask=m_tk, other=0.0)
        b_z = b_z * b_gL + tl.sum(b_kf.to(tl.float32) * b_zeta[:, None], axis=0)
    if STORE_FINAL:
        if i_s == tl.num_programs(1) - 1:
            p_S = tl.make_block_ptr(S_out + i_bh * K * V, (K, V), (V, 1), (0, i_v * BV), (BK, BV), (1, 0))
            tl.store(p_S, b_S.to(p_S.dtype.element_ty), boundary_check=(0, 1))
            tl.store(z_out + i_bh * K + o_k, b_z.to(z_out.dtype.element_ty), mask=m_k & (i_v == 0))


# ---------------------------------------------------------------------------------------------------------
# Launch configuration
# ---------------------------------------------------------------------------------------------------------

FUSED_MAX_K = 256
"""Largest key dim the fused pass holds in registers (the full K × BV state slice); larger K is refused."""

# Keyed by the padded key dim BK: (BV, num_warps, num_stages) of the fused pass. BV = 64 is the only width that
# compiled correctly on sm90 (see MIN_BLOCK); warps and stages are the configuration verified and timed on an H200.
FUSED_TABLE: dict[int, tuple[int, int, int]] = {
    16: (64, 4, 2),
    32: (64, 4, 2),
    64: (64, 4, 2),
    128: (64, 8, 2),
    256: (64, 8, 2),
}
SEGMENT_TABLE: tuple[int, int, int, int] = (64, 64, 4, 2)
"""(BK, BV, num_warps, num_stages) of the segment pre-pass."""
MIN_SEGMENT_CHUNKS = 4
"""Shortest segment worth its pre-pass; below it, a (batch·head, V block) keeps the whole sequence."""
FORCE_SEGMENT_CHUNKS: int | None = None
"""Fix the segment length in chunks (tests use it to exercise segments at small shapes); None picks it."""


MIN_BLOCK = 64
"""Smallest K or V block on the GPU. On sm90 (Triton 3.6) dots with an operand loaded transposed miscompiled
(illegal shared-memory reads, wrong sums) at 32- and 128-wide blocks in these kernels; 64 was right in every
case tried, so smaller head dims are padded up to it and ``FUSED_TABLE`` keeps BV = 64."""


def chunk_len(T: int, cap: int = 64) -> int:
    """Chunk length of the kernels for a sequence of T tokens, at most ``cap`` (the result does not depend on it)."""
    return min(cap, max(16, next_power_of_2(T)))


def block_size(dim: int, cap: int) -> int:
    """Block width over a head dim: its next power of two, at most ``cap`` and at least ``MIN_BLOCK`` on the GPU.

    Under Triton's interpreter, which pays per program rather than per element, the widest block up to 128.
    """
    if interpreter_active():
        return min(128, max(16, next_power_of_2(dim)))
    return max(MIN_BLOCK, min(cap, next_power_of_2(dim)))


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _target_programs(device: torch.device) -> int:
    if interpreter_active() or device.type != "cuda":
        return 1
    return 2 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def plan_segments(NT: int, programs_per_segment: int, device: torch.device) -> tuple[int, int]:
    """(chunks per segment, number of segments) so that the fused pass has enough programs to fill the GPU."""
    if FORCE_SEGMENT_CHUNKS is not None:
        seg_nt = max(1, min(FORCE_SEGMENT_CHUNKS, NT))
        return seg_nt, triton.cdiv(NT, seg_nt)
    want = triton.cdiv(_target_programs(device), programs_per_segment)
    nseg = max(1, min(want, NT // MIN_SEGMENT_CHUNKS))
    seg_nt = triton.cdiv(NT, nseg)
    return seg_nt, triton.cdiv(NT, seg_nt)


def fused_block(
    K: int, V: int, table: dict[int, tuple[int, int, int]] | None = None, dtype: torch.dtype | None = None
) -> tuple[int, int, dict]:
    """(BK, BV, launch kwargs) of a full-K pass for head dims K and V, from ``table`` (default ``FUSED_TABLE``)."""
    BK = max(16, next_power_of_2(K))
    if BK > FUSED_MAX_K:
        raise ValueError(f"the fused kernels hold K <= {FUSED_MAX_K} in registers, got K = {K}")
    bv, warps, stages = (FUSED_TABLE if table is None else table)[BK]
    if not interpreter_active():
        BK = max(BK, MIN_BLOCK)
        if dtype == torch.float32 and BK >= 256:
            stages = 1  # float32 tiles of a 256-wide K do not fit shared memory twice
    return BK, block_size(V, bv), {"num_warps": warps, "num_stages": stages}


def chunk_retention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: torch.Tensor | None,
    z0: torch.Tensor | None,
    position: torch.Tensor,
    normalize: bool,
    store_final: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunkwise retention forward (no autograd).

    Args:
        q, k: ``(B, T, H, K)`` contiguous, fp16/bf16/fp32, K <= ``FUSED_MAX_K``.
        v: ``(B, T, H, V)`` contiguous, same dtype.
        log_decay: ``(H,)`` float32 log γ.
        S0: ``(B, H, K, V)`` float32 initial state, or None for zero; z0: ``(B, H, K)`` float32 key sum, or None.
        position: ``(B,)`` int64 absolute position of each row's first token.
        normalize: fuse SPEC §3 factors 2 and 3.
        store_final: compute the final state (else S and z come back empty).

    Returns:
        ``(o, rden, S, z)``: o ``(B, T, H, V)`` in v's dtype; rden ``(B, H, T)`` float32, the row factor applied
        to the raw output (0 on padded rows); S ``(B, H, K, V)``, z ``(B, H, K)`` the final state in float32.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_len(T)
    NT = triton.cdiv(T, BT)
    ip = dot_precision(q.dtype)
    BK, BV, cfg = fused_block(K, V, dtype=q.dtype)
    n_vb = triton.cdiv(V, BV)
    seg_nt, nseg = plan_segments(NT, n_vb * B * H, q.device)
    f32 = {"device": q.device, "dtype": torch.float32}
    o = torch.empty_like(v)
    rden = torch.empty(B, H, T, **f32)
    S = torch.empty(B, H, K, V, **f32) if store_final else rden.new_empty(0)
    z = torch.empty(B, H, K, **f32) if store_final else rden.new_empty(0)
    S_seg = z_seg = rden  # unread unless there are segments
    if nseg > 1:
        S_seg = torch.empty(nseg - 1, B * H, K, V, **f32)
        z_seg = torch.empty(nseg - 1, B * H, K, **f32)
        bk, bv, warps, stages = SEGMENT_TABLE
        sbk, sbv = block_size(K, bk), block_size(V, bv)
        _segment_state_kernel[(triton.cdiv(K, sbk), triton.cdiv(V, sbv), (nseg - 1) * B * H)](
            k, v, position, log_decay, S_seg, z_seg, T, seg_nt, B * H,
            H=H, K=K, V=V, BT=BT, BK=sbk, BV=sbv, IP=ip, num_warps=warps, num_stages=stages,
        )  # fmt: skip
    has_s0 = S0 is not None
    _fused_fwd_kernel[(n_vb, nseg, B * H)](
        q, k, v, S0 if has_s0 else rden, z0 if has_s0 else rden, S_seg, z_seg, position, log_decay, o, rden, S, z,
        T, NT, seg_nt, B * H,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, HAS_S0=has_s0, NORMALIZE=normalize, STORE_FINAL=store_final, IP=ip,
        **cfg,
    )  # fmt: skip
    return o, rden, S, z
