"""Normalisation layers: block norms (RMSNorm / LayerNorm) and the head-wise norm of MSR (paper §2.2)."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """RMS normalisation over the last dim, computed in float32 (float64 for float64 inputs).

    Args:
        dim: size of the normalised dim.
        eps: added to the mean square.
        elementwise_affine: learn a per-channel weight (initialised to 1).
    """

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(..., dim)``; the result takes x's dtype."""
        xf = x.double() if x.dtype == torch.float64 else x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype)
        return y.type_as(x)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` computed in float32 (float64 for float64 inputs), result in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(..., dim)``."""
        dt = torch.float64 if x.dtype == torch.float64 else torch.float32
        w = None if self.weight is None else self.weight.to(dt)
        b = None if self.bias is None else self.bias.to(dt)
        return nn.functional.layer_norm(x.to(dt), self.normalized_shape, w, b, self.eps).type_as(x)


def build_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """A block norm: ``"rmsnorm"`` (torchscale flavour) or ``"layernorm"`` (paper flavour)."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; expected 'rmsnorm' or 'layernorm'")


class HeadNorm(nn.Module):
    """Head-wise norm of gated MSR ("GroupNorm", paper Eq. 8): each head's V outputs normalised on their own.

    Args:
        num_heads: H.
        head_dim: V, channels per head.
        eps: epsilon.
        kind: ``"rms"`` (torchscale: RMS, no affine) or ``"groupnorm"`` (paper: mean/variance, affine over H·V).
    """

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-6, kind: str = "rms"):
        super().__init__()
        if kind not in ("rms", "groupnorm"):
            raise ValueError(f"unknown head norm {kind!r}; expected 'rms' or 'groupnorm'")
        self.kind, self.eps = kind, eps
        self.num_heads, self.head_dim = num_heads, head_dim
        if kind == "groupnorm":
            self.weight = nn.Parameter(torch.ones(num_heads * head_dim))
            self.bias = nn.Parameter(torch.zeros(num_heads * head_dim))

    def forward(self, o: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, T, H, V)`` per head and flatten to ``(B, T, H·V)`` in o's dtype."""
        of = o.double() if o.dtype == torch.float64 else o.float()
        if self.kind == "groupnorm":
            of = of - of.mean(-1, keepdim=True)
        y = of * torch.rsqrt(of.pow(2).mean(-1, keepdim=True) + self.eps)
        y = y.flatten(-2)  # (B, T, H, V) -> (B, T, H·V)
        if self.kind == "groupnorm":
            y = y * self.weight.to(y.dtype) + self.bias.to(y.dtype)
        return y.type_as(o)
