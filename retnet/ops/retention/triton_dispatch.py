"""The Triton backend of :func:`retnet.ops.retention.retention`: picks the kernel for a form (SPEC §3).

``parallel`` and ``chunkwise`` both run the chunkwise kernels (they compute the same function; the kernels'
chunk length is a tuning choice, so ``chunk_size`` does not change the result). ``recurrent`` runs the fused
step kernel for short segments without gradients (decoding) and the chunkwise kernels otherwise.
"""

from __future__ import annotations

import logging

import torch

from .chunkwise import chunk_retention
from .recurrent import RECURRENT_MAX_T, retention_step
from .reference import chunkwise_ref
from .state import RetentionState

logger = logging.getLogger(__name__)
_fp64_logged = False


def triton_limitation(q: torch.Tensor, form: str, has_initial_state: bool, needs_grad: bool) -> str | None:
    """Why the kernels must not run this call, or None when they may.

    On sm90 (H200, Triton 3.6) the chunkwise kernels give wrong outputs and gradients when an initial state is
    combined with 16-bit inputs: the state-dependent terms of the normaliser (forward) and of dq (backward) are
    corrupted in a few rows, while float32 and stateless 16-bit runs match the reference. Until that is fixed,
    such calls are refused rather than answered wrongly. The decode-step kernel is not affected.
    """
    if not (q.is_cuda and has_initial_state and q.dtype in (torch.float16, torch.bfloat16)):
        return None
    if form == "recurrent" and q.shape[1] <= RECURRENT_MAX_T and not needs_grad:
        return None
    return "the chunkwise Triton kernels do not yet support an initial state with 16-bit inputs on CUDA"


def triton_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    state: RetentionState,
    *,
    form: str,
    chunk_size: int,
    normalize: bool,
) -> tuple[torch.Tensor, RetentionState]:
    """Retention on the Triton kernels, with the reference's contract (see ``reference.py``).

    Args:
        q, k: ``(B, T, H, K)``; v: ``(B, T, H, V)``; fp16, bf16 or fp32 (float64 runs the reference: the
            kernels accumulate in float32, which would not meet float64 tolerances).
        log_decay: ``(H,)`` log γ.
        state: the initial :class:`RetentionState` (never None here).
        form: ``"parallel"``, ``"recurrent"`` or ``"chunkwise"``.
        chunk_size: accepted for signature parity; the kernels pick their own chunk length.
        normalize: apply SPEC §3 factors 2 and 3.

    Returns:
        ``(o, final_state)`` as the reference forms return them.
    """
    global _fp64_logged
    if v.dtype == torch.float64:
        if not _fp64_logged:
            logger.warning("retention: float64 inputs run the PyTorch chunkwise reference, not the Triton kernels")
            _fp64_logged = True
        return chunkwise_ref(q, k, v, log_decay, state, normalize, chunk_size)
    T = q.shape[1]
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, state.S))
    if form == "recurrent" and T <= RECURRENT_MAX_T and not needs_grad:
        S = state.S.float().contiguous().clone()
        z = state.z.float().contiguous().clone()
        pos = state.position.clone()
        o = retention_step(q, k, v, log_decay, RetentionState(S, z, pos), normalize=normalize)
        return o, RetentionState(S, z, pos)
    o, S, z = chunk_retention(q, k, v, log_decay, state.S, state.z, state.position, normalize)
    return o, RetentionState(S, z, state.position + T)
