"""How the fused decode kernels are launched, and the codes of their variants (no Triton import here)."""

from __future__ import annotations

from dataclasses import dataclass

NORM_CODES = {"none": 0, "rmsnorm": 1, "layernorm": 2}
"""The block norm before a product (kernel constant ``NORM``)."""
ACTIVATION_CODES = {"none": 0, "silu": 1, "gelu": 2, "relu": 3}
"""The activation after a product (kernel constant ``ACT``); ``gelu`` is the exact (erf) form."""
HEAD_NORM_CODES = {"none": 0, "rms": 1, "groupnorm": 2}
"""The head-wise norm before the output projection (kernel constant ``HEAD_NORM``)."""
MAX_BATCH = 4
"""Largest batch the kernels take: each batch row is its own programs, which share a weight row only through L2;
past a few rows a matrix product that reads the weight once for the whole batch is the better kernel."""


@dataclass(frozen=True)
class MatvecLaunch:
    """How a product is launched: ``rows`` weight rows per program (:func:`paired_projection`: ``rows / 2`` pairs,
    so at least 2), read ``cols`` columns at a time, with ``warps`` warps and ``stages`` pipeline stages. The
    function computed does not depend on it."""

    rows: int
    cols: int
    warps: int = 4
    stages: int = 3

    def __post_init__(self):
        for name in ("rows", "cols", "warps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1 or value & (value - 1):
                raise ValueError(f"MatvecLaunch.{name} must be a power of two >= 1, got {value!r}")
        if not isinstance(self.stages, int) or self.stages < 1:
            raise ValueError(f"MatvecLaunch.stages must be an int >= 1, got {self.stages!r}")
