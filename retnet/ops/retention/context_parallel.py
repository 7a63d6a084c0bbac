"""Context parallelism: one sequence split over the ranks of a process group, exact (docs/spec.md §3; docs/parallel.md).

Rank r holds the contiguous slice [a_r, a_r + T_r) of the sequence. Retention passes a fixed-size state from one
token to the next (docs/spec.md §3), so the slices only need the state that enters them:

1. Each rank summarises its slice as the state it would leave behind from an empty start,
   X_r = Σ_m γ^(T_r−1−m) k_mᵀ [v_m | 1] over the tokens after its last document start (S and the key sum z in one
   ``(B, H, K, V + 1)`` tensor), and the factor A_r that carries an incoming state through the slice: γ^(T_r), or
   0 when a document starts inside the slice (its state resets there). X_r runs on the Triton state scan where the
   op does (``triton/summary.py``), else as an ``einsum``; a rank whose summary no rank folds (the last, or one
   followed by a document start) sends zeros instead.
2. One all-gather exchanges the summaries; rank r folds those before it:
   X_in(r) = A_{r−1} X_in(r−1) + X_{r−1}, X_in(0) = the sequence's initial state (or 0).
3. Each rank finishes its slice with the ordinary op (any form, any backend) from the incoming state, at its
   global position, so outputs, the normaliser and the final state equal the single-device call. Where that state
   is provably empty (the sequence's start without an initial state, a document starting at the slice) the op
   runs from an empty state instead, which skips reading it and its gradient.

The backward pass runs the same fold the other way: with G_r the gradient of X_in(r), the gradient of X_j is
D_j = G_{j+1} + A_{j+1} D_{j+1} (D_{last} = 0), from one all-gather of the G_r; the initial state's gradient is
G_0 + A_0 D_0 on every rank. Communication per call: one ``(B, H, K, V + 1)`` state per rank each way, independent
of the sequence length (LASP-2's all-gather scheme, Sun et al. 2025).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist

from .decay import compute_dtype, decay_powers
from .dispatch import _check_inputs, _check_state_and_offset_types, _pick_backend, _resolve_state, retention
from .state import RetentionState


def slice_bounds(total_length: int, num_ranks: int, rank: int) -> tuple[int, int]:
    """``(start, length)`` of rank ``rank``'s slice when ``total_length`` tokens are split as evenly as possible.

    The first ``total_length % num_ranks`` ranks get one token more than the others.

    Raises:
        ValueError: fewer tokens than ranks, or a rank outside ``[0, num_ranks)``.
    """
    if num_ranks < 1 or not 0 <= rank < num_ranks:
        raise ValueError(f"rank must be in [0, num_ranks) with num_ranks >= 1, got rank {rank} of {num_ranks}")
    if total_length < num_ranks:
        raise ValueError(f"cannot split {total_length} tokens over {num_ranks} ranks (each needs at least one)")
    base, extra = divmod(total_length, num_ranks)
    return rank * base + min(rank, extra), base + (rank < extra)


@dataclass(frozen=True)
class ContextParallelGroup:
    """This rank's slice of a sequence split over the ranks of ``group`` in rank order.

    Attributes:
        group: the process group holding the sequence's slices (None: the default group).
        start: global index a_r of this rank's first token.
        length: T_r, tokens on this rank (≥ 1).
        total_length: tokens of the whole sequence.
    """

    group: dist.ProcessGroup | None
    start: int
    length: int
    total_length: int

    def __post_init__(self) -> None:
        for name in ("start", "length", "total_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ContextParallelGroup.{name} must be an int, got {value!r}")
        if self.start < 0 or self.length < 1 or self.start + self.length > self.total_length:
            raise ValueError(
                f"ContextParallelGroup slice [{self.start}, {self.start + self.length}) must be non-empty and lie in "
                f"[0, {self.total_length})"
            )

    @classmethod
    def balanced(cls, total_length: int, group: dist.ProcessGroup | None = None) -> ContextParallelGroup:
        """This rank's slice when ``total_length`` tokens are split evenly over ``group`` (:func:`slice_bounds`)."""
        start, length = slice_bounds(total_length, dist.get_world_size(group), dist.get_rank(group))
        return cls(group, start, length, total_length)

    @property
    def rank(self) -> int:
        """This rank's index in ``group``."""
        return dist.get_rank(self.group)

    @property
    def size(self) -> int:
        """Number of ranks the sequence is split over."""
        return dist.get_world_size(self.group)


