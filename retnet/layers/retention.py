"""Gated multi-scale retention (MSR), paper §2.2 (Eq. 8); docs/spec.md §4.

q = x W_Q,  k = x W_K · K^−½,  v = x W_V,  g = x W_G
head h: õ_h = HeadNorm(Retention_γh(rotate(q_h), rotate(k_h), v_h))
Y = (swish(g) ⊙ concat_h õ_h) W_O
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..ops.retention import RetentionState, log_decay_schedule, retention
from ..ops.retention.decay import compute_dtype
from ..ops.retention.reference import normalize_rows
from .norm import HeadNorm
from .packing import PackedProjection, current_packing, pack_linears_
from .position import RotationTable, apply_rotation, rotation_table

if TYPE_CHECKING:
    from ..ops.retention.context_parallel import ContextParallelGroup


def positions_for(
    batch_size: int,
    length: int,
    device: torch.device,
    *,
    state: RetentionState | None = None,
    offset: int | torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    start: int = 0,
) -> torch.Tensor:
    """Absolute positions ``(B, T)`` of a segment, as the retention op counts them.

    With a state the segment starts at the state's position, otherwise at ``offset`` (default 0); with
    ``cu_seqlens`` positions restart at 0 at each document boundary. ``start`` > 0 gives the positions of tokens
    ``start .. start + T − 1`` of that sequence (a context-parallel rank's slice, docs/parallel.md).
    """
    steps = torch.arange(start, start + length, device=device)
    if cu_seqlens is not None:
        starts = cu_seqlens[:-1].to(device)
        doc = torch.bucketize(steps, starts, right=True) - 1  # (T,) document index of each token
        return (steps - starts[doc]).expand(batch_size, length)
    if state is not None:
        first = state.position
    elif isinstance(offset, torch.Tensor):
        first = offset.to(device=device, dtype=torch.long).expand(batch_size)
    else:  # an integer offset is added on the device (copying it over would wait for the GPU)
        return (steps + (offset or 0)).expand(batch_size, length)
    return first[:, None] + steps  # (B, T)


class MultiScaleRetention(nn.Module):
    """Gated multi-scale retention.

    Args:
        hidden_size: D, model width.
        num_heads: H; the q/k head dim is K = D / H.
        value_dim: H·V, total value width.
        decay_schedule: γ schedule (``retnet.ops.retention.decay.DECAY_SCHEDULES``).
        head_norm: ``"rms"``, ``"groupnorm"`` or ``"none"`` (Table 6 ablation).
        group_norm_eps: eps of the head-wise norm.
        use_gate: swish gate (False: Table 6 ablation, output = concat õ W_O).
        backend: retention backend passed to :func:`retnet.ops.retention`.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        value_dim: int,
        *,
        decay_schedule: str = "torchscale",
        head_norm: str = "rms",
        group_norm_eps: float = 1e-6,
        use_gate: bool = True,
        backend: str = "auto",
    ):
        super().__init__()
        if hidden_size % num_heads or value_dim % num_heads:
            raise ValueError(f"hidden_size {hidden_size} and value_dim {value_dim} must be divisible by {num_heads}")
        self.num_heads = num_heads
        self.key_dim = hidden_size // num_heads
        self.head_value_dim = value_dim // num_heads
        self.scaling = self.key_dim**-0.5
        self.decay_schedule = decay_schedule
        self.backend = backend
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, value_dim, bias=False)
        self.g_proj = nn.Linear(hidden_size, value_dim, bias=False) if use_gate else None
        self.out_proj = nn.Linear(value_dim, hidden_size, bias=False)
        self._packed_decode: PackedProjection | None = None  # set by pack_decode_weights_
        self.group_norm = (
            HeadNorm(num_heads, self.head_value_dim, group_norm_eps, head_norm) if head_norm != "none" else None
        )
        self._log_decay: dict[tuple, torch.Tensor] = {}
        log_decay_schedule(num_heads, decay_schedule)  # validate the schedule name now, not at the first forward

    def log_decay(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(H,)`` log γ in the compute dtype for ``dtype`` inputs (float64 for float64), cached per device."""
        key = (device, compute_dtype(dtype))
        cached = self._log_decay.get(key)
        if cached is None:
            cached = log_decay_schedule(self.num_heads, self.decay_schedule, dtype=key[1], device=device)
            # A traced graph computes it in place (a few device ops): the cache is filled by eager calls only,
            # because a traced write to module state cannot be replayed by activation checkpointing.
            if not torch.compiler.is_compiling():
                self._log_decay[key] = cached
        return cached

    def rotation_table(self, positions: torch.Tensor) -> RotationTable:
        """The rotation of q and k at ``positions`` ``(B, T)``, in this layer's head dim and compute dtype.

        Every layer of a model has the same head dim and dtype, so the model builds this once per forward (and the
        decoding engine once per step) and hands it to each layer's :meth:`forward` / :meth:`decode_step_`.

        Args:
            positions: ``(B, T)`` integer absolute positions (see :func:`positions_for`).

        Returns:
            :class:`~retnet.layers.position.RotationTable` ``(B or 1, T, 1, K/2)``, float32 (float64 for a float64
            layer).
        """
        return rotation_table(positions, self.key_dim, dtype=compute_dtype(self.q_proj.weight.dtype))

    def forward(
        self,
        x: torch.Tensor,
        *,
        form: str = "chunkwise",
        chunk_size: int = 64,
        state: RetentionState | None = None,
        offset: int | torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        output_state: bool = False,
        cp_group: ContextParallelGroup | None = None,
        rotation: RotationTable | None = None,
    ) -> tuple[torch.Tensor, RetentionState | None]:
        """Apply MSR.

        Args:
            x: ``(B, T, D)``.
            form: retention form.
            chunk_size: chunk size of the chunkwise form.
            state: state from an earlier segment (continues exactly).
            offset: position of the first token without a state (int or ``(B,)``; negative = left padding).
            cu_seqlens: document boundaries of one packed row (B = 1).
            positions: ``(B, T)`` absolute positions if the caller has them already (see :func:`positions_for`).
            output_state: return the state after the segment.
            cp_group: x is this rank's slice of a sequence split over a group (context parallelism); state,
                offset and cu_seqlens then describe the whole sequence (docs/parallel.md).
            rotation: the rotation of the segment's positions when the caller has built it once for every layer
                (:meth:`rotation_table`); None builds it here from ``positions`` (or from state, offset and
                cu_seqlens).

        Returns:
            ``(y, state)``: y ``(B, T, D)``; state or None.
        """
        B, T, _ = x.shape
        H, K, V = self.num_heads, self.key_dim, self.head_value_dim
        q = self.q_proj(x).view(B, T, H, K)
        k = (self.k_proj(x) * self.scaling).view(B, T, H, K)
        v = self.v_proj(x).view(B, T, H, V)
        if rotation is None:
            if positions is None:
                start = 0 if cp_group is None else cp_group.start
                positions = positions_for(
                    B, T, x.device, state=state, offset=offset, cu_seqlens=cu_seqlens, start=start
                )
            rotation = rotation_table(positions, K, dtype=compute_dtype(q.dtype))
        q = apply_rotation(q, rotation)
        k = apply_rotation(k, rotation)
        o, new_state = retention(
            q,
            k,
            v,
            self.log_decay(x.device, v.dtype),
            form=form,
            chunk_size=chunk_size,
            initial_state=state,
            output_final_state=output_state,
            offset=offset,
            cu_seqlens=cu_seqlens,
            backend=self.backend,
            cp_group=cp_group,
        )  # o: (B, T, H, V)
        o = self.group_norm(o) if self.group_norm is not None else o.flatten(-2)  # (B, T, H·V)
        if self.g_proj is not None:
            o = nn.functional.silu(self.g_proj(x)) * o
        return self.out_proj(o), new_state

    # ---- static decoding state (retnet.generation.engine) ----------------------------------------------------
    def allocate_decode_state(
        self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> RetentionState:
        """Preallocated state of ``batch_size`` rows for :meth:`decode_step_` (constant in ``max_len``).

        Args:
            batch_size: B, number of slots.
            max_len: longest sequence the caller will decode (unused: the state does not grow).
            device: where the buffers live.
            dtype: the model's dtype; the state is float32 (float64 for float64 models), docs/spec.md §3.

        Returns:
            :class:`RetentionState` with S ``(B, H, K, V)``, z ``(B, H, K)`` and position ``(B,)``, all zero.
        """
        del max_len
        H, K, V = self.num_heads, self.key_dim, self.head_value_dim
        state = RetentionState.zeros(batch_size, H, K, V, dtype=compute_dtype(dtype), device=device)
        self._decode_on_triton = self._step_on_triton(torch.device(device), dtype)  # decided once, not per token
        return state

    def prefill_decode_state_(
        self,
        x: torch.Tensor,
        state: RetentionState,
        rows: torch.Tensor,
        start: int,
        *,
        chunk_size: int = 64,
        rotation: RotationTable | None = None,
    ) -> torch.Tensor:
        """Run a segment for rows ``rows`` of a static state, continuing them, and write their new state in place.

        Args:
            x: ``(n, T, D)`` normalised block input of the segment.
            state: buffers from :meth:`allocate_decode_state`.
            rows: ``(n,)`` int64 slot indices on the state's device.
            start: the rows' common position before the segment (0: a new sequence; the rows' old state is
                ignored).
            chunk_size: chunk size of the chunkwise form.
            rotation: the rotation at positions ``start .. start + T − 1`` shared by every layer
                (:meth:`rotation_table`); None builds it here.

        Returns:
            ``(n, T, D)`` layer output.
        """
        initial = None if start == 0 else RetentionState(state.S[rows], state.z[rows], state.position[rows])
        y, new = self.forward(
            x, form="chunkwise", chunk_size=chunk_size, state=initial, output_state=True, rotation=rotation
        )
        state.S.index_copy_(0, rows, new.S.to(state.S.dtype))
        state.z.index_copy_(0, rows, new.z.to(state.z.dtype))
        state.position.index_copy_(0, rows, new.position)
        return y

    def pack_decode_weights_(self) -> None:
        """Stack the q/k/v(/g) weights so that :meth:`decode_step_` reads them with one matrix product.

        The parameters become views of one buffer, values unchanged (see :mod:`retnet.layers.packing`); moving or
        casting the module drops the packing.
        """
        linears = [self.q_proj, self.k_proj, self.v_proj] + ([self.g_proj] if self.g_proj is not None else [])
        self._packed_decode = pack_linears_(linears)

    def _apply(self, fn, recurse=True):
        self._packed_decode = None  # the parameters get new storage: the stacked buffer would go stale
        return super()._apply(fn, recurse)

    def _decode_projections(self, x: torch.Tensor):
        """``(B, 1, D)`` → q, k (unscaled), v, gate input (or None), from one product when packed."""
        packed = current_packing(self._packed_decode, self.q_proj)
        if packed is not None:
            q, k, v, *g = packed(x)
            return q, k, v, (g[0] if g else None)
        return self.q_proj(x), self.k_proj(x), self.v_proj(x), (None if self.g_proj is None else self.g_proj(x))

    def decode_step_(
        self, x_t: torch.Tensor, state: RetentionState, *, rotation: RotationTable | None = None
    ) -> torch.Tensor:
        """One token for every row, updating ``state`` in place (recurrent form, paper Eq. 6).

        Each row is rotated at its own position, read from ``state.position`` on the device (by the caller, once
        for every layer, when it passes ``rotation``), so the step has no host synchronisation and can be captured
        in a CUDA graph. On CUDA (and with ``backend="triton"``) the fused Triton step runs; otherwise an in-place
        PyTorch step that performs the recurrent reference's operations in the same order (bit-identical to it).

        Args:
            x_t: ``(B, D)`` normalised block input, one token per row.
            state: buffers from :meth:`allocate_decode_state` (B rows).
            rotation: :meth:`rotation_table` of ``state.position[:, None]`` as it is before the step (``(B, 1, 1,
                K/2)``), built once per step for all layers; None builds it here.

        Returns:
            ``(B, D)`` layer output.
        """
        B, _ = x_t.shape
        H, K, V = self.num_heads, self.key_dim, self.head_value_dim
        x = x_t[:, None]  # (B, D) -> (B, 1, D)
        if rotation is None:
            rotation = self.rotation_table(state.position[:, None])  # (B, 1) read before the step advances it
        q, k, v, g = self._decode_projections(x)  # (B, 1, H·K) twice, (B, 1, H·V) twice
        q = apply_rotation(q.view(B, 1, H, K), rotation)
        k = apply_rotation((k * self.scaling).view(B, 1, H, K), rotation)
        v = v.view(B, 1, H, V)
        log_decay = self.log_decay(x.device, v.dtype)
        on_triton = getattr(self, "_decode_on_triton", None)
        if on_triton is None:
            on_triton = self._step_on_triton(v.device, v.dtype)
        if on_triton and state.S.dtype == torch.float32:
            from ..ops.retention.triton import retention_step

            o = retention_step(q, k, v, log_decay, state)  # (B, 1, H, V)
        else:
            o = _recurrent_step_(q[:, 0], k[:, 0], v[:, 0], log_decay, state)[:, None]  # (B, 1, H, V)
        o = self.group_norm(o) if self.group_norm is not None else o.flatten(-2)  # (B, 1, H·V)
        if g is not None:
            o = nn.functional.silu(g) * o
        return self.out_proj(o)[:, 0]  # (B, 1, D) -> (B, D)

    def _step_on_triton(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether :meth:`decode_step_` runs the fused Triton step for inputs of ``dtype`` on ``device``."""
        if self.backend == "torch" or dtype == torch.float64:
            return False
        if self.backend == "auto" and device.type != "cuda":
            return False
        from ..ops.triton_utils import triton_runtime_available

        return triton_runtime_available(device)


