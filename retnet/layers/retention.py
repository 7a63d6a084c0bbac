"""Gated multi-scale retention (MSR), paper §2.2 (Eq. 8); SPEC §4.

q = x W_Q,  k = x W_K · K^−½,  v = x W_V,  g = x W_G
head h: õ_h = HeadNorm(Retention_γh(rotate(q_h), rotate(k_h), v_h))
Y = (swish(g) ⊙ concat_h õ_h) W_O
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.retention import RetentionState, log_decay_schedule, retention
from ..ops.retention.decay import compute_dtype
from .norm import HeadNorm
from .position import apply_rotation


def positions_for(
    batch_size: int,
    length: int,
    device: torch.device,
    *,
    state: RetentionState | None = None,
    offset: int | torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Absolute positions ``(B, T)`` of a segment, as the retention op counts them.

    With a state the segment starts at the state's position, otherwise at ``offset`` (default 0); with
    ``cu_seqlens`` positions restart at 0 at each document boundary.
    """
    steps = torch.arange(length, device=device)
    if cu_seqlens is not None:
        starts = cu_seqlens[:-1].to(device)
        doc = torch.bucketize(steps, starts, right=True) - 1  # (T,) document index of each token
        return (steps - starts[doc]).expand(batch_size, length)
    if state is not None:
        start = state.position
    elif isinstance(offset, torch.Tensor):
        start = offset.to(device=device, dtype=torch.long).expand(batch_size)
    else:  # an integer offset is added on the device (copying it over would wait for the GPU)
        return (steps + (offset or 0)).expand(batch_size, length)
    return start[:, None] + steps  # (B, T)


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

        Returns:
            ``(y, state)``: y ``(B, T, D)``; state or None.
        """
        B, T, _ = x.shape
        H, K, V = self.num_heads, self.key_dim, self.head_value_dim
        if positions is None:
            positions = positions_for(B, T, x.device, state=state, offset=offset, cu_seqlens=cu_seqlens)
        q = self.q_proj(x).view(B, T, H, K)
        k = (self.k_proj(x) * self.scaling).view(B, T, H, K)
        v = self.v_proj(x).view(B, T, H, V)
        q = apply_rotation(q, positions)
        k = apply_rotation(k, positions)
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
        )  # o: (B, T, H, V)
        o = self.group_norm(o) if self.group_norm is not None else o.flatten(-2)  # (B, T, H·V)
        if self.g_proj is not None:
            o = nn.functional.silu(self.g_proj(x)) * o
        return self.out_proj(o), new_state
