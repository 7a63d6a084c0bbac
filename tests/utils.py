"""The one place for comparison helpers and the tolerance table (docs/architecture.md, "Tests")."""

from __future__ import annotations

import torch

# RMS-relative backstops per dtype (gradients get twice these).
RMS_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 1e-2}


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64 (0 when both are zero)."""
    a, b = actual.detach().double(), expected.detach().double()
    denom = b.norm().item()
    return (a - b).norm().item() / denom if denom > 0 else (a - b).norm().item()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str = "tensor") -> None:
    """Fail with the max and RMS-relative error unless ‖a − b‖ / ‖b‖ <= rtol and shapes agree."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    err = rel_error(actual, expected)
    max_abs = (actual.detach().double() - expected.detach().double()).abs().max().item()
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:.1e} (max abs {max_abs:.3e})"
