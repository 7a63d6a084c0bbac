"""Small-batch matrix-vector products with the work before and after them fused in (docs/inference.md).

Each kernel computes ``y = f(W · g(x))`` for B ≤ 4 rows of x. A program owns one row of x and a few rows of W,
and streams those over the whole input width; the B programs that read the same rows of W are launched next to
each other (the batch is the grid's fastest dimension), so a weight row comes from memory once and from L2 for
the other batch rows. ``g`` is the block norm before a product and ``f`` what follows it:

* :func:`projection`: an optional norm, then an optional activation or residual add (the paper flavour's FFN input,
  the FFN output, the LM head).
* :func:`paired_projection`: two weight rows per output pair, for the two epilogues that combine rows: the rotation
  of q and k (rows 2i and 2i + 1 of the stacked q/k/v/g weight, with k scaled by K^−½) and the GLU act(a)·b (row i
  of fc1 and row i of the gate).
* :func:`gated_output_residual`: the output projection of gated retention, whose input it prepares head by head:
  the head-wise norm from the partial sums the retention step wrote, times swish(g); then the residual add. Its
  first program also finishes the retention step (z ← z_new, position += 1), which saves a launch.

Norms: RMSNorm needs only Σx², which each program accumulates while it streams x, and its factor is applied to
the product's sums; LayerNorm's mean and variance are computed by each program first (x is a few KB, in L2).
Everything is float32 inside; outputs take the dtype of their buffer. No kernel allocates or synchronises, so
the step is captured in a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..triton_utils import next_power_of_2
from .dependent import await_previous, launch_options
from .launch import ACTIVATION_CODES, HEAD_NORM_CODES, MAX_BATCH, NORM_CODES, MatvecLaunch


@triton.jit
def _activate(x, ACT: tl.constexpr):
    if ACT == 1:
        return x * tl.sigmoid(x)
    elif ACT == 2:
        return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACT == 3:
        return tl.maximum(x, 0.0)
    else:
        return x


@triton.jit
def _layer_norm_moments(x_row, K, eps, BK: tl.constexpr):
    """``(mean, rstd)`` of one input row ``(K,)``: the mean first, then the centred variance."""
    total = tl.zeros((BK,), tl.float32)
    for k0 in range(0, K, BK):
        cols = k0 + tl.arange(0, BK)
        total += tl.load(x_row + cols, mask=cols < K, other=0.0).to(tl.float32)
    mean = tl.sum(total, axis=0) / K
    squares = tl.zeros((BK,), tl.float32)
    for k0 in range(0, K, BK):
        cols = k0 + tl.arange(0, BK)
        d = tl.where(cols < K, tl.load(x_row + cols, mask=cols < K, other=0.0).to(tl.float32) - mean, 0.0)
        squares += d * d
    return mean, 1.0 / tl.sqrt(tl.sum(squares, axis=0) / K + eps)


@triton.jit
def _input_chunk(x_row, norm_w, norm_b, mean, rstd, cols, K, NORM: tl.constexpr):
    """Columns ``cols`` of one input row prepared for the product ``(BK,)`` float32, and their squares (RMSNorm's
    statistic; zeros for the other norms)."""
    m_k = cols < K
    t = tl.load(x_row + cols, mask=m_k, other=0.0).to(tl.float32)
    if NORM == 1:
        squares = t * t
        t = t * tl.load(norm_w + cols, mask=m_k, other=0.0).to(tl.float32)
    elif NORM == 2:
        squares = tl.zeros_like(t)
        t = (t - mean) * rstd * tl.load(norm_w + cols, mask=m_k, other=0.0).to(tl.float32)
        t = t + tl.load(norm_b + cols, mask=m_k, other=0.0).to(tl.float32)
    else:
        squares = tl.zeros_like(t)
    return t, squares


@triton.jit
def _row_sums(x_row, norm_w, norm_b, w, r0, r1, m_r, K, eps, NORM: tl.constexpr, TWO: tl.constexpr,
              DEPENDENT: tl.constexpr, BR: tl.constexpr, BK: tl.constexpr):  # fmt: skip
    """``(Σ_k W[r0, k] · norm(x)[k], the same for r1)``, ``(BR,)`` each, streaming x once (r1's sums are zeros
    unless ``TWO``): the norm's factor applied, as every product of this module computes them. The first chunk of
    the weight rows is loaded before :func:`~.dependent.await_previous`, everything else after it."""
    cols = tl.arange(0, BK)
    m_w = m_r[:, None] & (cols < K)[None, :]
    w0 = tl.load(w + r0[:, None] * K + cols[None, :], mask=m_w, other=0.0)
    w1 = w0
    if TWO:
        w1 = tl.load(w + r1[:, None] * K + cols[None, :], mask=m_w, other=0.0)
    await_previous(DEPENDENT)
    mean = 0.0
    rstd = 1.0
    if NORM == 2:
        mean, rstd = _layer_norm_moments(x_row, K, eps, BK)
    b_x, squares = _input_chunk(x_row, norm_w, norm_b, mean, rstd, cols, K, NORM)
    acc0 = w0.to(tl.float32) * b_x[None, :]
    acc1 = tl.zeros((BR, BK), tl.float32)
    if TWO:
        acc1 = w1.to(tl.float32) * b_x[None, :]
    for k0 in range(BK, K, BK):
        cols = k0 + tl.arange(0, BK)
        b_x, b_sq = _input_chunk(x_row, norm_w, norm_b, mean, rstd, cols, K, NORM)
        squares += b_sq
        m_w = m_r[:, None] & (cols < K)[None, :]
        acc0 += tl.load(w + r0[:, None] * K + cols[None, :], mask=m_w, other=0.0).to(tl.float32) * b_x[None, :]
        if TWO:
            acc1 += tl.load(w + r1[:, None] * K + cols[None, :], mask=m_w, other=0.0).to(tl.float32) * b_x[None, :]
    a = tl.sum(acc0, axis=1)
    b = tl.sum(acc1, axis=1)
    if NORM == 1:
        factor = 1.0 / tl.sqrt(tl.sum(squares, axis=0) / K + eps)
        a = a * factor
        b = b * factor
    return a, b


@triton.jit
def _projection_kernel(
    x, norm_w, norm_b, w, residual, y,
    N, K, eps,
    NORM: tl.constexpr, ACT: tl.constexpr, RESIDUAL: tl.constexpr, DEPENDENT: tl.constexpr,
    BN: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    # y[b, n] = act(Σ_k W[n, k] · norm(x)[b, k]) (+ residual[b, n]) for batch row b and this program's BN rows n.
    i_b = tl.program_id(0)
    rows = tl.program_id(1) * BN + tl.arange(0, BN)
    m_n = rows < N
    out, _ = _row_sums(x + i_b * K, norm_w, norm_b, w, rows, rows, m_n, K, eps, NORM, False, DEPENDENT, BN, BK)  # (BN,)
    out = _activate(out, ACT)
    if RESIDUAL:
        out += tl.load(residual + i_b * N + rows, mask=m_n, other=0.0).to(tl.float32)
    tl.store(y + i_b * N + rows, out.to(y.dtype.element_ty), mask=m_n)


@triton.jit
def _paired_projection_kernel(
    x, norm_w, norm_b, w, cos, sin, y,
    K, PAIRS, SECOND, Y_STRIDE, eps,
    ROTATED_PAIRS, KEY_PAIRS_FROM, HALF_K, COS_STRIDE, key_scale,
    NORM: tl.constexpr, GLU: tl.constexpr, ACT: tl.constexpr, DEPENDENT: tl.constexpr,
    BP: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    # Pair p combines weight rows r0 = 2p and r0 + 1 (the rotation) or r0 = p and p + SECOND (the GLU).
    i_b = tl.program_id(0)
    p = tl.program_id(1) * BP + tl.arange(0, BP)
    m_p = p < PAIRS
    if GLU:
        r0 = p
    else:
        r0 = 2 * p
    r1 = r0 + SECOND
    a, b = _row_sums(x + i_b * K, norm_w, norm_b, w, r0, r1, m_p, K, eps, NORM, True, DEPENDENT, BP, BK)  # (BP,) each
    y_row = y + i_b * Y_STRIDE
    if GLU:
        tl.store(y_row + p, (_activate(a, ACT) * b).to(y.dtype.element_ty), mask=m_p)
    else:
        # Interleaved pair (2i, 2i+1) of a q or k head at frequency i; v and g pass through.
        freq = p % HALF_K
        c = tl.load(cos + i_b * COS_STRIDE + freq, mask=m_p, other=1.0)
        s = tl.load(sin + i_b * COS_STRIDE + freq, mask=m_p, other=0.0)
        rotated = p < ROTATED_PAIRS
        scale = tl.where((p >= KEY_PAIRS_FROM) & rotated, key_scale, 1.0)
        tl.store(y_row + r0, (tl.where(rotated, a * c - b * s, a) * scale).to(y.dtype.element_ty), mask=m_p)
        tl.store(y_row + r1, (tl.where(rotated, b * c + a * s, b) * scale).to(y.dtype.element_ty), mask=m_p)


@triton.jit
def _gated_head_input(o_row, stats_row, g_row, head_w, head_b, h, V, NVB, eps, o_j, o_s, m_j,
                      HEAD_NORM: tl.constexpr, GATE: tl.constexpr):  # fmt: skip
    """swish(g) · HeadNorm(o) over head ``h``'s V columns ``(BV,)`` float32 (zeros past V)."""
    cols = h * V + o_j
    b_o = tl.load(o_row + cols, mask=m_j, other=0.0)
    if HEAD_NORM != 0:
        # The retention step's partial sums of this head: NVB blocks of Σo and Σo².
        p_s = stats_row + (h * NVB + o_s) * 2
        total = tl.sum(tl.load(p_s, mask=o_s < NVB, other=0.0), axis=0)
        squares = tl.sum(tl.load(p_s + 1, mask=o_s < NVB, other=0.0), axis=0)
        if HEAD_NORM == 2:
            mean = total / V
            var = tl.maximum(squares / V - mean * mean, 0.0)
            b_o = (b_o - mean) / tl.sqrt(var + eps)
            b_o = b_o * tl.load(head_w + cols, mask=m_j, other=0.0).to(tl.float32)
            b_o = b_o + tl.load(head_b + cols, mask=m_j, other=0.0).to(tl.float32)
        else:
            b_o = b_o / tl.sqrt(squares / V + eps)
    if GATE:
        b_g = tl.load(g_row + cols, mask=m_j, other=0.0).to(tl.float32)
        b_o = b_o * (b_g * tl.sigmoid(b_g))
    return tl.where(m_j, b_o, 0.0)