def _bytes(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().reshape(-1).view(torch.uint8)


class _ExchangeStates(torch.autograd.Function):
    """X_in(r) from every rank's summary (X_j, A_j) with one all-gather; exact gradients by the reverse fold."""

    @staticmethod
    def forward(ctx, X_local, carry, X0, cp: ContextParallelGroup, local_used: bool):
        # X_local: (B, H, K, V + 1) summary of this slice (zeros when no rank folds it: ``local_used`` False);
        # carry: (B, H) A_r; X0: initial (B, H, K, V + 1) or None.
        meta = _layout_tensor(cp, X_local.device)  # (3,) int64
        # One byte buffer per rank: the layout (int64) first, so that every part starts aligned to its dtype.
        parts = (_bytes(meta), _bytes(X_local), _bytes(carry))
        buffer = torch.cat(parts)
        size, rank = cp.size, cp.rank
        gathered = [torch.empty_like(buffer) for _ in range(size)]
        dist.all_gather(gathered, buffer, group=cp.group)
        n_m, n_x = parts[0].numel(), parts[1].numel()
        key = _layout_key(cp)
        if key not in _CHECKED_LAYOUTS:  # read back (a host synchronisation) once per layout, not once per call
            _check_layout([g[:n_m].view(torch.long).tolist() for g in gathered])
            _CHECKED_LAYOUTS.add(key)
        X_all = [g[n_m : n_m + n_x].view(X_local.dtype).view(X_local.shape) for g in gathered]
        # cloned: views would keep every rank's whole summary alive until the backward pass
        carries = [g[n_m + n_x :].view(carry.dtype).view(carry.shape)[..., None, None].clone() for g in gathered]
        X_in = torch.zeros_like(X_local) if X0 is None else X0.to(X_local.dtype).clone()
        for j in range(rank):
            X_in = carries[j] * X_in + X_all[j]
        ctx.carries, ctx.cp, ctx.has_X0, ctx.local_used = carries, cp, X0 is not None, local_used
        return X_in

    @staticmethod
    def backward(ctx, grad_in):
        cp, carries = ctx.cp, ctx.carries
        size, rank = cp.size, cp.rank
        grad_in = grad_in.contiguous()
        G = [torch.empty_like(grad_in) for _ in range(size)]
        dist.all_gather(G, grad_in, group=cp.group)
        D = torch.zeros_like(grad_in)  # D_j = G_{j+1} + A_{j+1} D_{j+1}, run from the last rank down
        grad_local = D
        for i in range(size - 1, -1, -1):
            if i == rank:
                grad_local = D
                if not ctx.has_X0:
                    break
            D = G[i] + carries[i] * D
        grad_X0 = D if ctx.has_X0 else None
        if not ctx.local_used:  # this rank sent zeros in place of its summary (``_local_summary``)
            grad_local = None
        return grad_local, None, grad_X0, None, None


class _JoinGraph(torch.autograd.Function):
    """An op input ``x`` unchanged, with ``X_in`` (an incoming state that provably contributes nothing) kept in its
    graph: the backward returns zeros for ``X_in``, so this rank joins the backward all-gather like every other
    rank. Applied to an input of the op (never to its output, which the caller may modify in place)."""

    @staticmethod
    def forward(ctx, x, X_in):
        ctx.state_shape, ctx.state_options = X_in.shape, {"dtype": X_in.dtype, "device": X_in.device}
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_x):
        return grad_x, torch.zeros(ctx.state_shape, **ctx.state_options)


# Layouts this process has checked against every rank's, and their (3,) int64 tensors per device. Every call
# gathers the layouts with the summaries (the same collective either way), but only a layout this rank has not used
# before is read back to the host and checked: a rank whose slice changes checks again and raises there, while the
# others stop at their next collective with it. Without these, each call would wait for the GPU twice (the layout's
# copy to the device and its read-back).
_CHECKED_LAYOUTS: set[tuple] = set()
_LAYOUT_TENSORS: dict[tuple, torch.Tensor] = {}


