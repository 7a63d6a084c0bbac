"""Several projections of one input read as one matrix product, for decoding (docs/inference.md).

At batch 1 a decoding step is a chain of matrix-vector products, each bound by reading its weight; four small
products (q, k, v, g) cost four launches and reach less bandwidth than one product with the four weights stacked.
:func:`pack_linears_` stacks the weights of bias-free linears into one buffer *in place*: each parameter becomes a
row slice (a view) of the buffer with unchanged values, so memory does not grow and in-place updates of the
parameters (``load_state_dict``, optimizer steps) reach the buffer. A product with the buffer is not differentiable
with respect to the parameters, so only no-grad decoding paths use it; a module that packs drops its packing in
``_apply`` (``.to()``, ``.cuda()``, ``.half()`` replace the parameters' storage).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn


class PackedProjection(NamedTuple):
    """Stacked weights of linears with one input.

    Attributes:
        weight: ``(N_1 + … + N_n, D)`` the stacked weights; the linears' weights are views of its row blocks.
        sizes: ``(N_1, …, N_n)`` output widths in order.
    """

    weight: torch.Tensor
    sizes: tuple[int, ...]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(..., D)`` → the n outputs ``(..., N_i)``, from one matrix product."""
        return nn.functional.linear(x, self.weight).split(self.sizes, dim=-1)


def current_packing(packed: PackedProjection | None, first: nn.Linear) -> PackedProjection | None:
    """``packed`` if ``first``'s weight is still the start of its buffer, else None (the parameters were replaced,
    e.g. in a deep copy or by assignment, and the buffer may be stale). Checked in eager code only: under
    ``torch.compile`` the engine packs right before compiling."""
    if packed is None or torch.compiler.is_compiling():
        return packed
    return packed if first.weight.data_ptr() == packed.weight.data_ptr() else None


def pack_linears_(linears: Sequence[nn.Linear]) -> PackedProjection:
    """Stack the weights of ``linears`` into one buffer, making each weight a view of it (values unchanged).

    Args:
        linears: bias-free ``nn.Linear`` modules with one input width, dtype and device.

    Returns:
        :class:`PackedProjection` over the new buffer.

    Raises:
        ValueError: if a linear has a bias, or the input widths, dtypes or devices differ.
    """
    weights = [lin.weight for lin in linears]
    if not weights:
        raise ValueError("pack_linears_ needs at least one linear")
    if any(lin.bias is not None for lin in linears):
        raise ValueError("pack_linears_ packs bias-free linears only")
    first = weights[0]
    if any(w.shape[1] != first.shape[1] or w.dtype != first.dtype or w.device != first.device for w in weights):
        raise ValueError("pack_linears_ needs linears with one input width, dtype and device")
    buffer = torch.cat([w.detach() for w in weights])  # (ΣN, D)
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = buffer[start : start + rows]
        start += rows
    return PackedProjection(buffer, tuple(w.shape[0] for w in weights))
