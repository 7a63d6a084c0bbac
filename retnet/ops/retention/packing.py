"""Packed documents (``cu_seqlens``) as a few batches of left-padded rows (docs/spec.md §3, "Padding and documents").

A packed row holds N documents; each must start from an empty state at position 0. Rather than one call per
document (N tiny launches on a GPU), documents are grouped by length into power-of-two buckets; each bucket
becomes one batch whose rows are its documents, left-padded to the bucket's longest. Left padding is exact in
every form (padded tokens sit at negative positions: they contribute nothing and their outputs are 0), so the
result equals the per-document calls. Padding costs at most 2× a bucket's tokens, and there are at most
⌈log2 T⌉ + 1 buckets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DocumentBucket:
    """Documents of similar length laid out as left-padded rows.

    Attributes:
        docs: ``(R,)`` indices of the bucket's documents in the packed row.
        gather: ``(R, L)`` token index in the packed row for each slot (padding slots point at a real token of
            the same document; the op ignores them).
        valid: ``(R, L)`` True on real tokens.
        offset: ``(R,)`` position of each row's first slot, −(number of pads).
    """

    docs: torch.Tensor
    gather: torch.Tensor
    valid: torch.Tensor
    offset: torch.Tensor


def bucket_documents(bounds: list[int], device: torch.device) -> list[DocumentBucket]:
    """Group the documents ``[bounds[i], bounds[i+1])`` into power-of-two length buckets."""
    groups: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        groups.setdefault((b - a - 1).bit_length(), []).append(i)
    starts = torch.tensor(bounds[:-1], dtype=torch.long)
    lengths = torch.tensor(bounds[1:], dtype=torch.long) - starts
    buckets = []
    for key in sorted(groups):
        docs = torch.tensor(groups[key], dtype=torch.long)
        L = int(lengths[docs].max())
        pads = L - lengths[docs]  # (R,)
        slot = torch.arange(L)[None, :] - pads[:, None]  # (R, L) index within the document, < 0 on padding
        valid = slot >= 0
        gather = starts[docs][:, None] + slot.clamp(min=0)
        buckets.append(DocumentBucket(docs.to(device), gather.to(device), valid.to(device), (-pads).to(device)))
    return buckets


def scatter_tokens(pieces: list[torch.Tensor], token_index: list[torch.Tensor]) -> torch.Tensor:
    """Put per-bucket token outputs ``(n_i, ...)`` back in packed order: ``(T, ...)`` (differentiable)."""
    order = torch.argsort(torch.cat(token_index))
    return torch.cat(pieces)[order]