@triton.jit
def _gated_output_kernel(
    o, stats, qkvg, head_w, head_b, w, residual, y, z, z_new, position,
    B, N, H, V, NVB, QKVG_STRIDE, G_FROM, eps, STATE_ROWS,
    HEAD_NORM: tl.constexpr, GATE: tl.constexpr, DEPENDENT: tl.constexpr,
    BN: tl.constexpr, BV: tl.constexpr, BS: tl.constexpr, BZ: tl.constexpr,
):  # fmt: skip
    # y[b, n] = residual[b, n] + Σ_h Σ_j W[n, h·V + j] · swish(g[b, h·V + j]) · HeadNorm(o)[b, h·V + j]
    i_b = tl.program_id(0)
    rows = tl.program_id(1) * BN + tl.arange(0, BN)
    o_j = tl.arange(0, BV)
    o_s = tl.arange(0, BS)
    m_n = rows < N
    m_j = o_j < V
    m_w = m_n[:, None] & m_j[None, :]
    HV = H * V
    o_row, stats_row, g_row = o + i_b * HV, stats + i_b * H * NVB * 2, qkvg + i_b * QKVG_STRIDE + G_FROM
    b_w = tl.load(w + rows[:, None] * HV + o_j[None, :], mask=m_w, other=0.0)  # head 0's columns: before the wait
    await_previous(DEPENDENT)
    b_o = _gated_head_input(o_row, stats_row, g_row, head_w, head_b, 0, V, NVB, eps, o_j, o_s, m_j, HEAD_NORM, GATE)
    acc = b_w.to(tl.float32) * b_o[None, :]  # (BN, BV)
    for h in range(1, H):
        b_w = tl.load(w + rows[:, None] * HV + (h * V + o_j)[None, :], mask=m_w, other=0.0)
        b_o = _gated_head_input(o_row, stats_row, g_row, head_w, head_b, h, V, NVB, eps, o_j, o_s, m_j,
                                HEAD_NORM, GATE)  # fmt: skip
        acc += b_w.to(tl.float32) * b_o[None, :]
    out = tl.sum(acc, axis=1)  # (BN,)
    out += tl.load(residual + i_b * N + rows, mask=m_n, other=0.0).to(tl.float32)
    tl.store(y + i_b * N + rows, out.to(y.dtype.element_ty), mask=m_n)
    if (tl.program_id(0) == 0) & (tl.program_id(1) == 0):
        # The retention step's bookkeeping: its new key sums into place, every row one position on.
        for i0 in range(0, STATE_ROWS, BZ):
            o_z = i0 + tl.arange(0, BZ)
            tl.store(z + o_z, tl.load(z_new + o_z, mask=o_z < STATE_ROWS), mask=o_z < STATE_ROWS)
        o_p = tl.arange(0, BS)
        tl.store(position + o_p, tl.load(position + o_p, mask=o_p < B) + 1, mask=o_p < B)


