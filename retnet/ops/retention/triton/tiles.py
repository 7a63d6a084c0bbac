"""Device helpers shared by the retention kernels (docs/spec.md §3): tiles, decays, masks and the normaliser.

Every kernel takes its per-chunk decays from :func:`chunk_decays` and its row factor from :func:`row_scale`,
so the forward, backward and decode kernels agree on the arithmetic. Decays are exp of non-positive float32
numbers: γ^(−n) is never formed.

A rule the kernels follow on Hopper (sm90): a tile that feeds a ``tl.dot`` transposed is loaded transposed
(a block pointer with swapped strides), never made by ``tl.trans`` of a register tile. Transposing a tile in
registers, above all a dot's result, then feeding it to another 16-bit dot miscompiles on sm90 with Triton
3.4 to 3.6 (wrong values, in some shapes illegal addresses), while float32 runs of the same code are right.
Likewise a 16-bit tile that feeds a dot is not also used elementwise (the kernels load it a second time),
and dots take no operand broadcast from a vector: both gave wrong sums there.
"""

import triton
import triton.language as tl

WIDE_FROM = 2**31
"""Element count from which the kernels form row, state and chunk offsets in int64 (int32 offsets wrap past it:
a batch of 64 sequences of 8,192 tokens at V = 512 has 2^31 values, and its per-chunk states four times more).
Below it they keep int32 offsets, which are faster (17 % in the forward at K = 256, V = 512 on the H200)."""


def wide_offsets(*numels: int, wide_from: int = WIDE_FROM) -> bool:
    """Whether a launch over tensors of these element counts needs int64 offsets (``WIDE``), which it does from
    ``wide_from`` elements (``KernelTuning.wide_from``; tests lower it to run the int64 variant at small shapes)."""
    return max(numels) >= wide_from


@triton.jit
def widen(i, WIDE: tl.constexpr):
    """``i`` as int64 when ``WIDE``, else unchanged."""
    if WIDE:
        return tl.cast(i, tl.int64)
    else:
        return i


@triton.jit
def row_ptr(x, i_b, i_h, T, H: tl.constexpr, D: tl.constexpr, WIDE: tl.constexpr):
    """Pointer to batch row i_b, head i_h of a ``(B, T, H, D)`` tensor."""
    if WIDE:
        return x + tl.cast(i_b, tl.int64) * T * (H * D) + i_h * D
    else:
        return x + i_b * T * H * D + i_h * D


@triton.jit
def state_ptr(x, i, K: tl.constexpr, V: tl.constexpr, WIDE: tl.constexpr):
    """Pointer to the i-th (K, V) state of a tensor of states stored one after another."""
    if WIDE:
        return x + tl.cast(i, tl.int64) * (K * V)
    else:
        return x + i * K * V


@triton.jit
def token_block(
    x, i_b, i_h, T, H: tl.constexpr, D: tl.constexpr, i_t, i_d, BT: tl.constexpr, BD: tl.constexpr, WIDE: tl.constexpr
):
    """Block pointer to the (BT, BD) tile of a ``(B, T, H, D)`` tensor at token block i_t, column block i_d."""
    base = row_ptr(x, i_b, i_h, T, H, D, WIDE)
    return tl.make_block_ptr(base, (T, D), (H * D, 1), (i_t * BT, i_d * BD), (BT, BD), (1, 0))


@triton.jit
def token_block_t(
    x, i_b, i_h, T, H: tl.constexpr, D: tl.constexpr, i_t, i_d, BT: tl.constexpr, BD: tl.constexpr, WIDE: tl.constexpr
):
    """:func:`token_block` transposed: the (BD, BT) tile, for tiles that feed a dot transposed (module docstring)."""
    base = row_ptr(x, i_b, i_h, T, H, D, WIDE)
    return tl.make_block_ptr(base, (D, T), (1, H * D), (i_d * BD, i_t * BT), (BD, BT), (0, 1))


@triton.jit
def state_block(
    x, i, K: tl.constexpr, V: tl.constexpr, i_k, i_v, BK: tl.constexpr, BV: tl.constexpr, WIDE: tl.constexpr
):
    """Block pointer to the (BK, BV) tile of the i-th (K, V) state in ``x`` (row-major states, one after another)."""
    base = state_ptr(x, i, K, V, WIDE)
    return tl.make_block_ptr(base, (K, V), (V, 1), (i_k * BK, i_v * BV), (BK, BV), (1, 0))


@triton.jit
def state_block_t(
    x, i, K: tl.constexpr, V: tl.constexpr, i_k, i_v, BK: tl.constexpr, BV: tl.constexpr, WIDE: tl.constexpr
):
    """:func:`state_block` transposed: the (BV, BK) tile, loaded transposed."""
    base = state_ptr(x, i, K, V, WIDE)
    return tl.make_block_ptr(base, (V, K), (1, V), (i_v * BV, i_k * BK), (BV, BK), (0, 1))


@triton.jit
def expm1(x):
    """exp(x) − 1 accurate near 0 (Kahan's trick: the rounding of exp(x) cancels against log of itself)."""
    u = tl.exp(x)
    um1 = u - 1.0
    safe_u = tl.where((u == 1.0) | (u == 0.0), 2.0, u)
    r = um1 * x / tl.log(safe_u)
    r = tl.where(u == 1.0, x, r)
    return tl.where(u == 0.0, -1.0, r)