def _layout_key(cp: ContextParallelGroup) -> tuple:
    # the group object itself (not its id, which a later group could reuse), with its size and this rank's slice
    return (cp.group, cp.size, cp.rank, cp.start, cp.length, cp.total_length)


def _layout_tensor(cp: ContextParallelGroup, device: torch.device) -> torch.Tensor:
    key = (device, cp.start, cp.length, cp.total_length)
    tensor = _LAYOUT_TENSORS.get(key)
    if tensor is None:
        tensor = torch.tensor([cp.start, cp.length, cp.total_length], dtype=torch.long, device=device)
        _LAYOUT_TENSORS[key] = tensor
    return tensor


def _check_layout(metas: list[list[int]]) -> None:
    """The slices must tile the sequence in rank order; every rank sees the same list, so all raise together."""
    expected = 0
    for rank, (start, length, total) in enumerate(metas):
        if start != expected or total != metas[0][2]:
            raise ValueError(
                "context-parallel slices must be contiguous in rank order and agree on the sequence length; got "
                f"(start, length, total) per rank {metas} (rank {rank} breaks it)"
            )
        expected = start + length
    if expected != metas[0][2]:
        raise ValueError(f"context-parallel slices cover {expected} tokens, not the sequence's {metas[0][2]}: {metas}")


def _slice_summary(k, v, lg, positions, tail_start: int, backend: str = "torch"):
    """X_r ``(B, H, K, V + 1)``: the state an empty start reaches at the slice's end, from tokens >= tail_start.

    ``positions`` ``(B, T)`` or ``(1, T)`` are the tokens' absolute positions (negative ones are left padding: they
    contribute nothing), rising by one from ``tail_start`` on. ``backend`` ``"torch"`` computes it as a
    ``lg``-dtype (float32 or float64) ``einsum``, the reference; ``"triton"`` runs the state-scan kernels
    (``triton/summary.py``: operands in the input dtype, as in the op's own scan, float32 accumulation). Only decays
    γ^(T−1−m) ≤ 1 are formed; the state stays float32 or better even under autocast: a state is never rounded to
    16 bits (docs/spec.md §3, "Numerics").
    """
    if backend == "triton":
        from .triton.summary import slice_summary

        first = positions[:, tail_start].expand(k.shape[0]).contiguous()  # (B,)
        S, z = slice_summary(k[:, tail_start:], v[:, tail_start:], lg, first)
        return torch.cat([S, z[..., None]], dim=-1)  # (B, H, K, V + 1)
    with torch.autocast(k.device.type, enabled=False):
        return _slice_summary_exact(k, v, lg, positions, tail_start)


def _summary_backend(backend: str, k: torch.Tensor, v: torch.Tensor, form: str, needs_grad: bool) -> str:
    """The summary's implementation: the chunkwise kernels where the call's own backend is Triton and they
    cover the head dim and dtype, else the ``einsum`` reference (float64, K > ``MAX_K``, no Triton)."""
    if _pick_backend(backend, k, form, needs_grad) != "triton" or v.dtype == torch.float64:
        return "torch"
    from .triton import MAX_K

    return "triton" if k.shape[-1] <= MAX_K else "torch"


