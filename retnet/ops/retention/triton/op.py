"""Differentiable chunkwise retention on the Triton kernels (paper §2.1, Eq. 7; docs/spec.md §3).

The forward and backward launchers (``forward.py``, ``backward.py``) are registered as ``torch.library`` custom ops,
so ``torch.compile`` keeps them whole (no graph breaks; fake implementations give the output shapes) and autograd
joins them. :func:`chunk_retention` reads the tuning in effect once (``tuning.tuning_ints``) and passes it, with
the keep-states decision, to both ops as ints (the form a custom op's schema takes); each computes its
:class:`~.tuning.ChunkPlan` from them, so the backward launches what the forward planned even when it runs after
the tuning's scope or on autograd's own thread.
"""

from typing import Optional

import torch
import triton

from .backward import chunk_retention_bwd
from .forward import chunk_retention_fwd
from .tuning import KEEP_STATES_POLICIES, MAX_K, chunk_len, keeps_states, plan_from_ints, tuning_ints


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
    tuning: list[int],
    keep_states: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    plan = plan_from_ints(k.shape[-1], v.shape[-1], q.dtype, tuple(tuning), keep_states)
    return chunk_retention_fwd(q, k, v, log_decay, S0, z0, position, normalize, store_final, plan)


@_chunk_fwd_op.register_fake
def _(q, k, v, log_decay, S0, z0, position, normalize, store_final, tuning, keep_states):
    B, T, H, K = q.shape
    V = v.shape[-1]
    rden = q.new_empty(B, H, T, dtype=torch.float32)
    h = k.new_empty(B, H, triton.cdiv(T, chunk_len(T)), K, V) if keep_states else k.new_empty(0)
    if not store_final:
        return torch.empty_like(v), rden, rden.new_empty(0), rden.new_empty(0), h
    return torch.empty_like(v), rden, rden.new_empty(B, H, K, V), rden.new_empty(B, H, K), h


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
    h: Optional[torch.Tensor],  # noqa: UP045
    tuning: list[int],
    keep_states: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    plan = plan_from_ints(k.shape[-1], v.shape[-1], q.dtype, tuple(tuning), keep_states)
    return chunk_retention_bwd(q, k, v, log_decay, S0, position, rden, do, dS, h, plan)


@_chunk_bwd_op.register_fake
def _(q, k, v, log_decay, S0, position, rden, do, dS, h, tuning, keep_states):
    dS0 = torch.empty_like(S0) if S0 is not None else rden.new_empty(0)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dS0


def _setup_context(ctx, inputs, output):
    q, k, v, log_decay, S0, z0, position, normalize, store_final, tuning, keep_states = inputs
    _, rden, _, _, h = output
    ctx.has_s0 = S0 is not None
    ctx.tuning = tuning
    ctx.keep_states = keep_states
    S0 = S0 if S0 is not None else rden.new_empty(0)
    ctx.save_for_backward(q, k, v, log_decay, S0, position, rden, h)
    ctx.mark_non_differentiable(rden, output[3], h)
    ctx.set_materialize_grads(False)  # unused outputs (h above all) get None, not a zero-filled gradient


def _backward(ctx, do, d_rden, dS, dz, dh):
    q, k, v, log_decay, S0, position, rden, h = ctx.saved_tensors
    S0 = S0 if ctx.has_s0 else None
    h = h if ctx.keep_states else None
    do = torch.zeros_like(v) if do is None else do  # only the final state's gradient flows
    dS = None if dS is None or dS.numel() == 0 else dS.float().contiguous()
    dq, dk, dv, dS0 = _chunk_bwd_op(
        q, k, v, log_decay, S0, position, rden, do.contiguous(), dS, h, ctx.tuning, ctx.keep_states
    )  # fmt: skip
    return dq, dk, dv, None, (dS0 if ctx.has_s0 else None), None, None, None, None, None, None


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

    The launches follow :func:`~.tuning.current_tuning` (``retention_tuning``), fixed here for the backward too.

    Args:
        q: ``(B, T, H, K)`` fp16/bf16/fp32, K <= ``MAX_K``.
        k: ``(B, T, H, K)`` of q's dtype, already scaled by K^−½.
        v: ``(B, T, H, V)`` same dtype.
        log_decay: ``(H,)`` float32 log γ.
        S0: ``(B, H, K, V)`` float32 initial state (gradients flow to it), or None for an empty state.
        z0: ``(B, H, K)`` float32 initial key sum (no gradient: the normaliser is detached); None with S0 None.
        position: ``(B,)`` int64 absolute position of the first token; negative positions are left padding.
        normalize: apply docs/spec.md §3 factors 2 and 3.
        output_final_state: compute the final state (else S and z come back as empty tensors).

    Returns:
        ``(o, S, z)``: o ``(B, T, H, V)`` in v's dtype; final state S and z in float32.

    Raises:
        ValueError: K > ``MAX_K``, or only one of S0 and z0 given.
    """
    if q.shape[-1] > MAX_K:
        raise ValueError(f"the Triton chunkwise kernels support K <= {MAX_K}, got K = {q.shape[-1]}")
    if (S0 is None) != (z0 is None):
        raise ValueError("S0 and z0 must both be given or both be None")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if S0 is not None:
        S0, z0 = S0.float().contiguous(), z0.float().contiguous()
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, *(() if S0 is None else (S0,))))
    B, T, H, K = q.shape
    V = v.shape[-1]
    tuning = tuning_ints()
    policy = KEEP_STATES_POLICIES[tuning[0]]
    keep = needs_grad and keeps_states(policy, T, K, V, q.element_size(), v.element_size())
    o, _, S, z, _ = _chunk_fwd_op(
        q, k, v, log_decay.float().contiguous(), S0, z0, position.long().contiguous(), normalize,
        output_final_state, tuning, keep,
    )  # fmt: skip
    return o, S, z