def _batch_rows(x: torch.Tensor) -> int:
    B = x.shape[0]
    if not 1 <= B <= MAX_BATCH:
        raise ValueError(f"the fused decode kernels take 1 to {MAX_BATCH} rows, got {B}")
    return B


def _norm_args(norm_weight, norm_bias, w):
    """The norm's weight and bias pointers (the weight stands in for absent ones: never read)."""
    return (w if norm_weight is None else norm_weight), (w if norm_bias is None else norm_bias)


def projection(
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor,
    launch: MatvecLaunch,
    *,
    norm: str = "none",
    norm_weight: torch.Tensor | None = None,
    norm_bias: torch.Tensor | None = None,
    eps: float = 0.0,
    activation: str = "none",
    residual: torch.Tensor | None = None,
    dependent: bool = False,
) -> torch.Tensor:
    """``out = act(norm(x) Wᵀ) (+ residual)``, written into ``out``.

    Args:
        x: ``(B, K)`` contiguous input, B ≤ 4.
        weight: ``(N, K)`` contiguous.
        out: ``(B, N)`` contiguous output buffer (any float dtype; may be ``residual`` itself).
        launch: the program shape.
        norm: ``"none"``, ``"rmsnorm"`` (needs ``norm_weight``) or ``"layernorm"`` (``norm_weight`` and
            optionally ``norm_bias``), with ``eps``.
        activation: ``"none"``, ``"silu"``, ``"gelu"`` or ``"relu"``.
        residual: ``(B, N)`` added after the activation, or None.
        dependent: launch as a programmatic dependent of the previous kernel (:mod:`~.dependent`).

    Returns:
        ``out``.
    """
    N, K = weight.shape
    norm_w, norm_b = _norm_args(norm_weight, norm_bias, weight)
    _projection_kernel[(_batch_rows(x), triton.cdiv(N, launch.rows))](
        x, norm_w, norm_b, weight, out if residual is None else residual, out,
        N, K, eps,
        NORM=NORM_CODES[norm], ACT=ACTIVATION_CODES[activation],
        RESIDUAL=residual is not None, DEPENDENT=dependent, BN=launch.rows, BK=launch.cols,
        num_warps=launch.warps, num_stages=launch.stages, **launch_options(dependent, x.device),
    )  # fmt: skip
    return out


