"""The token-mixer interface shared by every architecture of the comparison (paper §3.4, Tables 5 and 6).

A mixer maps ``(B, T, D) -> (B, T, D)`` causally. Without a state it runs its parallel training path (and can
return the state after the segment); with a state it continues token by token through :meth:`TokenMixer.step`,
its recurrent decoding. ``forward(x, state=None, output_state=False) -> (y, state)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TokenMixer(nn.Module):
    """Base class: subclasses implement :meth:`parallel`, :meth:`step` and :meth:`empty_state`."""

    def forward(self, x: torch.Tensor, *, state: Any = None, output_state: bool = False) -> tuple[torch.Tensor, Any]:
        """Mix tokens.

        Args:
            x: ``(B, T, D)``.
            state: state of an earlier segment (or :meth:`empty_state`); the call then continues it exactly,
                one token at a time.
            output_state: also return the state after the segment.

        Returns:
            ``(y, state)``: y ``(B, T, D)`` in x's dtype; the new state, or None unless ``output_state``.
        """
        if state is None:
            y, new_state = self.parallel(x, output_state=output_state)
            return y, (new_state if output_state else None)
        ys = []
        for t in range(x.shape[1]):
            y_t, state = self.step(x[:, t], state)  # (B, D)
            ys.append(y_t)
        return torch.stack(ys, dim=1), (state if output_state else None)

    def parallel(self, x: torch.Tensor, *, output_state: bool = False) -> tuple[torch.Tensor, Any]:
        """Training path over a whole segment from an empty state: ``(B, T, D) -> ((B, T, D), state | None)``."""
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Recurrent decoding of one token: ``(B, D)`` and the state → ``((B, D), new state)``."""
        raise NotImplementedError

    def empty_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> Any:
        """The state before the first token."""
        raise NotImplementedError
