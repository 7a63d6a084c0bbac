"""Chunkwise retention in Triton: forward, backward and a ``torch.library`` custom op (paper §2.1, Eq. 7; SPEC §3).

Sequences are cut into chunks of ``BT`` tokens (the last may be shorter). With S_i the state after chunk i
(S_{−1} the initial state), ξ_j = γ^(j+1), ζ_j = γ^(L_i−1−j) and D the intra-chunk decay mask:

    O_i = (Q_i K_iᵀ ⊙ D) V_i + (Q_i ⊙ ξ) S_{i−1},      S_i = γ^(L_i) S_{i−1} + (K_i ⊙ ζ)ᵀ V_i.

The score s_n (retention with v ≡ 1, SPEC §3 factor 3) is accumulated beside o from the same Q Kᵀ tile and
the key-sum state z, so the whole normalisation o_n / max(|s_n|, √c_n) is fused into the output kernel,
which stores 1 / max(|s_n|, √c_n) (0 on padded rows) for the backward pass. Four kernels:

* ``_state_fwd_kernel``: the sequential scan over chunks, one program per (K block, V block, batch·head); it
  writes every chunk's incoming state ``h`` (in the input dtype, as a dot operand) and the final state.
* ``_output_fwd_kernel``: one program per (V block, chunk, batch·head); fully parallel over chunks.
* ``_state_bwd_kernel``: the reverse scan of dL/dS_i (also gives d initial state).
* ``_dqk_bwd_kernel`` and ``_dv_bwd_kernel``: per-chunk gradients from the states and their gradients.

The backward recomputes ``h`` with the forward scan instead of keeping it alive between the passes. All
accumulation is float32; decays are exp of non-positive float32 numbers, so γ^(−n) is never formed.
Tokens at negative absolute positions (left padding) act as k = v = 0 and produce o = 0.
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from ..triton_utils import dot_precision, interpreter_active, next_power_of_2

# ---------------------------------------------------------------------------------------------------------
# Shared device helpers
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _expm1(x):
    """exp(x) − 1 accurate near 0 (Kahan's trick: the rounding of exp(x) cancels against log of itself)."""
    u = tl.exp(x)
    um1 = u - 1.0
    safe_u = tl.where((u == 1.0) | (u == 0.0), 2.0, u)
    r = um1 * x / tl.log(safe_u)
    r = tl.where(u == 1.0, x, r)
    return tl.where(u == 0.0, -1.0, r)


@triton.jit
def _row_scale(b_s, lg, n, b_valid, NORMALIZE: tl.constexpr):
    """1 / max(|s_n|, √c_n) (SPEC §3 factors 2 and 3), or 1 without normalisation; 0 on padded rows.

    c_n = expm1((n+1)·lg) / expm1(lg), and n + 1 when lg == 0 (no decay); n is clamped at 0.
    """
    if NORMALIZE:
        n1 = (tl.maximum(n, 0) + 1).to(tl.float32)
        safe_lg = tl.where(lg == 0.0, -1.0, lg)
        c = _expm1(n1 * safe_lg) / _expm1(n1 * 0.0 + safe_lg)
        c = tl.where(lg == 0.0, n1, c)
        r = 1.0 / tl.maximum(tl.abs(b_s), tl.sqrt(c))
    else:
        r = tl.full(b_s.shape, 1.0, tl.float32)
    return tl.where(b_valid, r, 0.0)


@triton.jit
def _chunk_decays(lg, p0, i_t, T, BT: tl.constexpr):
    """Per-chunk decay vectors for chunk ``i_t``.

    Returns:
        b_valid: (BT,) rows inside the sequence and at non-negative absolute positions.
        b_xi: (BT,) ξ_j = γ^(j+1), the decay of the incoming state at row j.
        b_zeta: (BT,) ζ_j = γ^(L−1−j) on valid rows, 0 elsewhere (so padded keys vanish).
        b_gL: γ^L, the decay of the state across the whole chunk of length L.
        b_D: (BT, BT) D[i, j] = γ^(i−j) for j ≤ i and valid j, else 0.
        n: (BT,) absolute positions.
    """
    o_i = tl.arange(0, BT)
    o_t = i_t * BT + o_i
    n = p0 + o_t
    b_in = o_t < T
    b_valid = b_in & (n >= 0)
    f_i = o_i.to(tl.float32)
    b_len = tl.sum(tl.where(b_in, 1.0, 0.0), axis=0)
    b_xi = tl.exp(lg * (f_i + 1.0))
    b_zeta = tl.where(b_valid, tl.exp(lg * tl.maximum(b_len - 1.0 - f_i, 0.0)), 0.0)
    b_gL = tl.exp(lg * b_len)
    diff = f_i[:, None] - f_i[None, :]
    causal = (diff >= 0.0) & b_valid[None, :]
    b_D = tl.where(causal, tl.exp(lg * tl.maximum(diff, 0.0)), 0.0)
    return b_valid, b_xi, b_zeta, b_gL, b_D, n


# ---------------------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _state_fwd_kernel(
    k, v, S0, z0, position, log_decay, h, zh, S_out, z_out,
    T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    STORE_Z: tl.constexpr, STORE_FINAL: tl.constexpr, IP: tl.constexpr,
):  # fmt: skip
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    p_S0 = tl.make_block_ptr(S0 + i_bh * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
    b_S = tl.load(p_S0, boundary_check=(0, 1), padding_option="zero").to(tl.float32)
    b_z = tl.load(z0 + i_bh * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    for i_t in range(NT):
        p_h = tl.make_block_ptr(h + (i_bh * NT + i_t) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_h, b_S.to(p_h.dtype.element_ty), boundary_check=(0, 1))
        if STORE_Z:
            tl.store(zh + (i_bh * NT + i_t) * K + o_k, b_z, mask=m_k & (i_v == 0))
        b_valid, b_xi, b_zeta, b_gL, b_D, n = _chunk_decays(lg, p0, i_t, T, BT)
        p_kt = tl.make_block_ptr(
            k + i_b * T * H * K + i_h * K, (K, T), (1, H * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1)
        )
        p_v = tl.make_block_ptr(
            v + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0)
        )
        b_kt = tl.load(p_kt, boundary_check=(0, 1), padding_option="zero").to(tl.float32) * b_zeta[None, :]
        b_v = tl.load(p_v, boundary_check=(0, 1), padding_option="zero")
        b_v = tl.where(b_valid[:, None], b_v, 0.0).to(p_v.dtype.element_ty)
        # (BK, BT) @ (BT, BV) -> (BK, BV)
        b_S = b_S * b_gL + tl.dot(b_kt.to(b_v.dtype), b_v, input_precision=IP)
        b_z = b_z * b_gL + tl.sum(b_kt, axis=1)
    if STORE_FINAL:
        p_S = tl.make_block_ptr(S_out + i_bh * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_S, b_S.to(p_S.dtype.element_ty), boundary_check=(0, 1))
        tl.store(z_out + i_bh * K + o_k, b_z.to(z_out.dtype.element_ty), mask=m_k & (i_v == 0))


@triton.jit
def _output_fwd_kernel(
    q, k, v, h, zh, position, log_decay, o, rden,
    T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NORMALIZE: tl.constexpr, IP: tl.constexpr,
):  # fmt: skip
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    b_s = tl.zeros([BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        p_q = tl.make_block_ptr(
            q + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0)
        )
        p_kt = tl.make_block_ptr(
            k + i_b * T * H * K + i_h * K, (K, T), (1, H * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1)
        )
        p_h = tl.make_block_ptr(h + (i_bh * NT + i_t) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        o_k = i_k * BK + tl.arange(0, BK)
        b_q = tl.load(p_q, boundary_check=(0, 1), padding_option="zero")
        b_kt = tl.load(p_kt, boundary_check=(0, 1), padding_option="zero")
        b_h = tl.load(p_h, boundary_check=(0, 1), padding_option="zero")
        b_z = tl.load(zh + (i_bh * NT + i_t) * K + o_k, mask=o_k < K, other=0.0)
        # (BT, BK) @ (BK, BV) -> (BT, BV)
        b_o += tl.dot(b_q, b_h, input_precision=IP)
        # (BT, BK) @ (BK, BT) -> (BT, BT)
        b_A += tl.dot(b_q, b_kt, input_precision=IP)
        b_s += tl.sum(b_q.to(tl.float32) * b_z[None, :], axis=1)
    b_valid, b_xi, b_zeta, b_gL, b_D, n = _chunk_decays(lg, p0, i_t, T, BT)
    b_A = b_A * b_D
    p_v = tl.make_block_ptr(v + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    b_v = tl.load(p_v, boundary_check=(0, 1), padding_option="zero")
    b_v = tl.where(b_valid[:, None], b_v, 0.0).to(p_v.dtype.element_ty)
    b_s = b_s * b_xi + tl.sum(b_A, axis=1)
    # (BT, BT) @ (BT, BV) -> (BT, BV)
    b_o = b_o * b_xi[:, None] + tl.dot(b_A.to(b_v.dtype), b_v, input_precision=IP)
    b_r = _row_scale(b_s, lg, n, b_valid, NORMALIZE)
    b_o = tl.where(b_valid[:, None], b_o * b_r[:, None], 0.0)
    p_o = tl.make_block_ptr(o + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    tl.store(p_o, b_o.to(p_o.dtype.element_ty), boundary_check=(0, 1))
    o_t = i_t * BT + tl.arange(0, BT)
    tl.store(rden + i_bh * T + o_t, b_r, mask=(o_t < T) & (i_v == 0))


# ---------------------------------------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _state_bwd_kernel(
    q, do, rden, position, log_decay, dS_final, dh, dS0,
    T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_DSF: tl.constexpr, IP: tl.constexpr,
):  # fmt: skip
    """Reverse scan: dh[i] = dL/dS_i (state after chunk i); dL/dS_{i−1} = γ^L dL/dS_i + (Q_i ⊙ ξ ⊙ r)ᵀ dO_i."""
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    if HAS_DSF:
        p_dSf = tl.make_block_ptr(dS_final + i_bh * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_dS = tl.load(p_dSf, boundary_check=(0, 1), padding_option="zero").to(tl.float32)
    else:
        b_dS = tl.zeros([BK, BV], dtype=tl.float32)
    for i_r in range(NT):
        i_t = NT - 1 - i_r
        p_dh = tl.make_block_ptr(dh + (i_bh * NT + i_t) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        tl.store(p_dh, b_dS.to(p_dh.dtype.element_ty), boundary_check=(0, 1))
        b_valid, b_xi, b_zeta, b_gL, b_D, n = _chunk_decays(lg, p0, i_t, T, BT)
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
    p_dS0 = tl.make_block_ptr(dS0 + i_bh * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
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
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        p_v = tl.make_block_ptr(
            v + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0)
        )
        p_do = tl.make_block_ptr(
            do + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0)
        )
        # States read transposed: (V, K) views of the (K, V) blocks.
        p_ht = tl.make_block_ptr(h + (i_bh * NT + i_t) * K * V, (V, K), (1, V), (i_v * BV, i_k * BK), (BV, BK), (0, 1))
        p_dht = tl.make_block_ptr(
            dh + (i_bh * NT + i_t) * K * V, (V, K), (1, V), (i_v * BV, i_k * BK), (BV, BK), (0, 1)
        )
        b_v = tl.load(p_v, boundary_check=(0, 1), padding_option="zero")
        b_do = tl.load(p_do, boundary_check=(0, 1), padding_option="zero")
        b_ht = tl.load(p_ht, boundary_check=(0, 1), padding_option="zero")
        b_dht = tl.load(p_dht, boundary_check=(0, 1), padding_option="zero")
        # (BT, BV) @ (BV, BT) -> (BT, BT)
        b_dA += tl.dot(b_do, tl.trans(b_v), input_precision=IP)
        # (BT, BV) @ (BV, BK) -> (BT, BK)
        b_dq += tl.dot(b_do, b_ht, input_precision=IP)
        # (BT, BV) @ (BV, BK) -> (BT, BK)
        b_dk += tl.dot(b_v, b_dht, input_precision=IP)
    b_valid, b_xi, b_zeta, b_gL, b_D, n = _chunk_decays(lg, p0, i_t, T, BT)
    o_t = i_t * BT + tl.arange(0, BT)
    b_r = tl.load(rden + i_bh * T + o_t, mask=o_t < T, other=0.0)
    p_q = tl.make_block_ptr(q + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    p_k = tl.make_block_ptr(k + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    b_q = tl.load(p_q, boundary_check=(0, 1), padding_option="zero")
    b_k = tl.load(p_k, boundary_check=(0, 1), padding_option="zero")
    b_k = tl.where(b_valid[:, None], b_k, 0.0).to(p_k.dtype.element_ty)
    b_dA = (b_dA * b_r[:, None] * b_D).to(b_k.dtype)
    # (BT, BT) @ (BT, BK) -> (BT, BK)
    b_dq = b_dq * (b_xi * b_r)[:, None] + tl.dot(b_dA, b_k, input_precision=IP)
    # (BT, BT) @ (BT, BK) -> (BT, BK)
    b_dk = b_dk * b_zeta[:, None] + tl.dot(tl.trans(b_dA), b_q, input_precision=IP)
    b_dk = tl.where(b_valid[:, None], b_dk, 0.0)
    p_dq = tl.make_block_ptr(dq + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    p_dk = tl.make_block_ptr(dk + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0))
    tl.store(p_dq, b_dq.to(p_dq.dtype.element_ty), boundary_check=(0, 1))
    tl.store(p_dk, b_dk.to(p_dk.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def _dv_bwd_kernel(
    q, k, dh, do, rden, position, log_decay, dv,
    T, NT,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr,
):  # fmt: skip
    """dV_i = (Q_i K_iᵀ ⊙ D)ᵀ (r ⊙ dO_i) + (K_i ⊙ ζ) dS_i."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    lg = tl.load(log_decay + i_h).to(tl.float32)
    p0 = tl.load(position + i_b)
    b_At = tl.zeros([BT, BT], dtype=tl.float32)
    b_dv = tl.zeros([BT, BV], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        p_k = tl.make_block_ptr(
            k + i_b * T * H * K + i_h * K, (T, K), (H * K, 1), (i_t * BT, i_k * BK), (BT, BK), (1, 0)
        )
        p_qt = tl.make_block_ptr(
            q + i_b * T * H * K + i_h * K, (K, T), (1, H * K), (i_k * BK, i_t * BT), (BK, BT), (0, 1)
        )
        p_dh = tl.make_block_ptr(dh + (i_bh * NT + i_t) * K * V, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))
        b_k = tl.load(p_k, boundary_check=(0, 1), padding_option="zero")
        b_qt = tl.load(p_qt, boundary_check=(0, 1), padding_option="zero")
        b_dh = tl.load(p_dh, boundary_check=(0, 1), padding_option="zero")
        # (BT, BK) @ (BK, BT) -> (BT, BT)
        b_At += tl.dot(b_k, b_qt, input_precision=IP)
        # (BT, BK) @ (BK, BV) -> (BT, BV)
        b_dv += tl.dot(b_k, b_dh, input_precision=IP)
    b_valid, b_xi, b_zeta, b_gL, b_D, n = _chunk_decays(lg, p0, i_t, T, BT)
    o_t = i_t * BT + tl.arange(0, BT)
    b_r = tl.load(rden + i_bh * T + o_t, mask=o_t < T, other=0.0)
    p_do = tl.make_block_ptr(do + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    b_do = tl.load(p_do, boundary_check=(0, 1), padding_option="zero")
    b_At = (b_At * tl.trans(b_D) * b_r[None, :]).to(b_do.dtype)
    # (BT, BT) @ (BT, BV) -> (BT, BV)
    b_dv = b_dv * b_zeta[:, None] + tl.dot(b_At, b_do, input_precision=IP)
    b_dv = tl.where(b_valid[:, None], b_dv, 0.0)
    p_dv = tl.make_block_ptr(dv + i_b * T * H * V + i_h * V, (T, V), (H * V, 1), (i_t * BT, i_v * BV), (BT, BV), (1, 0))
    tl.store(p_dv, b_dv.to(p_dv.dtype.element_ty), boundary_check=(0, 1))


# ---------------------------------------------------------------------------------------------------------
# Launch configuration
# ---------------------------------------------------------------------------------------------------------

# Block sizes per kernel, measured on an H200 in bf16 (benchmarks/ops.py --sweep). Keys: kernel name; values:
# (BK cap, BV cap, num_warps, num_stages). BK / BV are min(cap, next power of two of K / V).
BLOCK_TABLE: dict[str, tuple[int, int, int, int]] = {
    "state_fwd": (64, 64, 4, 3),
    "output_fwd": (64, 64, 4, 3),
    "state_bwd": (64, 64, 4, 3),
    "dqk_bwd": (64, 64, 4, 3),
    "dv_bwd": (64, 64, 4, 3),
}
CHUNK = 64
"""Chunk length BT of the kernels. The result does not depend on it (every form computes the same function)."""


def _launch_cfg(name: str, K: int, V: int) -> tuple[int, int, dict]:
    bk, bv, warps, stages = BLOCK_TABLE[name]
    if interpreter_active():  # the interpreter pays per program, not per element: use the largest blocks
        bk, bv = 128, 128
    BK = min(bk, max(16, next_power_of_2(K)))
    BV = min(bv, max(16, next_power_of_2(V)))
    return BK, BV, {"num_warps": warps, "num_stages": stages}


def _chunk_len(T: int) -> int:
    return min(CHUNK, max(16, next_power_of_2(T)))


# ---------------------------------------------------------------------------------------------------------
# Host wrappers
# ---------------------------------------------------------------------------------------------------------


def _state_scan(k, v, S0, z0, position, log_decay, BT, *, store_z, store_final, ip):
    """Run the forward state scan; returns (h, zh, S, z) with h (B, H, N, K, V) in k's dtype."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, BT)
    h = k.new_empty(B, H, NT, K, V)
    zh = torch.empty(B, H, NT, K, device=k.device, dtype=torch.float32) if store_z else h
    S = torch.empty_like(S0) if store_final else h
    z = torch.empty_like(z0) if store_final else h
    BK, BV, cfg = _launch_cfg("state_fwd", K, V)
    grid = (triton.cdiv(K, BK), triton.cdiv(V, BV), B * H)
    _state_fwd_kernel[grid](
        k, v, S0, z0, position, log_decay, h, zh, S, z, T, NT,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, STORE_Z=store_z, STORE_FINAL=store_final, IP=ip, **cfg,
    )  # fmt: skip
    return h, zh, S, z


def chunk_retention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: torch.Tensor,
    z0: torch.Tensor,
    position: torch.Tensor,
    normalize: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunkwise retention forward (no autograd).

    Args:
        q, k: ``(B, T, H, K)`` contiguous, fp16/bf16/fp32.
        v: ``(B, T, H, V)`` contiguous, same dtype.
        log_decay: ``(H,)`` float32 log γ.
        S0: ``(B, H, K, V)`` float32 initial state; z0: ``(B, H, K)`` float32 initial key sum.
        position: ``(B,)`` int64 absolute position of each row's first token.
        normalize: fuse SPEC §3 factors 2 and 3.

    Returns:
        ``(o, rden, S, z)``: o ``(B, T, H, V)`` in v's dtype; rden ``(B, H, T)`` float32, the row factor applied
        to the raw output (0 on padded rows); S, z the final state in float32.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = _chunk_len(T)
    NT = triton.cdiv(T, BT)
    ip = dot_precision(q.dtype)
    h, zh, S, z = _state_scan(k, v, S0, z0, position, log_decay, BT, store_z=True, store_final=True, ip=ip)
    o = torch.empty_like(v)
    rden = torch.empty(B, H, T, device=q.device, dtype=torch.float32)
    _, BV, cfg = _launch_cfg("output_fwd", K, V)
    BK, _, _ = _launch_cfg("output_fwd", K, V)
    grid = (triton.cdiv(V, BV), NT, B * H)
    _output_fwd_kernel[grid](
        q, k, v, h, zh, position, log_decay, o, rden, T, NT,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, NORMALIZE=normalize, IP=ip, **cfg,
    )  # fmt: skip
    return o, rden, S, z


def chunk_retention_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: torch.Tensor,
    position: torch.Tensor,
    rden: torch.Tensor,
    do: torch.Tensor,
    dS: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunkwise retention backward: gradients of q, k, v and the initial state S (the normaliser is detached).

    Args:
        q, k, v, log_decay, S0, position: as for :func:`chunk_retention_fwd`.
        rden: ``(B, H, T)`` row factors saved by the forward pass.
        do: ``(B, T, H, V)`` gradient of the output.
        dS: ``(B, H, K, V)`` gradient of the final state S, or None.

    Returns:
        ``(dq, dk, dv, dS0)`` with the dtypes and shapes of q, k, v and S0.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = _chunk_len(T)
    NT = triton.cdiv(T, BT)
    ip = dot_precision(q.dtype)
    z0 = S0.new_zeros(B, H, K)
    h, _, _, _ = _state_scan(k, v, S0, z0, position, log_decay, BT, store_z=False, store_final=False, ip=ip)
    dh = torch.empty_like(h)
    dS0 = torch.empty_like(S0)
    BK, BV, cfg = _launch_cfg("state_bwd", K, V)
    _state_bwd_kernel[(triton.cdiv(K, BK), triton.cdiv(V, BV), B * H)](
        q, do, rden, position, log_decay, dS if dS is not None else dS0, dh, dS0, T, NT,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, HAS_DSF=dS is not None, IP=ip, **cfg,
    )  # fmt: skip
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    BK, BV, cfg = _launch_cfg("dqk_bwd", K, V)
    _dqk_bwd_kernel[(triton.cdiv(K, BK), NT, B * H)](
        q, k, v, h, dh, do, rden, position, log_decay, dq, dk, T, NT,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV, IP=ip, **cfg,
    )  # fmt: skip
    BK, BV, cfg = _launch_cfg("dv_bwd", K, V)
    _dv_bwd_kernel[(triton.cdiv(V, BV), NT, B * H)](
        q, k, dh, do, rden, position, log_decay, dv, T, NT,
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
    S0: torch.Tensor,
    z0: torch.Tensor,
    position: torch.Tensor,
    normalize: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return chunk_retention_fwd(q, k, v, log_decay, S0, z0, position, normalize)


@_chunk_fwd_op.register_fake
def _(q, k, v, log_decay, S0, z0, position, normalize):
    B, T, H, _ = q.shape
    rden = q.new_empty(B, H, T, dtype=torch.float32)
    return torch.empty_like(v), rden, torch.empty_like(S0), torch.empty_like(z0)


@torch.library.custom_op("retnet::chunk_retention_bwd", mutates_args=())
def _chunk_bwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: torch.Tensor,
    position: torch.Tensor,
    rden: torch.Tensor,
    do: torch.Tensor,
    dS: Optional[torch.Tensor],  # noqa: UP045 (custom_op schema inference)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return chunk_retention_bwd(q, k, v, log_decay, S0, position, rden, do, dS)


@_chunk_bwd_op.register_fake
def _(q, k, v, log_decay, S0, position, rden, do, dS):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(S0)


def _setup_context(ctx, inputs, output):
    q, k, v, log_decay, S0, z0, position, normalize = inputs
    _, rden, _, _ = output
    ctx.save_for_backward(q, k, v, log_decay, S0, position, rden)
    ctx.mark_non_differentiable(rden, output[3])


def _backward(ctx, do, d_rden, dS, dz):
    q, k, v, log_decay, S0, position, rden = ctx.saved_tensors
    dS = None if dS is None else dS.float().contiguous()
    dq, dk, dv, dS0 = _chunk_bwd_op(q, k, v, log_decay, S0, position, rden, do.contiguous(), dS)
    return dq, dk, dv, None, dS0, None, None, None


_chunk_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    S0: torch.Tensor,
    z0: torch.Tensor,
    position: torch.Tensor,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differentiable chunkwise retention on Triton (the wrapper of ``chunkwise_ref``'s arithmetic).

    Args:
        q, k: ``(B, T, H, K)`` fp16/bf16/fp32 (k already scaled by K^−½).
        v: ``(B, T, H, V)`` same dtype.
        log_decay: ``(H,)`` float32 log γ.
        S0: ``(B, H, K, V)`` float32 initial state (gradients flow to it).
        z0: ``(B, H, K)`` float32 initial key sum (no gradient, as the normaliser is detached).
        position: ``(B,)`` int64 absolute position of the first token; negative positions are left padding.
        normalize: apply SPEC §3 factors 2 and 3.

    Returns:
        ``(o, S, z)``: o ``(B, T, H, V)`` in v's dtype; final state S and z in float32.
    """
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o, _, S, z = _chunk_fwd_op(
        q, k, v, log_decay.float().contiguous(), S0.float().contiguous(), z0.float().contiguous(),
        position.long().contiguous(), normalize,
    )  # fmt: skip
    return o, S, z
