"""RWKV-4's WKV on Triton: a sequential loop over the tokens per (batch, channel block), forward and backward.

The kernels follow the structure of the official RWKV-4 CUDA kernel: one lane per (batch, channel), a loop over T
that reads k and v once and keeps the stable state (a, b, p) in registers. They were tested against
:func:`~retnet.baselines.rwkv.wkv_chunked` and :func:`~retnet.baselines.rwkv.wkv_step` under Triton's CPU
interpreter.

Forward (per batch row and channel, t = 0 … T−1, from the state (a_0, b_0, p_0); exactly ``wkv_step``'s
arithmetic, with E(x) = e^x and E(x) := 0 below ``EXP_FLOOR``)::

    q_t = max(p_t, u + k_t),   e1_t = E(p_t − q_t),   e2_t = E(u + k_t − q_t),   s_t = e1_t b_t + e2_t
    wkv_t = (e1_t a_t + e2_t v_t) / s_t
    p_{t+1} = max(p_t − w, k_t),   f1_t = E(p_t − w − p_{t+1}),   f2_t = E(k_t − p_{t+1})
    a_{t+1} = f1_t a_t + f2_t v_t,   b_{t+1} = f1_t b_t + f2_t

An empty state is p = ``NEG``, a = b = 0. The unscaled sums A_t = a_t e^{p_t}, B_t = b_t e^{p_t} obey
A_{t+1} = e^{−w} A_t + e^{k_t} v_t (B likewise with v = 1) and wkv_t = (A_t + e^{u+k_t} v_t) / (B_t + e^{u+k_t}).

Backward. Write g_t = ∂L/∂wkv_t ``(B, T, D)`` and ĝa, ĝb, ĝp ``(B, D)`` for the gradients of the final state (zero
when it gets none). The adjoints of the unscaled sums, α_t = ∂L/∂A_t and β_t = ∂L/∂B_t, are carried scaled by
e^{p_t} (α̂_t = α_t e^{p_t}, β̂_t = β_t e^{p_t}). Starting from α̂_T = ĝa, β̂_T = ĝb, for t = T−1 … 0 with
c_t = g_t / s_t::

    ∂L/∂v_t = c_t e2_t + f2_t α̂_{t+1}
    ∂L/∂k_t = c_t e2_t (v_t − wkv_t) + f2_t (α̂_{t+1} v_t + β̂_{t+1}) + [p_{t+1} takes k_t] π_{t+1}
    ∂L/∂u  += c_t e2_t (v_t − wkv_t)
    ∂L/∂w  += −f1_t (α̂_{t+1} a_t + β̂_{t+1} b_t) − [p_{t+1} takes p_t − w] π_{t+1}
    α̂_t = c_t e1_t + f1_t α̂_{t+1},   β̂_t = −c_t e1_t wkv_t + f1_t β̂_{t+1}

π carries the gradient of the final log scale p_T itself: with a_T = A_T e^{−p_T} and b_T = B_T e^{−p_T}, the loss
sees p_T apart from A_T and B_T through π_T = ĝp − ĝa a_T − ĝb b_T. Each p_{t+1} = max(p_t − w, k_t) hands π_{t+1}
to k_t when the key set the maximum, else to p_t (π_t = π_{t+1}) and −π_{t+1} to w; a tie splits it in halves, as
``torch.maximum``'s gradient does. The initial state gets ∂L/∂a_0 = α̂_0, ∂L/∂b_0 = β̂_0 and ∂L/∂p_0 = α̂_0 a_0 +
β̂_0 b_0 + π_0. The scaled adjoints stay bounded: from an empty state b_t ≥ 1 after the first token (one of f1_t,
f2_t is 1, and b_1 = 1), so s_t ≥ e1_t, e2_t and |c_t e1_t|, |c_t e2_t| ≤ |g_t|. The backward applies the same E
(with its floor) to every exponential, so the gradients are those of the forward as computed. ∂L/∂w and ∂L/∂u are
summed over the batch rows, ``(D,)``; ∂L/∂w is for w itself (the caller's w = exp(time_decay) is differentiated by
autograd outside the op).

The backward recomputes the per-step states (a_t, b_t, p_t), three ``(B, T, D)`` scratch tensors, with the forward
kernel and then runs the reverse loop, so the forward saves only its inputs. Both ops are ``torch.library`` custom
ops with fake implementations, so ``torch.compile(fullgraph=True)`` keeps them whole. On the GPU Triton compiles
float32 ``exp`` and ``/`` to the fast approximations (``ex2.approx``, ``div.full``: a few ulps), as the official
kernel's fast-math build does.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from ..ops.triton_utils import check_cuda_or_interpreter, interpreter_active, next_power_of_2
from .rwkv import EXP_FLOOR, NEG

_NEG = tl.constexpr(NEG)
_EXP_FLOOR = tl.constexpr(EXP_FLOOR)
# E(x) is written out in each kernel, tl.where(x < _EXP_FLOOR, 0.0, tl.exp(x)), rather than as a @triton.jit
# helper: the interpreter re-patches the language on every nested call, which made the CPU tests 3x slower.

# One lane per channel on the GPU (the official kernel's one thread per channel); the interpreter pays per
# program, not per element, so there a block covers up to 128 channels at once.
GPU_BLOCK = 32
INTERPRETER_MAX_BLOCK = 128


class WKVState(NamedTuple):
    """The stable WKV state, each ``(B, D)``: a, b the numerator / denominator sums scaled by e^{−p}, p their log
    scale (an empty state is p = ``NEG``, a = b = 0)."""

    a: torch.Tensor
    b: torch.Tensor
    p: torch.Tensor


@triton.jit
def _wkv_fwd_kernel(
    k_ptr, v_ptr, w_ptr, u_ptr,  # (B, T, D), (B, T, D), (D,), (D,)
    a0_ptr, b0_ptr, p0_ptr,  # (B, D) initial state (read if HAS_STATE)
    y_ptr,  # (B, T, D) wkv (written if STORE_Y)
    aT_ptr, bT_ptr, pT_ptr,  # (B, D) final state
    sa_ptr, sb_ptr, sp_ptr,  # (B, T, D) state before each token (written if STORE_STATES)
    T, D,
    BLOCK: tl.constexpr, HAS_STATE: tl.constexpr, STORE_Y: tl.constexpr, STORE_STATES: tl.constexpr,
):  # fmt: skip
    i_b = tl.program_id(0).to(tl.int64)
    o_d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) channels
    m_d = o_d < D
    b_w = tl.load(w_ptr + o_d, mask=m_d, other=0.0)
    b_u = tl.load(u_ptr + o_d, mask=m_d, other=0.0)
    o_s = i_b * D + o_d  # offsets into (B, D)
    if HAS_STATE:
        b_a = tl.load(a0_ptr + o_s, mask=m_d, other=0.0)
        b_b = tl.load(b0_ptr + o_s, mask=m_d, other=0.0)
        b_p = tl.load(p0_ptr + o_s, mask=m_d, other=_NEG)
    else:
        b_a = tl.zeros([BLOCK], dtype=b_w.dtype)
        b_b = tl.zeros([BLOCK], dtype=b_w.dtype)
        b_p = tl.full([BLOCK], _NEG, dtype=b_w.dtype)
    o_t = i_b * T * D + o_d  # offsets of token t into (B, T, D)
    for _ in range(T):
        b_k = tl.load(k_ptr + o_t, mask=m_d, other=0.0)
        b_v = tl.load(v_ptr + o_t, mask=m_d, other=0.0)
        if STORE_STATES:
            tl.store(sa_ptr + o_t, b_a, mask=m_d)
            tl.store(sb_ptr + o_t, b_b, mask=m_d)
            tl.store(sp_ptr + o_t, b_p, mask=m_d)
        if STORE_Y:
            b_ww = b_u + b_k
            b_q = tl.maximum(b_p, b_ww)
            b_x = b_p - b_q
            b_e1 = tl.where(b_x < _EXP_FLOOR, 0.0, tl.exp(b_x))
            b_x = b_ww - b_q
            b_e2 = tl.where(b_x < _EXP_FLOOR, 0.0, tl.exp(b_x))
            tl.store(y_ptr + o_t, (b_e1 * b_a + b_e2 * b_v) / (b_e1 * b_b + b_e2), mask=m_d)
        b_ww = b_p - b_w
        b_q = tl.maximum(b_ww, b_k)
        b_x = b_ww - b_q
        b_f1 = tl.where(b_x < _EXP_FLOOR, 0.0, tl.exp(b_x))
        b_x = b_k - b_q
        b_f2 = tl.where(b_x < _EXP_FLOOR, 0.0, tl.exp(b_x))
        b_a = b_f1 * b_a + b_f2 * b_v
        b_b = b_f1 * b_b + b_f2
        b_p = b_q
        o_t += D
    tl.store(aT_ptr + o_s, b_a, mask=m_d)
    tl.store(bT_ptr + o_s, b_b, mask=m_d)
    tl.store(pT_ptr + o_s, b_p, mask=m_d)


@triton.jit
def _wkv_bwd_kernel(
    k_ptr, v_ptr, w_ptr, u_ptr,  # (B, T, D), (B, T, D), (D,), (D,)
    sa_ptr, sb_ptr, sp_ptr,  # (B, T, D) state before each token
    aT_ptr, bT_ptr,  # (B, D) final state (read if HAS_FINAL_GRAD)
    gy_ptr,  # (B, T, D) gradient of wkv
    gaT_ptr, gbT_ptr, gpT_ptr,  # (B, D) gradient of the final state (read if HAS_FINAL_GRAD)
    gk_ptr, gv_ptr,  # (B, T, D)
    gw_ptr, gu_ptr,  # (B, D) per-row parts of the gradients of w and u
    ga0_ptr, gb0_ptr, gp0_ptr,  # (B, D) gradient of the initial state
    T, D,
    BLOCK: tl.constexpr, HAS_FINAL_GRAD: tl.constexpr,
):  # fmt: skip
    i_b = tl.program_id(0).to(tl.int64)
    o_d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) channels
    m_d = o_d < D
    b_w = tl.load(w_ptr + o_d, mask=m_d, other=0.0)
    b_u = tl.load(u_ptr + o_d, mask=m_d, other=0.0)
    o_s = i_b * D + o_d  # offsets into (B, D)
    if HAS_FINAL_GRAD:
        b_alpha = tl.load(gaT_ptr + o_s, mask=m_d, other=0.0)  # α̂_T
        b_beta = tl.load(gbT_ptr + o_s, mask=m_d, other=0.0)  # β̂_T
        b_pi = (
            tl.load(gpT_ptr + o_s, mask=m_d, other=0.0)
            - b_alpha * tl.load(aT_ptr + o_s, mask=m_d, other=0.0)
            - b_beta * tl.load(bT_ptr + o_s, mask=m_d, other=0.0)
        )  # π_T
    else:
        b_alpha = tl.zeros([BLOCK], dtype=b_w.dtype)
        b_beta = tl.zeros([BLOCK], dtype=b_w.dtype)
        b_pi = tl.zeros([BLOCK], dtype=b_w.dtype)
    b_gw = tl.zeros([BLOCK], dtype=b_w.dtype)
    b_gu = tl.zeros([BLOCK], dtype=b_w.dtype)
    b_a = tl.zeros([BLOCK], dtype=b_w.dtype)  # the initial state once the loop has reached t = 0
    b_b = tl.zeros([BLOCK], dtype=b_w.dtype)
    o_t = (i_b * T + T - 1) * D + o_d  # offsets of token t into (B, T, D), from the last token
    for _ in range(T):
        b_k = tl.load(k_ptr + o_t, mask=m_d, other=0.0)
        b_v = tl.load(v_ptr + o_t, mask=m_d, other=0.0)
        b_a = tl.load(sa_ptr + o_t, mask=m_d, other=0.0)
        b_b = tl.load(sb_ptr + o_t, mask=m_d, other=0.0)
        b_p = tl.load(sp_ptr + o_t, mask=m_d, other=0.0)
        b_g = tl.load(gy_ptr + o_t, mask=m_d, other=0.0)
        # the output at t, as in the forward
        b_ww = b_u + b_k
        b_q = tl.maximum(b_p, b_ww)
        b_x = b_p - b_q
        b_e1 = tl.where(b_x < _EXP_FLOOR, 0.0, tl.exp(b_x))
        b_x = b_ww - b_q
        b_e2 = tl.where(b_x < _EXP_FLOOR, 0.0, tl.exp(b_x))
        b_s = b_e1 * b_b + b_e2
        b_y = (b_e1 * b_a + b_e2 * b_v) / b_s
        b_c = b_g / b_s
        # the transition to t + 1, as in the forward
        b_ww = b_p - b_w
        b_q = tl.maximum(b_ww, b_k)
        b_x = b_ww - b_q
        b_f1 = tl.where(b_x < _EXP_FLOOR, 0.0, tl.exp(b_x))
        b_x = b_k - b_q
        b_f2 = tl.where(b_x < _EXP_FLOOR, 0.0, tl.exp(b_x))
        b_to_k = tl.where(b_k > b_ww, 1.0, tl.where(b_k == b_ww, 0.5, 0.0))  # share of π_{t+1} the key takes
        b_gk_out = b_c * b_e2 * (b_v - b_y)
        b_gu += b_gk_out
        tl.store(gv_ptr + o_t, b_c * b_e2 + b_f2 * b_alpha, mask=m_d)
        tl.store(gk_ptr + o_t, b_gk_out + b_f2 * (b_alpha * b_v + b_beta) + b_to_k * b_pi, mask=m_d)
        b_gw -= b_f1 * (b_alpha * b_a + b_beta * b_b) + (1.0 - b_to_k) * b_pi
        b_pi = (1.0 - b_to_k) * b_pi
        b_alpha = b_c * b_e1 + b_f1 * b_alpha
        b_beta = b_f1 * b_beta - b_c * b_e1 * b_y
        o_t -= D
    tl.store(gw_ptr + o_s, b_gw, mask=m_d)
    tl.store(gu_ptr + o_s, b_gu, mask=m_d)
    tl.store(ga0_ptr + o_s, b_alpha, mask=m_d)
    tl.store(gb0_ptr + o_s, b_beta, mask=m_d)
    tl.store(gp0_ptr + o_s, b_alpha * b_a + b_beta * b_b + b_pi, mask=m_d)


def _grid(B: int, D: int, block: int) -> tuple[int, int]:
    return (B, triton.cdiv(D, block))


def _num_warps(block: int) -> int:
    return max(1, min(8, block // 32))  # one lane per channel: a warp per 32 channels


def _run_forward(k, v, w, u, a0, b0, p0, block, store_y, store_states):
    """Launch the forward kernel; returns ``(y | None, aT, bT, pT, states | None)``."""
    B, T, D = k.shape
    final = [k.new_empty(B, D) for _ in range(3)]
    y = torch.empty_like(k) if store_y else None
    states = [torch.empty_like(k) for _ in range(3)] if store_states else None
    has_state = a0 is not None
    _wkv_fwd_kernel[_grid(B, D, block)](
        k, v, w, u, a0 if has_state else k, b0 if has_state else k, p0 if has_state else k, k if y is None else y,
        *final, *(states if store_states else (k, k, k)), T, D,
        BLOCK=block, HAS_STATE=has_state, STORE_Y=store_y, STORE_STATES=store_states, num_warps=_num_warps(block),
    )  # fmt: skip
    return y, *final, states


@torch.library.custom_op("retnet::wkv_fwd", mutates_args=())
def _wkv_fwd_op(
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    a0: Optional[torch.Tensor],  # noqa: UP045 (custom_op schema inference)
    b0: Optional[torch.Tensor],  # noqa: UP045
    p0: Optional[torch.Tensor],  # noqa: UP045
    block: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    y, aT, bT, pT, _ = _run_forward(k, v, w, u, a0, b0, p0, block, store_y=True, store_states=False)
    return y, aT, bT, pT


@_wkv_fwd_op.register_fake
def _(k, v, w, u, a0, b0, p0, block):
    B, _, D = k.shape
    return torch.empty_like(k), k.new_empty(B, D), k.new_empty(B, D), k.new_empty(B, D)


@torch.library.custom_op("retnet::wkv_bwd", mutates_args=())
def _wkv_bwd_op(
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    a0: Optional[torch.Tensor],  # noqa: UP045
    b0: Optional[torch.Tensor],  # noqa: UP045
    p0: Optional[torch.Tensor],  # noqa: UP045
    gy: torch.Tensor,
    gaT: Optional[torch.Tensor],  # noqa: UP045
    gbT: Optional[torch.Tensor],  # noqa: UP045
    gpT: Optional[torch.Tensor],  # noqa: UP045
    block: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    B, T, D = k.shape
    _, aT, bT, _, (sa, sb, sp) = _run_forward(k, v, w, u, a0, b0, p0, block, store_y=False, store_states=True)
    gk, gv = torch.empty_like(k), torch.empty_like(k)
    gw_rows, gu_rows, ga0, gb0, gp0 = (k.new_empty(B, D) for _ in range(5))
    has_final_grad = gaT is not None
    _wkv_bwd_kernel[_grid(B, D, block)](
        k, v, w, u, sa, sb, sp, aT, bT, gy, *((gaT, gbT, gpT) if has_final_grad else (aT, aT, aT)),
        gk, gv, gw_rows, gu_rows, ga0, gb0, gp0, T, D, BLOCK=block, HAS_FINAL_GRAD=has_final_grad,
        num_warps=_num_warps(block),
    )  # fmt: skip
    return gk, gv, gw_rows.sum(0), gu_rows.sum(0), ga0, gb0, gp0


@_wkv_bwd_op.register_fake
def _(k, v, w, u, a0, b0, p0, gy, gaT, gbT, gpT, block):
    B, _, D = k.shape
    state = [k.new_empty(B, D) for _ in range(3)]
    return torch.empty_like(k), torch.empty_like(k), torch.empty_like(w), torch.empty_like(u), *state


def _setup_context(ctx, inputs, output):
    k, v, w, u, a0, b0, p0, block = inputs
    ctx.has_state = a0 is not None
    ctx.block = block
    ctx.save_for_backward(k, v, w, u, *((a0, b0, p0) if ctx.has_state else ()))
    ctx.set_materialize_grads(False)  # outputs without a gradient get None, not a zero-filled tensor


def _backward(ctx, gy, gaT, gbT, gpT):
    k, v, w, u, *state = ctx.saved_tensors
    a0, b0, p0 = state if ctx.has_state else (None, None, None)
    gy = torch.zeros_like(k) if gy is None else gy.contiguous()
    final = (gaT, gbT, gpT)
    if all(g is None for g in final):
        final = (None, None, None)
    else:  # some part of the final state gets a gradient: the others get zeros
        final = tuple(k.new_zeros(k.shape[0], k.shape[2]) if g is None else g.contiguous() for g in final)
    gk, gv, gw, gu, ga0, gb0, gp0 = _wkv_bwd_op(k, v, w, u, a0, b0, p0, gy, *final, ctx.block)
    if not ctx.has_state:
        ga0 = gb0 = gp0 = None
    return gk, gv, gw, gu, ga0, gb0, gp0, None


_wkv_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def default_block(device: torch.device, D: int) -> int:
    """Channels per program: ``GPU_BLOCK`` on CUDA; under the interpreter D's power of two up to
    ``INTERPRETER_MAX_BLOCK``."""
    if interpreter_active() and device.type != "cuda":
        return min(INTERPRETER_MAX_BLOCK, next_power_of_2(D))
    return GPU_BLOCK


def _check_inputs(k, v, w, u, state) -> None:
    for name, x in (("k", k), ("v", v), ("w", w), ("u", u)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if k.dim() != 3 or k.shape[1] == 0 or k.shape[0] == 0:
        raise ValueError(f"k must be (B, T, D) with B, T >= 1, got shape {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    B, _, D = k.shape
    if w.shape != (D,) or u.shape != (D,):
        raise ValueError(f"w and u must be (D,) = ({D},), got {tuple(w.shape)} and {tuple(u.shape)}")
    tensors = {"k": k, "v": v, "w": w, "u": u}
    if state is not None:
        if len(state) != 3:
            raise ValueError(f"initial_state must be (a, b, p), got {len(state)} tensors")
        for name, x in zip("abp", state):
            if not isinstance(x, torch.Tensor) or x.shape != (B, D):
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"initial_state.{name} must be (B, D) = ({B}, {D}), got {got}")
            tensors[f"initial_state.{name}"] = x
    if k.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"k must be float32 or float64, got {k.dtype}")
    wrong = {n: x.dtype for n, x in tensors.items() if x.dtype != k.dtype}
    if wrong:
        raise ValueError(f"every input must have k's dtype {k.dtype}; got {wrong}")
    wrong = {n: str(x.device) for n, x in tensors.items() if x.device != k.device}
    if wrong:
        raise ValueError(f"every input must be on k's device {k.device}; got {wrong}")


def wkv_triton(
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    initial_state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    *,
    block: int | None = None,
) -> tuple[torch.Tensor, WKVState]:
    """Differentiable stable RWKV-4 WKV over a segment on the Triton kernels (:func:`~.rwkv.wkv_step` per token).

    Gradients flow to k, v, w, u, the initial state, from the output and from the final state.

    Args:
        k: ``(B, T, D)`` float32 or float64 keys.
        v: ``(B, T, D)`` values, k's dtype.
        w: ``(D,)`` decay rates (positive; not checked), k's dtype.
        u: ``(D,)`` bonus, k's dtype.
        initial_state: ``(a, b, p)``, each ``(B, D)`` of k's dtype, or None for the empty state.
        block: channels per program (a power of two); None for :func:`default_block`.

    Returns:
        ``(wkv (B, T, D), WKVState(a, b, p))`` with the final state, each ``(B, D)``, all in k's dtype.

    Raises:
        TypeError: an input that is not a tensor.
        ValueError: mismatched shapes, dtypes or devices, T or B of 0, or a bad ``block``.
        RuntimeError: CPU tensors without Triton's interpreter.
    """
    _check_inputs(k, v, w, u, initial_state)
    block = default_block(k.device, k.shape[-1]) if block is None else block
    if not isinstance(block, int) or block < 1 or block & (block - 1):
        raise ValueError(f"block must be a positive power of two, got {block!r}")
    check_cuda_or_interpreter(k)
    a0, b0, p0 = (None, None, None) if initial_state is None else (x.contiguous() for x in initial_state)
    y, a, b, p = _wkv_fwd_op(k.contiguous(), v.contiguous(), w.contiguous(), u.contiguous(), a0, b0, p0, block)
    return y, WKVState(a, b, p)
