"""Document packing (docs/spec.md §3 "Padding and documents"): windows -> model inputs with state resets.

A window holds T + 1 tokens of the flat stream, possibly spanning several documents (each ending with the
separator). Inputs are its first T tokens and targets its last T. With ``reset_at_boundaries`` the B rows are
flattened into one row (1, B·T) and ``cu_seqlens`` marks every row start and every position right after a
separator, so the retention state resets and positions restart there; the separator itself still sees its
document and learns to end it. Every target is a real next token, so no target is masked. When no window
of the batch holds a separator, the only boundaries are the row starts, so the B rows are passed as they are
(the same function, without the per-segment work of the packed path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    """Model inputs for one micro-batch.

    Attributes:
        input_ids: ``(B, T)`` int64, or ``(1, B·T)`` when packed with resets.
        targets: same shape as ``input_ids``: the next token of each position.
        cu_seqlens: ``(N + 1,)`` int64 segment boundaries of the packed row, or None.
    """

    input_ids: torch.Tensor
    targets: torch.Tensor
    cu_seqlens: torch.Tensor | None

    @property
    def num_tokens(self) -> int:
        return self.targets.numel()

    def to(self, device: torch.device | str) -> Batch:
        cu = None if self.cu_seqlens is None else self.cu_seqlens.to(device)
        return Batch(self.input_ids.to(device), self.targets.to(device), cu)


def segment_boundaries(input_ids: np.ndarray, sep_id: int) -> np.ndarray:
    """``cu_seqlens`` for rows ``(B, T)`` flattened to one row: row starts and positions after separators.

    Returns:
        ``(N + 1,)`` int64, strictly increasing, from 0 to B·T.
    """
    B, T = input_ids.shape
    after_sep = np.nonzero(input_ids.reshape(-1) == sep_id)[0] + 1
    cuts = np.concatenate([np.arange(B + 1, dtype=np.int64) * T, after_sep.astype(np.int64)])
    return np.unique(cuts)


def make_batch(windows: np.ndarray, sep_id: int, reset_at_boundaries: bool = True) -> Batch:
    """Turn ``(B, T + 1)`` windows into a :class:`Batch`.

    Args:
        windows: int64 token windows.
        sep_id: the document separator id.
        reset_at_boundaries: pack into one row with ``cu_seqlens`` (state resets at rows and documents)
            instead of B independent rows.
    """
    x, y = windows[:, :-1], windows[:, 1:]
    if not reset_at_boundaries or not (x == sep_id).any():
        return Batch(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y)), None)
    cu = torch.from_numpy(segment_boundaries(x, sep_id))
    return Batch(
        torch.from_numpy(np.ascontiguousarray(x.reshape(1, -1))),
        torch.from_numpy(np.ascontiguousarray(y.reshape(1, -1))),
        cu,
    )