@triton.jit
def row_scale(b_s, lg, n, b_valid, NORMALIZE: tl.constexpr):
    """1 / max(|s_n|, √c_n) (SPEC §3 factors 2 and 3), or 1 without normalisation; 0 on padded rows.

    c_n = expm1((n+1)·lg) / expm1(lg), and n + 1 when lg == 0 (no decay); n is clamped at 0.
    """
    if NORMALIZE:
        n1 = (tl.maximum(n, 0) + 1).to(tl.float32)
        safe_lg = tl.where(lg == 0.0, -1.0, lg)
        c = expm1(n1 * safe_lg) / expm1(n1 * 0.0 + safe_lg)
        c = tl.where(lg == 0.0, n1, c)
        r = 1.0 / tl.maximum(tl.abs(b_s), tl.sqrt(c))
    else:
        r = tl.full(b_s.shape, 1.0, tl.float32)
    return tl.where(b_valid, r, 0.0)


@triton.jit
def chunk_decays(lg, p0, i_t, T, BT: tl.constexpr):
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


@triton.jit
def causal_tile(b_valid, BT: tl.constexpr):
    """(BT, BT) bool: the support of D, j ≤ i and row j valid (``b_valid`` from :func:`chunk_decays`). Masks are
    applied with ``tl.where`` on it, not by multiplying with D's zeros: 0 · inf is NaN, and a non-finite key at j
    must not reach the rows before j."""
    o_i = tl.arange(0, BT)
    return (o_i[:, None] >= o_i[None, :]) & b_valid[None, :]


@triton.jit
def nonfinite_count(b_x):
    """Number of NaN/±inf entries of a float32 tile."""
    return tl.sum(tl.sum(((b_x != b_x) | (tl.abs(b_x) == float("inf"))).to(tl.int32), axis=1), axis=0)


@triton.jit
def causal_values_dot(b_A, b_v, IP: tl.constexpr):
    """``(BT, BT) @ (BT, BV)`` of causally masked float32 scores with a float32 value tile that holds a non-finite
    entry, keeping causality: non-finite values are left out of the product (the masked zeros times inf would be
    NaN in the rows before them), and the rows at or after one are NaN in its column, as in the recurrence.
    The rare path: only tiles with a non-finite value take it."""
    b_bad = (b_v != b_v) | (tl.abs(b_v) == float("inf"))
    b_o = tl.dot(b_A, tl.where(b_bad, 0.0, b_v), input_precision=IP)
    b_reached = tl.cumsum(b_bad.to(tl.int32), axis=0) > 0
    return tl.where(b_reached, float("nan"), b_o)


@triton.jit
def decay_mask_t(lg, b_valid, BT: tl.constexpr):
    """(BT, BT) Dᵀ, built directly: Dᵀ[i, j] = γ^(j−i) for i ≤ j and valid i, else 0 (``b_valid`` from
    :func:`chunk_decays`). Transposing D on chip instead would feed a transposed register tile to a dot."""
    f_i = tl.arange(0, BT).to(tl.float32)
    diff = f_i[None, :] - f_i[:, None]
    return tl.where((diff >= 0.0) & b_valid[:, None], tl.exp(lg * tl.maximum(diff, 0.0)), 0.0)


@triton.jit
def state_tile_step(
    k, v, b_S, lg, p0, i_b, i_h, i_k, i_v, i_t, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """One chunk of the state scan on a (BK, BV) tile: returns (γ^L S + (K ⊙ ζ)ᵀ V, γ^L, Kᵀ ζ of shape (BK,)).

    Kᵀ ⊙ ζ is a scaled copy of the loaded tile, so the loaded tile itself feeds no dot.
    """
    b_valid, b_xi, b_zeta, b_gL, b_D, n = chunk_decays(lg, p0, i_t, T, BT)
    p_kt = token_block_t(k, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
    p_v = token_block(v, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
    b_kt = tl.load(p_kt, boundary_check=(0, 1), padding_option="zero").to(tl.float32) * b_zeta[None, :]
    b_v = tl.load(p_v, boundary_check=(0, 1), padding_option="zero")
    # (BK, BT) @ (BT, BV) -> (BK, BV)
    b_S = b_S * b_gL + tl.dot(b_kt.to(b_v.dtype), b_v, input_precision=IP)
    return b_S, b_gL, tl.sum(b_kt, axis=1)


@triton.jit
def dstate_tile_step(
    q, do, rden, b_dS, lg, p0, i_b, i_h, i_bh, i_k, i_v, i_t, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, IP: tl.constexpr, WIDE: tl.constexpr,
):  # fmt: skip
    """One chunk of the reverse scan on a (BK, BV) tile: dL/dS_{i−1} = γ^L dL/dS_i + (Q_i ⊙ ξ ⊙ r)ᵀ dO_i, with r
    the saved row factors. (Q ⊙ ξ ⊙ r)ᵀ is a scaled copy of the loaded tile, so the loaded tile feeds no dot."""
    b_valid, b_xi, b_zeta, b_gL, b_D, n = chunk_decays(lg, p0, i_t, T, BT)
    o_t = i_t * BT + tl.arange(0, BT)
    b_r = tl.load(rden + i_bh * T + o_t, mask=o_t < T, other=0.0)
    p_qt = token_block_t(q, i_b, i_h, T, H, K, i_t, i_k, BT, BK, WIDE)
    p_do = token_block(do, i_b, i_h, T, H, V, i_t, i_v, BT, BV, WIDE)
    b_qt = tl.load(p_qt, boundary_check=(0, 1), padding_option="zero").to(tl.float32) * (b_xi * b_r)[None, :]
    b_do = tl.load(p_do, boundary_check=(0, 1), padding_option="zero")
    # (BK, BT) @ (BT, BV) -> (BK, BV)
    return b_dS * b_gL + tl.dot(b_qt.to(b_do.dtype), b_do, input_precision=IP)
