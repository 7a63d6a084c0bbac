"""Relative position as a rotation of q and k (paper §2.1, Eq. 3; docs/spec.md §2).

K/2 frequencies θ_i = 10000^(−i/(K/2 − 1)) (exponents from linspace(0, 1, K/2), not RoPE's 2i/K); frequency i
rotates the interleaved channel pair (2i, 2i+1) by n·θ_i at absolute position n. No xPos length scaling.

The cos and sin of the angles depend only on the positions and K, which every layer shares: a
:class:`RotationTable` holds them, built once per model forward (or decoding step) by :func:`rotation_table` and
handed to every layer, so the transcendental work is done once rather than in each layer's forward and backward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..ops.retention.decay import compute_dtype


def rotation_frequencies(head_dim: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """θ_i for i = 0..K/2−1.

    Args:
        head_dim: K, even.
        dtype: float32 or float64.
        device: where to put the result.

    Returns:
        ``(K/2,)`` frequencies (θ_0 = 1, θ_{K/2−1} = 1e-4; a single θ = 1 when K = 2).

    Raises:
        ValueError: if K is odd or < 2.
    """
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"the q/k head dim must be even and >= 2 for the rotation, got {head_dim}")
    exponents = torch.linspace(0.0, 1.0, head_dim // 2, dtype=torch.float64, device=device)
    return torch.pow(10000.0, -exponents).to(dtype)


class RotationTable(NamedTuple):
    """cos and sin of the angles n·θ_i of a segment's positions: what every layer needs to rotate q and k.

    A NamedTuple of tensors, so it passes through ``torch.compile`` (an ordinary tensor input of a compiled block)
    and activation checkpointing like any argument. Build it with :func:`rotation_table`.

    Attributes:
        cos: ``(B or 1, T, 1, K/2)`` float32 (float64 for float64 inputs); a leading 1 broadcasts over the batch
            (and a T of 1 over the segment: one position for every token).
        sin: the same shape and dtype.
    """

    cos: torch.Tensor
    sin: torch.Tensor


def rotation_table(positions: torch.Tensor, head_dim: int, *, dtype: torch.dtype = torch.float32) -> RotationTable:
    """The rotation of a segment at ``positions``, for a q/k head dim K.

    Rows of ``positions`` that are one row expanded (stride 0, as :func:`retnet.layers.retention.positions_for`
    returns without a state) are computed once and broadcast.

    Args:
        positions: ``(B, T)`` integer absolute positions n (negative for left padding).
        head_dim: K, even.
        dtype: the angles' dtype: float32, or float64 for float64 inputs (``compute_dtype`` of the input dtype).

    Returns:
        :class:`RotationTable` with cos and sin ``(B or 1, T, 1, K/2)`` in ``dtype``.

    Raises:
        ValueError: positions that are not a 2-D integer tensor, a dtype other than float32 / float64, or an odd K.
    """
    if not isinstance(positions, torch.Tensor) or positions.dim() != 2 or positions.is_floating_point():
        shape = tuple(positions.shape) if isinstance(positions, torch.Tensor) else type(positions).__name__
        raise ValueError(f"positions must be a (B, T) integer tensor, got {shape}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the rotation's dtype must be float32 or float64, got {dtype}")
    if positions.shape[0] > 1 and positions.stride(0) == 0:
        positions = positions[:1]  # (B, T) -> (1, T): every row is the same
    theta = rotation_frequencies(head_dim, dtype=dtype, device=positions.device)  # (K/2,)
    angle = positions.to(dtype)[..., None] * theta  # (B, T, K/2)
    return RotationTable(angle.cos()[:, :, None, :], angle.sin()[:, :, None, :])  # (B, T, 1, K/2) each


def apply_rotation(x: torch.Tensor, rotation: RotationTable | torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs: (a, b) → (a cos − b sin, b cos + a sin), angle n·θ_i.

    Computed in float32 (float64 for float64 inputs); the result takes x's dtype.

    Args:
        x: ``(B, T, H, K)``.
        rotation: the segment's :class:`RotationTable` (shared by the layers), or ``(B, T)`` integer absolute
            positions n, from which the table is built here.

    Returns:
        ``(B, T, H, K)`` rotated tensor.

    Raises:
        ValueError: a table whose dtype is not the compute dtype of x, or whose shape does not fit x.
    """
    dt = compute_dtype(x.dtype)
    if isinstance(rotation, torch.Tensor):
        rotation = rotation_table(rotation, x.shape[-1], dtype=dt)
    cos, sin = rotation
    B, T, _, K = x.shape
    if cos.dtype != dt:
        raise ValueError(f"rotation is {cos.dtype} but inputs of {x.dtype} rotate in {dt} (docs/spec.md §2)")
    # Sizes compared with ==, not `in`: torch.compile answers `in` over a tuple holding a symbolic size with False.
    fits = cos.dim() == 4 and cos.shape[2] == 1 and cos.shape[3] == K // 2
    if not (fits and (cos.shape[0] == 1 or cos.shape[0] == B) and (cos.shape[1] == 1 or cos.shape[1] == T)):
        raise ValueError(
            f"rotation must be ({B} or 1, {T} or 1, 1, {K // 2}) for x of shape {tuple(x.shape)}, "
            f"got {tuple(cos.shape)}"
        )
    pairs = x.to(dt).unflatten(-1, (-1, 2))  # (B, T, H, K/2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1)  # (B, T, H, K/2, 2)
    return rotated.flatten(-2).to(x.dtype)