def slice_summary(
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    offset: int | torch.Tensor = 0,
    tail_start: int = 0,
    backend: str = "auto",
) -> torch.Tensor:
    """The summary X ``(B, H, K, V + 1)`` that a rank which is not the last computes and sends (docs/parallel.md).

    X = Σ_m γ^(T−1−m) k_mᵀ [v_m | 1] over the tokens m >= ``tail_start`` at non-negative positions: the state S
    and key sum z an empty start reaches after the last token, in one tensor. Differentiable in k and v.

    Args:
        k: ``(B, T, H, K)`` keys (scaled by K^−½).
        v: ``(B, T, H, V)`` values of k's dtype.
        log_decay: ``(H,)`` float32/float64 log γ.
        offset: absolute position of the first token, an int or ``(B,)`` integer tensor (negative: left padding).
        tail_start: first token summed (a document start inside the slice).
        backend: ``"auto"``, ``"torch"`` (the ``einsum``) or ``"triton"``, chosen as for
            :func:`retnet.ops.retention`.

    Returns:
        X in float32 (float64 for float64 inputs).

    Raises:
        TypeError / ValueError: as :func:`retnet.ops.retention` for k, v and log_decay; ``tail_start`` outside
            ``[0, T)``.
    """
    _check_inputs(k, k, v, log_decay, "chunkwise", None, backend)
    _check_state_and_offset_types(None, offset, k.shape[1])
    B, T = k.shape[:2]
    if isinstance(tail_start, bool) or not isinstance(tail_start, int) or not 0 <= tail_start < T:
        raise ValueError(f"tail_start must be an int in [0, T) = [0, {T}), got {tail_start!r}")
    start = _resolve_state(None, offset, k, v).position.expand(B)  # (B,)
    positions = start[:, None] + torch.arange(T, device=k.device)  # (B, T)
    needs_grad = torch.is_grad_enabled() and (k.requires_grad or v.requires_grad)
    impl = _summary_backend(backend, k, v, "chunkwise", needs_grad)
    return _slice_summary(k, v, log_decay.to(compute_dtype(v.dtype)), positions, tail_start, impl)


def _summary_is_folded(start: int, length: int, total_length: int, bounds: list[int] | None) -> bool:
    """Whether a later rank reads the summary of the slice [start, start + length): not when it is the last slice,
    nor when a document starts right after it (document boundaries ``bounds``), where the next rank's state resets
    and its own carry is 0, so that no rank after it sees this one's state either."""
    end = start + length
    return end < total_length and (bounds is None or end not in bounds)


def _local_summary(k, v, lg, layout: _SliceLayout, impl: str, used: bool) -> torch.Tensor:
    """This rank's X_r, or zeros of its shape when no rank folds it (``used`` False): the last rank's, and one
    followed by a slice that starts a document (the next rank resets its state). The zeros need a gradient when
    k or v do, so that this rank joins the backward all-gather as the ranks that computed theirs do."""
    if used:
        return _slice_summary(k, v, lg, layout.positions, layout.tail_start, impl)
    B, _, H, K = k.shape
    zeros = torch.zeros(B, H, K, v.shape[-1] + 1, dtype=lg.dtype, device=k.device)  # (B, H, K, V + 1)
    return zeros.requires_grad_(torch.is_grad_enabled() and (k.requires_grad or v.requires_grad))


def _slice_summary_exact(k, v, lg, positions, tail_start: int):
    dt = lg.dtype
    T = k.shape[1]
    idx = torch.arange(T, device=k.device)
    keep = (idx >= tail_start)[None, :] & (positions >= 0)  # (B, T)
    zeta_HT = decay_powers(lg, T - 1 - idx)  # (H, T)
    w_BTH = torch.where(keep[:, :, None], zeta_HT.transpose(0, 1)[None], 0.0)  # (B, T, H)
    k_w = torch.where(keep[:, :, None, None], k.to(dt), 0.0) * w_BTH[..., None]  # (B, T, H, K)
    v_k = torch.where(keep[:, :, None, None], v.to(dt), 0.0)  # (B, T, H, V)
    S = torch.einsum("bthk,bthv->bhkv", k_w, v_k)  # (B, H, K, V)
    z = k_w.sum(1)  # (B, H, K)
    return torch.cat([S, z[..., None]], dim=-1)  # (B, H, K, V + 1)


class _SliceLayout(NamedTuple):
    """Where this rank's slice sits in the sequence.

    Attributes:
        positions: ``(B, T)`` or ``(1, T)`` absolute position of each token (negative: left padding).
        starts: slice-local indices of the documents that start inside the slice.
        resets: whether any does (then no incoming state crosses the slice).
        tail_start: first token the slice's summary covers (after its last document start).
        continues: whether the slice's first token continues the incoming state (no document starts there).
        head_end: end of the first piece, run from the incoming state; the rest runs as packed documents.
        head_position: ``(B,)`` position of the first piece's first token.
    """

    positions: torch.Tensor
    starts: list[int]
    resets: bool
    tail_start: int
    continues: bool
    head_end: int
    head_position: torch.Tensor


