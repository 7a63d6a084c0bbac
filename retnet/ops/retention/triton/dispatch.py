"""The Triton backend of :func:`retnet.ops.retention.retention`: picks the kernel for a form (docs/spec.md §3).

``parallel`` and ``chunkwise`` both run the chunkwise kernels (they compute the same function; the kernels'
chunk length is a tuning choice, so ``chunk_size`` does not change the result and is not used: an explicit one is
logged once per value). ``recurrent`` runs the fused step kernel for short segments without gradients (decoding)
and the chunkwise kernels otherwise.
"""

from __future__ import annotations

import logging

import torch

from ..dispatch import REFERENCE_CHUNK_SIZE
from ..reference import chunkwise_ref
from ..state import RetentionState
from .op import chunk_retention
from .step import retention_step
from .tuning import CHUNK, MAX_K

logger = logging.getLogger(__name__)
_fp64_logged = False
_chunk_sizes_logged: set[int] = set()

RECURRENT_MAX_T = 16
"""Longest segment ``form="recurrent"`` sends to the step kernel; longer ones (and any segment that needs
gradients) go to the chunkwise kernels, which compute the same function."""


def triton_limitation(q: torch.Tensor, form: str, needs_grad: bool) -> str | None:
    """Why the kernels must not run this call, or None when they may.

    The chunkwise kernels are tested up to K = ``MAX_K`` (256, the paper's head size); the decode-step kernel
    has no such limit.

    Args:
        q: ``(B, T, H, K)`` queries of the call.
        form: the form asked for.
        needs_grad: whether gradients will flow through the call.

    Returns:
        A reason (for an error or the fallback's log line), or None.
    """
    if q.shape[-1] <= MAX_K:
        return None
    if form == "recurrent" and q.shape[1] <= RECURRENT_MAX_T and not needs_grad:
        return None
    return f"the chunkwise Triton kernels support head dims K <= {MAX_K}, got K = {q.shape[-1]}"


@torch.compiler.assume_constant_result
def _log_ignored_chunk_size(chunk_size: int) -> int:
    # Once per value; under torch.compile while tracing (a logging call cannot be traced; a constant result can).
    if chunk_size not in _chunk_sizes_logged:
        _chunk_sizes_logged.add(chunk_size)
        logger.info(
            "retention: chunk_size=%d is not used by the Triton kernels, which pick their own chunk length (at most "
            "%d tokens; the result does not depend on it); pass chunk_size=None for the backend's choice",
            chunk_size,
            CHUNK,
        )
    return chunk_size


def triton_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    state: RetentionState,
    *,
    form: str,
    chunk_size: int | None,
    normalize: bool,
    fresh_state: bool = False,
    output_final_state: bool = True,
) -> tuple[torch.Tensor, RetentionState]:
    """Retention on the Triton kernels, with the reference's contract (see ``reference.py``).

    Args:
        q, k: ``(B, T, H, K)``; v: ``(B, T, H, V)``; fp16, bf16 or fp32 (float64 runs the reference: the
            kernels accumulate in float32, which would not meet float64 tolerances).
        log_decay: ``(H,)`` log γ.
        state: the initial :class:`RetentionState` (never None here).
        form: ``"parallel"``, ``"recurrent"`` or ``"chunkwise"``.
        chunk_size: None for the kernels' own chunk length; an explicit value is not used by the kernels (logged
            once per value for the chunkwise form) and only sets the float64 reference's chunks.
        normalize: apply docs/spec.md §3 factors 2 and 3.
        fresh_state: ``state`` is known to be empty (S = 0, z = 0), so the kernels skip reading it and its
            gradient.
        output_final_state: the caller wants the final state (else its S and z may come back empty).

    Returns:
        ``(o, final_state)`` as the reference forms return them.
    """
    global _fp64_logged
    if v.dtype == torch.float64:
        if not _fp64_logged:
            logger.warning("retention: float64 inputs run the PyTorch chunkwise reference, not the Triton kernels")
            _fp64_logged = True
        C = REFERENCE_CHUNK_SIZE if chunk_size is None else chunk_size
        return chunkwise_ref(q, k, v, log_decay, state, normalize, C)
    if chunk_size is not None and form == "chunkwise":
        _log_ignored_chunk_size(chunk_size)
    T = q.shape[1]
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, state.S))
    if form == "recurrent" and T <= RECURRENT_MAX_T and not needs_grad:
        S = state.S.float().contiguous().clone()
        z = state.z.float().contiguous().clone()
        pos = state.position.clone()
        o = retention_step(q, k, v, log_decay, RetentionState(S, z, pos), normalize=normalize)
        return o, RetentionState(S, z, pos)
    S0, z0 = (None, None) if fresh_state else (state.S, state.z)
    o, S, z = chunk_retention(q, k, v, log_decay, S0, z0, state.position, normalize, output_final_state)
    return o, RetentionState(S, z, state.position + T)
