"""Power laws of a size-scaling study (the paper's Figure 5): the fit, the crossing of two fitted lines, and its
uncertainty.

A power law ``L(X) = a · X^(−α)`` is a straight line in log-log, ``log L = log a − α log X``; :func:`fit_power_law`
fits it by ordinary least squares on ``(log X, log L)`` (X is non-embedding parameters N or training FLOPs C).
Two architectures' lines meet where ``log a₁ − α₁ x = log a₂ − α₂ x``, i.e. ``x* = (log a₁ − log a₂) / (α₁ − α₂)``
(:func:`crossing`); equal exponents never meet (*parallel*), and a meeting point outside the range asked about is
reported as *no crossing within* that range.

Uncertainty (:func:`monte_carlo`): every fitted point is a loss measured with run-to-run noise. Its size is taken
from the seed spread (the standard deviation of ``log L`` over seeds, pooled over the architectures and sizes that
have two or more seeds); each draw adds independent Gaussian noise of that size to every point's ``log L``, refits
both lines and recomputes the crossing.
The random generator has a fixed seed, so the same points always give the same intervals. Intervals are the 16th
and 84th percentiles of the draws (a one-sigma band for a Gaussian).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PARALLEL_TOL = 1e-12  # |α₁ − α₂| at or below this counts as equal exponents


@dataclass(frozen=True)
class PowerLaw:
    """``L(X) = a · X^(−alpha)``, fitted in log-log.

    Attributes:
        a: the prefactor.
        alpha: the exponent (positive when the loss falls with X).
        points: number of points fitted.
        rms_residual: root-mean-square residual of ``log L``.
    """

    a: float
    alpha: float
    points: int
    rms_residual: float

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        """The fitted loss at ``x``."""
        return self.a * np.power(x, -self.alpha)


def _check_points(xs: Sequence[float], losses: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"xs and losses must be 1-D of one length, got shapes {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(x > 0) and np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError("xs and losses must be finite and positive (they are fitted in log-log)")
    if len(np.unique(x)) < 2:
        raise ValueError(f"a power law needs points at two or more distinct sizes, got xs={x.tolist()}")
    return np.log(x), np.log(y)


def _fit_logs(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of the least-squares line through ``(lx, ly)``."""
    mx, my = lx.mean(), ly.mean()
    slope = float(((lx - mx) * (ly - my)).sum() / ((lx - mx) ** 2).sum())
    return float(my - slope * mx), slope


def fit_power_law(xs: Sequence[float], losses: Sequence[float]) -> PowerLaw:
    """Least-squares fit of ``log L = log a − α log X``.

    Args:
        xs: sizes X (parameters or FLOPs), positive; several points may share a size (seeds).
        losses: the loss at each X, positive.

    Raises:
        ValueError: mismatched lengths, a value that is not finite and positive, or fewer than two distinct sizes.
    """
    lx, ly = _check_points(xs, losses)
    intercept, slope = _fit_logs(lx, ly)
    residual = ly - (intercept + slope * lx)
    return PowerLaw(math.exp(intercept), -slope, len(lx), float(np.sqrt((residual**2).mean())))


@dataclass(frozen=True)
class Crossing:
    """Where two fitted lines meet.

    Attributes:
        kind: ``"crossing"`` (they meet inside ``bounds``), ``"no crossing"`` (they meet outside it) or
            ``"parallel"`` (equal exponents: they never meet).
        x: the X where they meet (None when parallel), inside or outside ``bounds``.
        bounds: the range asked about, ``(low, high)``.
        ahead_beyond: which line is lower (better) past the meeting point, or everywhere when parallel
            (``"first"``, ``"second"``, or ``"equal"`` for identical lines).
    """

    kind: str
    x: float | None
    bounds: tuple[float, float]
    ahead_beyond: str


