"""``RecurrentMixer``: a token mixer (:class:`retnet.model.TokenMixer`) made of a parallel path and a one-token step.

Every baseline of the comparison (paper §3.4, Tables 5 and 6) has a parallel training path over a whole segment
(:meth:`RecurrentMixer.parallel`) and a recurrent decoding step (:meth:`RecurrentMixer.step`). The protocol's
call runs the parallel path from an empty state and otherwise continues a state token by token, so the forms
differ only in how the function is evaluated. The baselines count positions themselves (from their states) and
support neither left padding nor packed documents.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class RecurrentMixer(nn.Module):
    """Base class: subclasses implement :meth:`parallel`, :meth:`step` and :meth:`empty_state`."""

    def forward(
        self,
        x: torch.Tensor,
        *,
        form: str = "chunkwise",
        chunk_size: int | None = None,
        state: Any = None,
        offset: int | torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        output_state: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """Mix tokens.

        Args:
            x: ``(B, T, D)``.
            form: ``"recurrent"`` steps token by token (from :meth:`empty_state` when ``state`` is None); the
                other forms run the parallel path when ``state`` is None.
            chunk_size: ignored (each mixer chunks its parallel path its own way).
            state: state of an earlier segment (or :meth:`empty_state`); the call then continues it exactly,
                one token at a time.
            offset: must be None (no left padding).
            cu_seqlens: must be None (no packed documents).
            positions: ignored (positions follow from the state).
            output_state: also return the state after the segment.

        Returns:
            ``(y, state)``: y ``(B, T, D)`` in x's dtype; the new state, or None unless ``output_state``.

        Raises:
            ValueError: an ``offset`` or ``cu_seqlens``.
        """
        if offset is not None or cu_seqlens is not None:
            raise ValueError(f"{type(self).__name__} supports neither offset (left padding) nor cu_seqlens")
        if state is None and form == "recurrent":
            state = self.empty_state(x.shape[0], x.device, x.dtype)
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
