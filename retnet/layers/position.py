"""Relative position as a rotation of q and k (paper §2.1, Eq. 3; docs/spec.md §2).

K/2 frequencies θ_i = 10000^(−i/(K/2 − 1)) (exponents from linspace(0, 1, K/2), not RoPE's 2i/K); frequency i
rotates the interleaved channel pair (2i, 2i+1) by n·θ_i at absolute position n. No xPos length scaling.
"""

from __future__ import annotations

import torch


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


def apply_rotation(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs: (a, b) → (a cos − b sin, b cos + a sin), angle n·θ_i.

    Angles are computed in float32 (float64 for float64 inputs); the result takes x's dtype.

    Args:
        x: ``(B, T, H, K)``.
        positions: ``(B, T)`` integer absolute positions n.

    Returns:
        ``(B, T, H, K)`` rotated tensor.
    """
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    theta = rotation_frequencies(x.shape[-1], dtype=dt, device=x.device)  # (K/2,)
    angle = positions.to(dt)[..., None] * theta  # (B, T, K/2)
    cos = angle.cos()[:, :, None, :]  # (B, T, 1, K/2)
    sin = angle.sin()[:, :, None, :]
    pairs = x.to(dt).unflatten(-1, (-1, 2))  # (B, T, H, K/2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1)  # (B, T, H, K/2, 2)
    return rotated.flatten(-2).to(x.dtype)
