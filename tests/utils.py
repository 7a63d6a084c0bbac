"""The one place for comparison helpers and the tolerance table (docs/architecture.md, "Tests")."""

from __future__ import annotations

import torch

# RMS-relative backstops per dtype (gradients get twice these).
RMS_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 1e-2}

# Additive slack of assert_within_reference_error, per dtype: max|got − ref64| <= 2·max|ref_lp − ref64| + ATOL.
REFERENCE_ATOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}

# A row whose expected norm is below this fraction of the RMS row norm is judged against that fraction instead,
# so that rows which are (nearly) zero by construction do not turn rounding noise into a large relative error.
ROW_NORM_FLOOR = 1e-2


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64 (0 when both are zero)."""
    a, b = actual.detach().double(), expected.detach().double()
    denom = b.norm().item()
    return (a - b).norm().item() / denom if denom > 0 else (a - b).norm().item()


def row_errors(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Per-row relative errors ``(R,)`` float64, a row being one index of the leading dimension.

    Row r's error is ‖a_r − b_r‖ / max(‖b_r‖, ROW_NORM_FLOOR · RMS_r ‖b_r‖) (0 where both norms are zero). A
    0-d or 1-d tensor is one row.
    """
    a, b = actual.detach().double(), expected.detach().double()
    rows = 1 if a.dim() <= 1 else a.shape[0]
    diff = (a - b).reshape(rows, -1).norm(dim=1)  # (R,)
    norms = b.reshape(rows, -1).norm(dim=1)  # (R,)
    floor = ROW_NORM_FLOOR * norms.square().mean().sqrt()
    denom = torch.maximum(norms, floor)
    return torch.where(denom > 0, diff / denom.clamp_min(torch.finfo(torch.float64).tiny), diff)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, name: str = "tensor") -> None:
    """Fail unless shapes agree, ‖a − b‖ / ‖b‖ <= rtol, and every row's relative error (:func:`row_errors`) <= rtol.

    The per-row check catches an error confined to one row of a long tensor, which the whole-tensor error
    dilutes by the square root of the number of rows. The message gives the whole-tensor error, the worst row
    (index and relative error) and the largest absolute difference.
    """
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    if actual.numel() == 0:
        return
    err = rel_error(actual, expected)
    per_row = row_errors(actual, expected)
    worst = int(per_row.argmax())
    worst_err = per_row[worst].item()
    max_abs = (actual.detach().double() - expected.detach().double()).abs().max().item()
    detail = f"relative error {err:.3e}, worst row {worst} at {worst_err:.3e} (max abs {max_abs:.3e})"
    assert err <= rtol and worst_err <= rtol, f"{name}: {detail} > {rtol:.1e}"


def assert_within_reference_error(
    name: str, got: torch.Tensor, ref64: torch.Tensor, ref_lp: torch.Tensor, dtype: torch.dtype, scale: float = 1.0
) -> None:
    """Fail unless ``got`` is as close to the float64 reference as the reference computed in ``dtype`` is.

    max|got − ref64| must stay within 2·scale·max|ref_lp − ref64| plus ``REFERENCE_ATOL[dtype]`` (times scale and
    the reference's magnitude), and the RMS-relative error within ``RMS_TOLERANCE[dtype]`` (doubled when scale > 1,
    as for gradients).
    """
    err = (got - ref64).abs().max().item()
    ref_err = (ref_lp - ref64).abs().max().item()
    budget = 2 * scale * ref_err + scale * REFERENCE_ATOL[dtype] * max(1.0, ref64.abs().max().item())
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    assert err <= budget, f"{name}: max err {err:.3e} > {budget:.3e} (reference's own {ref_err:.3e})"
    rms = ((got - ref64).norm() / ref64.norm().clamp_min(1e-30)).item()
    bound = RMS_TOLERANCE[dtype] * (2 if scale > 1 else 1)
    assert rms <= bound, f"{name}: RMS-relative err {rms:.3e} > {bound:.1e}"
