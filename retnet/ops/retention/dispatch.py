"""``retention(...)``: the one entry point for every form and backend (docs/spec.md §3).

This module validates inputs (so bad input fails here with a clear message, never inside a kernel), builds
the initial state, splits packed documents, and picks the implementation. It is the only place that
branches on ``form`` and ``backend``.
"""

from __future__ import annotations

import logging
import numbers
import weakref
from typing import TYPE_CHECKING

import torch

from ...utils.checks import values_checkable
from .decay import compute_dtype
from .packing import bucket_documents, scatter_tokens
from .reference import REFERENCE_FORMS
from .state import RetentionState

if TYPE_CHECKING:
    from .context_parallel import ContextParallelGroup

logger = logging.getLogger(__name__)

FORMS = ("parallel", "recurrent", "chunkwise")
BACKENDS = ("auto", "torch", "triton")
REFERENCE_CHUNK_SIZE = 64
"""Chunk size of the PyTorch chunkwise form when the caller leaves ``chunk_size`` to the backend (None)."""
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_fallback_logged = False
_checked_decays: dict[int, tuple[weakref.ref, int]] = {}
"""id → (weak reference, version) of decay tensors whose values passed the check, so that a model's fixed
decay buffer is read back to the host once rather than on every call (each read waits for the GPU)."""


def _check_decay_values(log_decay: torch.Tensor) -> None:
    seen = _checked_decays.get(id(log_decay))
    if seen is not None and seen[0]() is log_decay and seen[1] == log_decay._version:
        return
    if not bool((torch.isfinite(log_decay) & (log_decay <= 0)).all()):
        raise ValueError("log_decay must be finite and <= 0 (decays 0 < γ <= 1)")
    key = id(log_decay)
    forget = lambda _, key=key: _checked_decays.pop(key, None)  # noqa: E731
    _checked_decays[key] = (weakref.ref(log_decay, forget), log_decay._version)


def _check_inputs(q, k, v, log_decay, form, chunk_size, backend):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must have shape (B, T, H, D) (4 dims), got {tuple(x.shape)}")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be a floating tensor (fp16/bf16/fp32/fp64), got {x.dtype}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (B, T, H, K), got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be (B, T, H, V) with B, T, H of q {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.shape[1] < 1:
        raise ValueError("retention needs at least one token (T >= 1)")
    H = q.shape[2]
    if not isinstance(log_decay, torch.Tensor) or log_decay.shape != (H,):
        shape = tuple(log_decay.shape) if isinstance(log_decay, torch.Tensor) else type(log_decay).__name__
        raise ValueError(f"log_decay must be a tensor of shape (H,) = ({H},), got {shape}")
    if log_decay.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"log_decay must be float32 or float64 (16-bit decays break the masks), got {log_decay.dtype}")
    if log_decay.device != q.device:
        raise ValueError(f"log_decay is on {log_decay.device} but q is on {q.device}")
    if values_checkable():
        _check_decay_values(log_decay)
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")


def _check_state_and_offset_types(initial_state, offset, T: int) -> None:
    """Types first, so that a wrong one fails with its name rather than deep inside (a dict cannot be sliced)."""
    if initial_state is not None and not (
        isinstance(initial_state, RetentionState)
        or (isinstance(initial_state, (tuple, list)) and len(initial_state) == 3)
    ):
        raise TypeError(
            f"initial_state must be a RetentionState (S, z, position) or None, got {type(initial_state).__name__}"
        )
    if offset is None or isinstance(offset, (torch.Tensor, torch.SymInt)):  # a SymInt while torch.compile traces
        return
    if isinstance(offset, bool) or not isinstance(offset, numbers.Integral):
        raise TypeError(f"offset must be an int or an integer tensor of shape (B,), got {offset!r}")
    if not (-(2**63) <= int(offset) and int(offset) + T <= 2**63 - 1):
        raise ValueError(f"offset {offset} is out of range: the positions offset .. offset + T - 1 must fit in int64")


def _resolve_state(initial_state, offset, q, v) -> RetentionState:
    B, _, H, K = q.shape
    V = v.shape[-1]
    dt = compute_dtype(v.dtype)
    if initial_state is None:
        off = 0 if offset is None else offset
        if isinstance(off, torch.Tensor):
            if off.shape not in ((), (B,)) or off.dtype.is_floating_point:
                raise ValueError(f"offset must be an int or an integer tensor of shape (B,) = ({B},)")
            off = off.to(device=q.device, dtype=torch.long)
        elif not isinstance(off, torch.SymInt):
            off = int(off)
        return RetentionState.zeros(B, H, K, V, dtype=dt, device=q.device, position=off, broadcast=True)
    if not isinstance(initial_state, RetentionState):
        if isinstance(initial_state, (tuple, list)) and len(initial_state) == 3:
            initial_state = RetentionState(*initial_state)
        else:
            raise TypeError("initial_state must be a RetentionState (S, z, position)")
    S, z, pos = initial_state
    if S.shape != (B, H, K, V):
        raise ValueError(f"initial_state.S must have shape (B, H, K, V) = {(B, H, K, V)}, got {tuple(S.shape)}")
    if z.shape != (B, H, K):
        raise ValueError(f"initial_state.z must have shape (B, H, K) = {(B, H, K)}, got {tuple(z.shape)}")
    if pos.shape != (B,) or pos.dtype.is_floating_point:
        raise ValueError(f"initial_state.position must be an integer tensor of shape (B,) = ({B},)")
    if S.device != q.device or z.device != q.device or pos.device != q.device:
        raise ValueError(f"initial_state must be on {q.device}")
    if not S.dtype.is_floating_point or not z.dtype.is_floating_point:
        raise TypeError("initial_state.S and .z must be floating tensors")
    if offset is not None and values_checkable():
        if not bool((torch.as_tensor(offset, device=pos.device) == pos).all()):
            raise ValueError(
                f"offset={offset!r} disagrees with the initial state's position {pos.tolist()}; "
                "leave offset unset when passing a state"
            )
    return RetentionState(S.to(dt), z.to(dt), pos.to(torch.long))


