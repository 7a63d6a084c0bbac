"""The recurrent retention state carried between calls (paper Eq. 6; docs/spec.md §3)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class RetentionState(NamedTuple):
    """State after a segment: enough to continue retention exactly.

    Attributes:
        S: ``(B, H, K, V)`` float32 (float64 for float64 runs): Σ_m γ^(n−m) k_mᵀ v_m.
        z: ``(B, H, K)`` same dtype: the key sum Σ_m γ^(n−m) k_m, used by the score normaliser.
        position: ``(B,)`` int64: the absolute position of each row's next token.
    """

    S: torch.Tensor
    z: torch.Tensor
    position: torch.Tensor

    @classmethod
    def zeros(
        cls,
        batch_size: int,
        num_heads: int,
        key_dim: int,
        value_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        position: int | torch.Tensor = 0,
        broadcast: bool = False,
    ) -> RetentionState:
        """An empty state (nothing retained yet) starting at ``position``.

        With ``broadcast``, S and z are one zero broadcast to their shapes: nothing is allocated or filled per
        element, and they must not be written in place (for a state that is only read, e.g. a call's start).
        """
        if broadcast:
            zero = torch.zeros((), dtype=dtype, device=device)
            S = zero.expand(batch_size, num_heads, key_dim, value_dim)
            z = zero.expand(batch_size, num_heads, key_dim)
        else:
            S = torch.zeros(batch_size, num_heads, key_dim, value_dim, dtype=dtype, device=device)
            z = torch.zeros(batch_size, num_heads, key_dim, dtype=dtype, device=device)
        if isinstance(position, torch.Tensor):
            pos = position.to(device=device, dtype=torch.long).expand(batch_size).clone()
        else:  # filled on the device: copying a host integer over would wait for the GPU
            pos = torch.full((batch_size,), position, dtype=torch.long, device=device)
        return cls(S, z, pos)

    def index_select(self, index: torch.Tensor) -> RetentionState:
        """Rows ``index`` of the batch (beam search, dropping finished rows)."""
        return RetentionState(self.S[index], self.z[index], self.position[index])

    def detach(self) -> RetentionState:
        """The same state cut from the autograd graph (truncated backpropagation through time)."""
        return RetentionState(self.S.detach(), self.z.detach(), self.position)