def _recurrent_step_(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, state: RetentionState
) -> torch.Tensor:
    """In-place PyTorch retention step: the operations of ``recurrent_ref`` for one token, on static buffers.

    Args:
        q, k: ``(B, H, K)`` rotated (k scaled by K^−½).
        v: ``(B, H, V)``.
        log_decay: ``(H,)`` log γ in the state's dtype.
        state: S ``(B, H, K, V)``, z ``(B, H, K)`` in the compute dtype, position ``(B,)``; advanced in place.

    Returns:
        ``(B, H, V)`` normalised output in v's dtype (0 for rows at negative positions, which are left padding).
    """
    S, z, position = state
    dt, out_dtype = S.dtype, v.dtype
    valid = (position >= 0)[:, None, None]  # (B, 1, 1)
    q, k, v = q.to(dt), torch.where(valid, k.to(dt), 0.0), torch.where(valid, v.to(dt), 0.0)
    lg = log_decay.to(dt)
    gamma = lg.exp()
    S.mul_(gamma[None, :, None, None]).add_(k[..., None] * v[..., None, :])  # (B, H, K, V)
    z.mul_(gamma[None, :, None]).add_(k)  # (B, H, K)
    o = (q[..., None, :] @ S).squeeze(-2)  # (B, H, 1, K) @ (B, H, K, V) -> (B, H, V)
    s = (q * z).sum(-1)  # (B, H)
    o = normalize_rows(o[:, :, None], s[:, :, None], position[:, None], lg)[:, :, 0]  # (B, H, V)
    o = torch.where(valid, o, 0.0)
    position.add_(1)
    return o.to(out_dtype)