def _check_cu_seqlens(cu_seqlens, q, initial_state, offset):
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.dtype.is_floating_point:
        raise ValueError("cu_seqlens must be a 1-D integer tensor [0, t1, ..., T]")
    if q.shape[0] != 1:
        raise ValueError(f"with cu_seqlens the batch must be one packed row (B = 1), got B = {q.shape[0]}")
    bounds = cu_seqlens.tolist()
    T = q.shape[1]
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != T or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"cu_seqlens must rise strictly from 0 to T = {T}, got {bounds}")
    if offset is not None:
        raise ValueError("offset cannot be combined with cu_seqlens (each document starts at position 0)")
    n_docs = len(bounds) - 1
    if initial_state is not None and initial_state[0].shape[0] != n_docs:
        raise ValueError(f"with cu_seqlens, initial_state must hold one row per document ({n_docs})")
    return bounds


def _triton_available(q) -> bool:
    # CUDA tensors, or CPU tensors under Triton's interpreter (the CPU test suite; never picked by "auto").
    try:
        from ..triton_utils import triton_runtime_available
    except ImportError:
        return False
    return triton_runtime_available(q.device)


def _pick_backend(backend: str, q: torch.Tensor, form: str, needs_grad: bool) -> str:
    global _fallback_logged
    if backend == "torch":
        return "torch"
    available = _triton_available(q)
    limitation = None
    if available:
        from .triton import triton_limitation

        limitation = triton_limitation(q, form, needs_grad)
    if backend == "triton":
        if not available:
            raise RuntimeError(
                "backend='triton' needs the Triton retention kernels and a CUDA tensor "
                "(install `triton`, or use backend='torch')"
            )
        if limitation is not None:
            raise NotImplementedError(f"backend='triton': {limitation}; use backend='auto' or 'torch'")
        return "triton"
    if available and q.is_cuda and limitation is None:
        return "triton"
    if q.is_cuda and not _fallback_logged:
        reason = limitation or f"Triton kernels unavailable on {q.device}"
        logger.warning("retention: %s; using the PyTorch reference", reason)
        _fallback_logged = True
    return "torch"


def _run_one(q, k, v, log_decay, state, form, chunk_size, normalize, backend, fresh_state=False, need_final=True):
    if backend == "triton":
        from .triton import triton_retention

        return triton_retention(
            q, k, v, log_decay, state, form=form, chunk_size=chunk_size, normalize=normalize,
            fresh_state=fresh_state, output_final_state=need_final,
        )  # fmt: skip
    fn = REFERENCE_FORMS[form]
    if form == "chunkwise":
        return fn(q, k, v, log_decay, state, normalize, REFERENCE_CHUNK_SIZE if chunk_size is None else chunk_size)
    return fn(q, k, v, log_decay, state, normalize)


def _packed_one_call_per_document(q, k, v, log_decay, bounds, initial_state, form, chunk_size, normalize, impl):
    """Packed documents that continue given states: one call per document (states fix each start position)."""
    outs, states = [], []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        doc_state = _resolve_state(RetentionState(*(x[i : i + 1] for x in initial_state)), None, q[:, a:b], v[:, a:b])
        o_i, s_i = _run_one(q[:, a:b], k[:, a:b], v[:, a:b], log_decay, doc_state, form, chunk_size, normalize, impl)
        outs.append(o_i)
        states.append(s_i)
    return torch.cat(outs, dim=1), RetentionState(*(torch.cat(parts, dim=0) for parts in zip(*states)))