def _layout_of_rows(first_position: torch.Tensor, a: int, T: int) -> _SliceLayout:
    """Rows without documents: the sequence starts at ``first_position`` ``(B,)``, the slice at its token a."""
    head_position = first_position + a  # (B,)
    positions = head_position[:, None] + torch.arange(T, device=first_position.device)  # (B, T)
    return _SliceLayout(positions, [], False, 0, True, T, head_position)


def _layout_of_documents(bounds: list[int], a: int, T: int, device: torch.device) -> _SliceLayout:
    """One packed row with document boundaries ``bounds`` (global); the slice starts at token a."""
    starts = [b - a for b in bounds[:-1] if a <= b < a + T]
    continues = not starts or starts[0] > 0
    # The first piece runs from the incoming state: the document open at the slice's start, or (when a document
    # starts right at it) the first local document, from the incoming state masked to 0.
    if continues:
        head_end = starts[0] if starts else T
    else:
        head_end = starts[1] if len(starts) > 1 else T
    doc_start = max(b for b in bounds if b <= a)
    head_position = torch.full((1,), a - doc_start if continues else 0, dtype=torch.long, device=device)
    steps = torch.arange(a, a + T, device=device)
    doc = torch.bucketize(steps, torch.tensor(bounds[:-1], device=device), right=True) - 1  # (T,)
    positions = (steps - torch.tensor(bounds, device=device)[doc])[None]  # (1, T)
    tail_start = starts[-1] if starts else 0
    return _SliceLayout(positions, starts, bool(starts), tail_start, continues, head_end, head_position)


def _check_global_documents(cu_seqlens, q, initial_state, offset, total: int) -> list[int]:
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.dtype.is_floating_point:
        raise ValueError("cu_seqlens must be a 1-D integer tensor [0, t1, ..., total_length]")
    if q.shape[0] != 1:
        raise ValueError(f"with cu_seqlens the batch must be one packed row (B = 1), got B = {q.shape[0]}")
    bounds = cu_seqlens.tolist()
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != total or any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"cu_seqlens must rise strictly from 0 to the sequence's total_length {total}, got {bounds}")
    if offset is not None:
        raise ValueError("offset cannot be combined with cu_seqlens (each document starts at position 0)")
    if initial_state is not None:
        raise ValueError("initial_state cannot be combined with cu_seqlens under context parallelism")
    return bounds


