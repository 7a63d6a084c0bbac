"""When input *values* (not just shapes) may be inspected.

Value checks (ids in range, finite decays) read tensors back to the host. That is impossible while
``torch.compile`` traces and while a CUDA graph is being captured, so those checks are skipped there; shape,
dtype and device checks always run.
"""

from __future__ import annotations

import torch


def values_checkable() -> bool:
    """False while tracing with ``torch.compile`` or capturing a CUDA graph, else True."""
    if torch.compiler.is_compiling():
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def check_token_ids(input_ids, vocab_size: int) -> None:
    """Raise a clear error unless ``input_ids`` is a non-empty ``(B, T)`` integer tensor of ids in ``[0, vocab_size)``.

    Raises:
        ValueError: wrong rank, an empty batch or sequence, or ids outside the vocabulary.
        TypeError: a non-integer dtype.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be a (B, T) tensor of token ids")
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
    if input_ids.shape[1] < 1 or input_ids.shape[0] < 1:
        raise ValueError(f"input_ids must hold at least one token per row, got shape {tuple(input_ids.shape)}")
    if values_checkable():
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"token ids must lie in [0, {vocab_size}), got values in [{lo}, {hi}]")