def paired_projection(
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor,
    launch: MatvecLaunch,
    *,
    norm: str = "none",
    norm_weight: torch.Tensor | None = None,
    norm_bias: torch.Tensor | None = None,
    eps: float = 0.0,
    glu_activation: str | None = None,
    rotation: tuple[torch.Tensor, torch.Tensor] | None = None,
    rotated_rows: int = 0,
    key_rows_from: int = 0,
    head_dim: int = 2,
    key_scale: float = 1.0,
    dependent: bool = False,
) -> torch.Tensor:
    """A product whose epilogue combines two weight rows: the GLU or the rotation of q and k.

    With ``glu_activation``, ``weight`` is ``(2F, K)`` (fc1 over the gate) and ``out`` ``(B, F)`` receives
    act(x W_fc1ᵀ) ⊙ (x W_gateᵀ). Otherwise ``out`` ``(B, N)`` receives x Wᵀ with its first ``rotated_rows`` columns
    rotated in interleaved pairs (2i, 2i + 1) at frequency i mod K/2 by ``rotation`` (cos, sin ``(B or 1, …, K/2)``
    float32), and the rotated columns from ``key_rows_from`` on scaled by ``key_scale`` (k's K^−½).

    Args:
        x: ``(B, K)`` contiguous input, B ≤ 4; the norm arguments and ``dependent`` as :func:`projection`.
        weight: ``(N, K)`` contiguous, N even.
        out: the output buffer.
        launch: the program shape (``rows / 2`` pairs per program).

    Returns:
        ``out``.
    """
    N, K = weight.shape
    if N % 2:
        raise ValueError(f"paired_projection needs an even number of weight rows, got {N}")
    norm_w, norm_b = _norm_args(norm_weight, norm_bias, weight)
    glu = glu_activation is not None
    pairs = N // 2
    if glu:
        cos = sin = weight
        cos_stride = 0
    else:
        cos, sin = rotation
        cos_stride = 0 if cos.shape[0] == 1 else cos[0].numel()
    if launch.rows < 2:
        raise ValueError(f"paired_projection needs launch.rows >= 2 (a pair of rows), got {launch.rows}")
    _paired_projection_kernel[(_batch_rows(x), triton.cdiv(pairs, launch.rows // 2))](
        x, norm_w, norm_b, weight, cos, sin, out,
        K, pairs, pairs if glu else 1, out.shape[1], eps,
        rotated_rows // 2, key_rows_from // 2, head_dim // 2, cos_stride, key_scale,
        NORM=NORM_CODES[norm], GLU=glu, ACT=ACTIVATION_CODES[glu_activation or "none"], DEPENDENT=dependent,
        BP=launch.rows // 2, BK=launch.cols,
        num_warps=launch.warps, num_stages=launch.stages, **launch_options(dependent, x.device),
    )  # fmt: skip
    return out


def gated_output_residual(
    o: torch.Tensor,
    stats: torch.Tensor,
    qkvg: torch.Tensor,
    gate_from: int | None,
    weight: torch.Tensor,
    residual: torch.Tensor,
    out: torch.Tensor,
    launch: MatvecLaunch,
    *,
    head_norm: str,
    head_weight: torch.Tensor | None,
    head_bias: torch.Tensor | None,
    eps: float,
    z: torch.Tensor,
    z_new: torch.Tensor,
    position: torch.Tensor,
    dependent: bool = False,
) -> torch.Tensor:
    """``out = residual + (swish(g) ⊙ HeadNorm(o)) W_Oᵀ``, and the end of the retention step.

    Args:
        o: ``(B, H, V)`` float32 retention outputs (row-normalised), from :func:`~.retention.retention_step_with_stats`.
        stats: ``(B, H, NVB, 2)`` its partial sums Σo, Σo² per block of V.
        qkvg: ``(B, N_qkvg)`` the stacked product's output; g is columns ``gate_from`` on (None: no gate).
        weight: ``(D, H·V)`` W_O.
        residual: ``(B, D)`` the block input; ``out`` ``(B, D)`` may be the same buffer.
        launch: the program shape (``cols`` is unused: a program reads one head of V columns at a time).
        head_norm: ``"none"``, ``"rms"`` or ``"groupnorm"`` (with ``head_weight`` and ``head_bias`` ``(H·V,)``).
        eps: the head norm's epsilon.
        z: ``(B, H, K)`` the layer's state key sums, which the first program overwrites with ``z_new``.
        z_new: ``(B, H, K)`` the step's new key sums.
        position: ``(B,)`` the layer's state positions, which the first program advances by one.
        dependent: as :func:`projection`.

    Returns:
        ``out``.
    """
    B, H, V = o.shape
    N = weight.shape[0]
    NVB = stats.shape[2]
    BV = next_power_of_2(V)
    _gated_output_kernel[(_batch_rows(o), triton.cdiv(N, launch.rows))](
        o, stats, qkvg, weight if head_weight is None else head_weight, weight if head_bias is None else head_bias,
        weight, residual, out, z, z_new, position,
        B, N, H, V, NVB, qkvg.shape[1], 0 if gate_from is None else gate_from, eps, z.numel(),
        HEAD_NORM=HEAD_NORM_CODES[head_norm], GATE=gate_from is not None, DEPENDENT=dependent,
        BN=launch.rows, BV=BV, BS=next_power_of_2(max(NVB, B)), BZ=1024,
        num_warps=launch.warps, num_stages=launch.stages, **launch_options(dependent, o.device),
    )  # fmt: skip
    return out
