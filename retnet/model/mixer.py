"""The token-mixer protocol: the one call every block of :class:`~retnet.model.lm.CausalLM` makes (docs/spec.md §5).

A token mixer is the sublayer that moves information between positions (RetNet's multi-scale retention, or a
baseline's attention, recurrence or long convolution); everything else in a block is shared. It maps
``(B, T, D) -> (B, T, D)`` causally and carries a state from one call to the next::

    y, state = mixer(x, form=..., chunk_size=..., state=..., offset=..., cu_seqlens=..., positions=...,
                     output_state=...)

* ``form``: ``"parallel"``, ``"chunkwise"`` or ``"recurrent"``; every form computes the same function (a mixer
  without a chunkwise form of its own runs its parallel path).
* ``chunk_size``: the chunk size of the chunkwise form; mixers that chunk differently ignore it.
* ``state``: None at the start of a sequence, else what an earlier call returned; the call then continues that
  sequence exactly.
* ``offset``: the absolute position of the first token when there is no state (an int or a ``(B,)`` tensor;
  negative for left padding; None is 0).
* ``cu_seqlens``: ``(N + 1,)`` document boundaries of one packed row (B = 1); the state resets at each.
* ``positions``: ``(B, T)`` absolute positions when the caller has computed them once for every layer; None
  lets the mixer count its own.
* ``output_state``: also return the state after the segment (else the returned state is None).

Two more keywords are passed only when set, by models whose mixers take them: ``cp_group`` (context
parallelism) and ``rotation`` (RetNet's :class:`~retnet.layers.position.RotationTable` of
``positions``, built once per forward for every layer).

A mixer that cannot honour ``offset`` or ``cu_seqlens`` raises ``ValueError`` when it gets one; its language
model says so up front (``CausalLM.supports_left_padding`` / ``supports_packed_documents``).
:class:`retnet.layers.retention.MultiScaleRetention` is a token mixer as it stands; the baselines derive theirs
from :class:`retnet.baselines.base.RecurrentMixer` (a parallel path plus a one-token step).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

# The keyword arguments of the call, in the order above (the tests check every mixer against them).
MIXER_ARGUMENTS = ("form", "chunk_size", "state", "offset", "cu_seqlens", "positions", "output_state")


class TokenMixer(Protocol):
    """What a block calls: ``forward(x, *, form, chunk_size, state, offset, cu_seqlens, positions, output_state)``."""

    def forward(
        self,
        x: torch.Tensor,
        *,
        form: str,
        chunk_size: int | None,
        state: Any,
        offset: int | torch.Tensor | None,
        cu_seqlens: torch.Tensor | None,
        positions: torch.Tensor | None,
        output_state: bool,
    ) -> tuple[torch.Tensor, Any]:
        """Mix ``x (B, T, D)``; returns ``(y (B, T, D), state after the segment or None)``."""
        ...