def context_parallel_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    cp_group: ContextParallelGroup,
    *,
    form: str = "chunkwise",
    initial_state: RetentionState | None = None,
    output_final_state: bool = False,
    chunk_size: int | None = None,
    offset: int | torch.Tensor | None = None,
    normalize: bool = True,
    backend: str = "auto",
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, RetentionState | None]:
    """Retention of this rank's slice of a sequence split over ``cp_group`` (called as ``retention(..., cp_group=)``).

    Every rank of the group calls this together (it runs one collective forward and one backward). The result on
    rank r is rank r's slice of what :func:`retnet.ops.retention` returns for the whole sequence on one device.

    Args:
        q: ``(B, T_r, H, K)`` this rank's slice of the queries (rotated at global positions).
        k: ``(B, T_r, H, K)`` the keys likewise (rotated at global positions, scaled by K^−½).
        v: ``(B, T_r, H, V)``.
        log_decay: ``(H,)`` log γ.
        cp_group: the group and this rank's slice (``T_r`` must equal ``cp_group.length``).
        form: as for :func:`retnet.ops.retention`, for this rank's own work.
        chunk_size: likewise.
        normalize: likewise.
        backend: likewise.
        initial_state: the state before the sequence's first token, the same on every rank (its gradient is the
            whole sequence's, on every rank).
        output_final_state: return the state after this rank's slice (the last rank's is the sequence's).
        offset: absolute position of the sequence's first token (int or ``(B,)``), the same on every rank.
        cu_seqlens: ``(N + 1,)`` document boundaries of the whole packed row (B = 1, ``[0, ..., total_length]``),
            the same on every rank. The final state then holds one row per document piece on this rank, in order;
            a document's row on the rank holding its last token is its final state.

    Returns:
        ``(o, final_state)``: o ``(B, T_r, H, V)`` in v's dtype; final_state a :class:`RetentionState` or None.

    Raises:
        TypeError / ValueError: as :func:`retnet.ops.retention`; a slice length that is not ``cp_group.length``;
            slices that do not tile the sequence (raised on every rank); ``initial_state`` with ``cu_seqlens``.
    """
    if not isinstance(cp_group, ContextParallelGroup):
        raise TypeError(f"cp_group must be a ContextParallelGroup, got {type(cp_group).__name__}")
    _check_inputs(q, k, v, log_decay, form, chunk_size, backend)
    _check_state_and_offset_types(initial_state, offset, cp_group.total_length)
    B, T, H, K = q.shape
    V = v.shape[-1]
    if T != cp_group.length:
        raise ValueError(f"q holds {T} tokens but cp_group says this rank's slice has {cp_group.length}")
    lg = log_decay.to(compute_dtype(v.dtype))
    X0 = None
    if cu_seqlens is None:
        start = _resolve_state(initial_state, offset, q, v)  # the sequence's start: S, z, position
        layout = _layout_of_rows(start.position, cp_group.start, T)
        if initial_state is not None:
            X0 = torch.cat([start.S, start.z[..., None]], dim=-1)  # (B, H, K, V + 1)
    else:
        bounds = _check_global_documents(cu_seqlens, q, initial_state, offset, cp_group.total_length)
        layout = _layout_of_documents(bounds, cp_group.start, T, q.device)
    used = _summary_is_folded(cp_group.start, T, cp_group.total_length, None if cu_seqlens is None else bounds)
    needs_grad = torch.is_grad_enabled() and (k.requires_grad or v.requires_grad)
    impl = _summary_backend(backend, k, v, form, needs_grad) if used else "torch"
    X_local = _local_summary(k, v, lg, layout, impl, used)  # (B, H, K, V + 1)
    carry_H = torch.zeros_like(lg) if layout.resets else decay_powers(lg, T)  # (H,) γ^T
    carry = carry_H.expand(B, H).contiguous()  # (B, H)
    X_in = _ExchangeStates.apply(X_local, carry, X0, cp_group, used)  # (B, H, K, V + 1)
    head_end = layout.head_end
    q_h, k_h, v_h = q[:, :head_end], k[:, :head_end], v[:, :head_end]
    common = {"form": form, "output_final_state": output_final_state, "chunk_size": chunk_size,
              "normalize": normalize, "backend": backend}  # fmt: skip
    if layout.continues and (cp_group.start > 0 or X0 is not None):
        incoming = RetentionState(X_in[..., :V].contiguous(), X_in[..., V].contiguous(), layout.head_position)
        o, final = retention(q_h, k_h, v_h, log_decay, initial_state=incoming, **common)
    else:
        # The incoming state is provably empty (the sequence's start without an initial state, or a document
        # starting at the slice): the op runs from an empty state, which skips reading it and its gradient.
        if X_in.requires_grad:
            k_h = _JoinGraph.apply(k_h, X_in)
        o, final = retention(q_h, k_h, v_h, log_decay, offset=layout.head_position, **common)
    if head_end == T:
        return o, final
    rest = [b - head_end for b in layout.starts if b > head_end] + [T - head_end]
    o_rest, final_rest = retention(
        q[:, head_end:], k[:, head_end:], v[:, head_end:], log_decay, form=form,
        output_final_state=output_final_state, chunk_size=chunk_size, normalize=normalize, backend=backend,
        cu_seqlens=torch.tensor([0, *rest], device=q.device),
    )  # fmt: skip
    o = torch.cat([o, o_rest], dim=1)  # (1, T, H, V)
    if output_final_state:
        final = RetentionState(*(torch.cat(parts, dim=0) for parts in zip(final, final_rest)))
    return o, final
