"""``RetNetCache``: the recurrent retention states behind ``transformers``' ``Cache`` interface (docs/spec.md §5).

A RetNet layer's decoding state is constant-size: S ``(B, H, K, V)``, the key sum z ``(B, H, K)`` and each row's
next position ``(B,)`` (:class:`retnet.RetentionState`). There are no keys or values to append, so ``update`` is
not supported; the model's forward reads :attr:`RetNetCache.states` and stores the new ones with
:meth:`RetNetCache.advance`. ``generate`` passes the cache from step to step, beam search reorders it
(``reorder_cache``), and ``batch_select_indices`` / ``batch_repeat_interleave`` pick or repeat rows. Every layer
reports itself as linear (no sequence dimension), so ``generate`` never slices the prompt against a cache length.
A state cannot be rolled back: ``crop`` only accepts 0.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from ..ops.retention import RetentionState


class RetentionCacheLayer:
    """One layer's :class:`RetentionState` (None until the first forward), with the per-layer cache methods."""

    supports_early_init = False  # nothing to allocate before the first forward
    is_compileable = False  # the state is replaced, not written in place
    is_croppable = False  # a state holds no per-token history to roll back
    is_sliding = False

    def __init__(self) -> None:
        self.state: RetentionState | None = None

    @property
    def is_initialized(self) -> bool:
        return self.state is not None

    def _map(self, fn) -> None:
        if self.state is not None:
            self.state = RetentionState(*(fn(x) for x in self.state))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Rows ``beam_idx`` of the batch (beam search)."""
        self._map(lambda x: x.index_select(0, beam_idx.to(x.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows ``indices``."""
        self._map(lambda x: x[indices.to(x.device)])

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every row ``repeats`` times, in place of the row (``[a, b] -> [a, a, b, b]``)."""
        self._map(lambda x: x.repeat_interleave(repeats, dim=0))

    def crop(self, tokens_to_remove: int) -> None:
        """Only ``crop(0)`` (nothing to drop) is possible.

        Raises:
            ValueError: any other count: a retention state cannot forget the tokens it has absorbed.
        """
        if tokens_to_remove != 0:
            raise ValueError("a retention state cannot be cropped: it holds no per-token history")

    def reset(self) -> None:
        self.state = None

    def get_max_length(self) -> int:
        return -1  # no sequence dimension


class RetNetCache(Cache):
    """Per-layer retention states of one batch, as a ``transformers`` ``Cache``.

    Args:
        num_layers: L, the model's number of blocks.

    Raises:
        ValueError: ``num_layers`` below 1.
    """

    def __init__(self, num_layers: int) -> None:
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        super().__init__(layers=[RetentionCacheLayer() for _ in range(num_layers)])
        self.seen_tokens = 0

    @property
    def states(self) -> list[RetentionState] | None:
        """The per-layer states, or None before the first forward."""
        if not self.layers[0].is_initialized:
            return None
        return [layer.state for layer in self.layers]

    def advance(self, states: list[RetentionState], num_tokens: int) -> None:
        """Store the states after a segment of ``num_tokens`` columns (padding included).

        Raises:
            ValueError: a number of states other than one per layer.
        """
        if len(states) != len(self.layers):
            raise ValueError(f"expected one state per layer ({len(self.layers)}), got {len(states)}")
        for layer, state in zip(self.layers, states):
            layer.state = state
        self.seen_tokens += num_tokens

    def update(self, *args, **kwargs):
        """Not supported: retention keeps a fixed-size state, not keys and values (use :meth:`advance`)."""
        raise NotImplementedError("RetNetCache holds retention states, not keys and values; use advance()")

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Columns consumed so far (left padding included), as ``transformers`` counts them."""
        return self.seen_tokens

    def reset(self) -> None:
        super().reset()
        self.seen_tokens = 0

    @property
    def is_linear(self) -> list[bool]:
        return [True] * len(self.layers)

    @property
    def batch_size(self) -> int:
        """Rows held, or -1 before the first forward."""
        states = self.states
        return -1 if states is None else int(states[0].position.shape[0])