def crossing(first: PowerLaw, second: PowerLaw, bounds: tuple[float, float]) -> Crossing:
    """The meeting point of two fitted power laws.

    Args:
        first: one fit.
        second: the other fit (of the same X).
        bounds: ``(low, high)``, the X range in which a meeting point counts as a crossing.

    Raises:
        ValueError: bounds that are not ``0 < low < high``.
    """
    low, high = bounds
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    d_alpha = first.alpha - second.alpha
    d_log_a = math.log(first.a) - math.log(second.a)
    if abs(d_alpha) <= PARALLEL_TOL:
        ahead = "equal" if d_log_a == 0 else ("first" if d_log_a < 0 else "second")
        return Crossing("parallel", None, (low, high), ahead)
    log_x = d_log_a / d_alpha
    # beyond the meeting point the line with the larger exponent is lower
    ahead = "first" if d_alpha > 0 else "second"
    x = math.exp(log_x) if log_x < 700 else math.inf
    kind = "crossing" if low <= x <= high else "no crossing"
    return Crossing(kind, x, (low, high), ahead)


def noise_from_seeds(groups: Mapping[object, Sequence[float]]) -> float | None:
    """Pooled standard deviation of ``log L`` over seeds: the per-point noise of the fits.

    Args:
        groups: the losses of the seeds of each group (an architecture at one size).

    Returns:
        ``sqrt(Σ (n−1)·s² / Σ (n−1))`` over the groups with two or more seeds, or None when none has two.
    """
    num = den = 0.0
    for losses in groups.values():
        if len(losses) >= 2:
            logs = [math.log(v) for v in losses]
            num += (len(logs) - 1) * statistics.variance(logs)
            den += len(logs) - 1
    return math.sqrt(num / den) if den else None


def _percentiles(values: np.ndarray) -> dict:
    lo, mid, hi = np.percentile(values, [16, 50, 84])
    return {"p16": float(lo), "median": float(mid), "p84": float(hi)}


def monte_carlo(
    points: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    sigma: float,
    bounds: tuple[float, float],
    *,
    draws: int = 2000,
    seed: int = 0,
) -> dict:
    """Exponents and crossing under Gaussian noise of ``sigma`` on every point's ``log L``.

    Args:
        points: two architectures, each ``(xs, losses)``; their order is the crossing's first and second.
        sigma: the noise of ``log L`` per point (see :func:`noise_from_seeds`), >= 0.
        bounds: the crossing range, as for :func:`crossing`.
        draws: Monte Carlo draws.
        seed: the generator's seed (the result is a pure function of the arguments).

    Returns:
        ``{"alpha": {arch: {"p16", "median", "p84", "std"}}, "crossing": {"fraction_crossing",
        "fraction_parallel", "log10_x": {"p16", "median", "p84"} | None}}``; ``log10_x`` summarises the meeting
        points of the draws that cross inside ``bounds``.

    Raises:
        ValueError: not exactly two architectures, a negative sigma or fewer than one draw.
    """
    if len(points) != 2:
        raise ValueError(f"monte_carlo needs exactly two architectures, got {list(points)}")
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    rng = np.random.default_rng(seed)
    logs = {arch: _check_points(xs, ys) for arch, (xs, ys) in points.items()}
    alphas = {arch: np.empty(draws) for arch in logs}
    log10_x = []
    parallel = 0
    for i in range(draws):
        fits = []
        for arch, (lx, ly) in logs.items():
            intercept, slope = _fit_logs(lx, ly + rng.normal(0.0, sigma, size=ly.shape))
            alphas[arch][i] = -slope
            fits.append(PowerLaw(math.exp(intercept), -slope, len(lx), 0.0))
        c = crossing(fits[0], fits[1], bounds)
        parallel += c.kind == "parallel"
        if c.kind == "crossing":
            log10_x.append(math.log10(c.x))
    return {
        "draws": draws,
        "seed": seed,
        "sigma_log_loss": sigma,
        "alpha": {arch: _percentiles(a) | {"std": float(a.std())} for arch, a in alphas.items()},
        "crossing": {
            "fraction_crossing": len(log10_x) / draws,
            "fraction_parallel": parallel / draws,
            "log10_x": _percentiles(np.asarray(log10_x)) if log10_x else None,
        },
    }