def _packed_by_length(q, k, v, log_decay, bounds, initial_state, form, chunk_size, normalize, impl):
    """Packed documents from empty states: one call per length bucket of left-padded rows (``packing.py``)."""
    outs, token_index, states, doc_index = [], [], [], []
    for bucket in bucket_documents(bounds, q.device):
        q_b, k_b, v_b = (x[0, bucket.gather] for x in (q, k, v))  # (R, L, H, ·)
        state = _resolve_state(None, bucket.offset, q_b, v_b)
        o_b, s_b = _run_one(q_b, k_b, v_b, log_decay, state, form, chunk_size, normalize, impl, fresh_state=True)
        outs.append(o_b[bucket.valid])  # (tokens in bucket, H, V), row-major like the gather index
        token_index.append(bucket.gather[bucket.valid])
        states.append(s_b)
        doc_index.append(bucket.docs)
    o = scatter_tokens(outs, token_index)[None]  # (1, T, H, V)
    order = torch.argsort(torch.cat(doc_index))
    final = RetentionState(*(torch.cat(parts, dim=0)[order] for parts in zip(*states)))
    return o, final


def retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    form: str = "chunkwise",
    initial_state: RetentionState | None = None,
    output_final_state: bool = False,
    chunk_size: int | None = None,
    offset: int | torch.Tensor | None = None,
    normalize: bool = True,
    backend: str = "auto",
    cu_seqlens: torch.Tensor | None = None,
    cp_group: ContextParallelGroup | None = None,
) -> tuple[torch.Tensor, RetentionState | None]:
    """Multi-scale retention (paper §2.1) in any of its three forms; all forms compute the same function.

    Args:
        q: ``(B, T, H, K)`` queries, already rotated (docs/spec.md §2).
        k: ``(B, T, H, K)`` keys, already rotated and scaled by K^−½.
        v: ``(B, T, H, V)`` values. q, k, v share a dtype (fp16, bf16, fp32 or fp64) and a device.
        log_decay: ``(H,)`` float32/float64 log γ per head (≤ 0).
        form: ``"parallel"``, ``"recurrent"`` or ``"chunkwise"``.
        initial_state: state returned by an earlier call (its position fixes where this segment starts).
        output_final_state: also return the state after the last token.
        chunk_size: C for the chunkwise form (≥ 1; the last chunk may be shorter), or None for the backend's choice:
            ``REFERENCE_CHUNK_SIZE`` (64) on PyTorch; the Triton kernels pick their own chunk length and do not use
            an explicit one (logged once per value; the result does not depend on C).
        offset: absolute position of the first token when no state is given: an int or ``(B,)`` integer
            tensor. Tokens at negative positions are left padding (they contribute nothing; output 0).
            Defaults to 0; with a state it must be unset or equal to the state's position.
        normalize: apply normalisation factors 2 and 3 (docs/spec.md §3); False returns the raw output.
        backend: ``"auto"`` (Triton on CUDA when available, else PyTorch), ``"torch"`` or ``"triton"``.
        cu_seqlens: ``(N + 1,)`` document boundaries of one packed row (B = 1): the state resets and
            positions restart at 0 at each boundary; ``initial_state`` then has N rows and so does the
            returned state.
        cp_group: a :class:`~retnet.ops.retention.context_parallel.ContextParallelGroup`: q, k, v are this rank's
            slice of a sequence split over its ranks, and ``initial_state``, ``offset`` and ``cu_seqlens`` describe
            the whole sequence (docs/parallel.md). Every rank of the group must call together.

    Returns:
        ``(o, final_state)``: o ``(B, T, H, V)`` in v's dtype; final_state a :class:`RetentionState` in float32
        (float64 for float64 inputs), or None unless ``output_final_state``.

    Raises:
        ValueError / TypeError: on bad shapes, dtypes, devices, form, backend, chunk size, offset or state.
        RuntimeError: ``backend="triton"`` when the kernels cannot run.
        NotImplementedError: ``backend="triton"`` for a case the kernels do not cover yet
            (``triton.dispatch.triton_limitation``); ``"auto"`` falls back to PyTorch there.
    """
    if cp_group is not None:
        from .context_parallel import context_parallel_retention

        return context_parallel_retention(
            q, k, v, log_decay, cp_group, form=form, initial_state=initial_state,
            output_final_state=output_final_state, chunk_size=chunk_size, offset=offset, normalize=normalize,
            backend=backend, cu_seqlens=cu_seqlens,
        )  # fmt: skip
    _check_inputs(q, k, v, log_decay, form, chunk_size, backend)
    _check_state_and_offset_types(initial_state, offset, q.shape[1])
    needs_grad = torch.is_grad_enabled() and any(
        x.requires_grad for x in (q, k, v, *(initial_state[:1] if initial_state is not None else ()))
    )
    impl = _pick_backend(backend, q, form, needs_grad)
    if cu_seqlens is not None:
        bounds = _check_cu_seqlens(cu_seqlens, q, initial_state, offset)
        run = _packed_one_call_per_document if initial_state is not None else _packed_by_length
        o, final = run(q, k, v, log_decay, bounds, initial_state, form, chunk_size, normalize, impl)
        return o, (final if output_final_state else None)
    state = _resolve_state(initial_state, offset, q, v)
    o, final = _run_one(
        q, k, v, log_decay, state, form, chunk_size, normalize, impl,
        fresh_state=initial_state is None, need_final=output_final_state,
    )  # fmt: skip
    return o, (final if output_final_state else None)
