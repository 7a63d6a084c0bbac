"""Per-head decay: the γ schedules, decay masks and the decay-row normaliser (paper §2.1, §2.2; docs/spec.md §1, §3).

This module is the only place where γ, its powers and the normaliser c_n are defined. Everything works
on ``log γ`` (never γ itself) so that γ close to 1 keeps its precision, and every power used is a decay
≤ 1 (``exp`` of a non-positive number): γ^(−n) is never formed.
"""

from __future__ import annotations

import math

import torch

DECAY_SCHEDULES = ("torchscale", "paper", "single", "none")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which decays, states and accumulators are kept for inputs of ``dtype``.

    Args:
        dtype: dtype of the op's inputs.

    Returns:
        ``torch.float64`` for float64 inputs, else ``torch.float32``.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def log_decay_schedule(
    num_heads: int,
    schedule: str = "torchscale",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-head ``log γ`` for one of the two schedules of docs/spec.md §1.

    ``torchscale``: γ_h = 1 − 2^(−5−h). ``paper``: γ = 1 − exp(linspace(ln(1/32), ln(1/512), H)).
    Two ablations of the paper's Table 6: ``single`` (γ = 127/128 for every head) and ``none`` (γ = 1).
    The values are computed in float64 and rounded once to ``dtype`` (float32 or float64), so a float64 run
    gets the exact float64 value rather than a widened float32 one.

    Args:
        num_heads: H, number of heads (≥ 1).
        schedule: one of ``DECAY_SCHEDULES``.
        dtype: float32 or float64 (never a 16-bit type: 1 − 1/512 rounds to 1 in bf16).
        device: where to put the result.

    Returns:
        ``(H,)`` tensor of log γ (≤ 0).

    Raises:
        ValueError: on an unknown schedule, ``num_heads < 1`` or a 16-bit dtype.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"log-decay must be float32 or float64, got {dtype}")
    heads = torch.arange(num_heads, dtype=torch.float64, device=device)
    if schedule == "torchscale":
        one_minus_gamma = torch.pow(2.0, -5.0 - heads)
    elif schedule == "paper":
        if num_heads == 1:
            one_minus_gamma = torch.full_like(heads, 1.0 / 32.0)
        else:
            lo, hi = math.log(1 / 32), math.log(1 / 512)
            one_minus_gamma = torch.exp(torch.linspace(lo, hi, num_heads, dtype=torch.float64, device=device))
    elif schedule == "single":
        one_minus_gamma = torch.full_like(heads, 1.0 / 128.0)
    elif schedule == "none":
        one_minus_gamma = torch.zeros_like(heads)
    else:
        raise ValueError(f"unknown decay schedule {schedule!r}; expected one of {DECAY_SCHEDULES}")
    return torch.log1p(-one_minus_gamma).to(dtype=dtype, device=device)


def decay_powers(log_decay: torch.Tensor, exponents: torch.Tensor | int) -> torch.Tensor:
    """γ_h^e for non-negative exponents, computed as exp(e · log γ_h).

    Args:
        log_decay: ``(H,)`` log γ.
        exponents: any shape ``(...)`` of non-negative exponents (int or float), or one Python int (no copy to
            the device, so no wait for it).

    Returns:
        ``(H, ...)`` decays in ``log_decay``'s dtype (``(H,)`` for a Python int).
    """
    if isinstance(exponents, int):
        return torch.exp(log_decay * exponents)
    e = exponents.to(log_decay.dtype)
    return torch.exp(log_decay.view(-1, *([1] * e.dim())) * e)


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(T, T)`` bool, True where m ≤ n: the pairs a causal form may combine.

    Apply it with ``torch.where``, never by multiplying with 0: 0 · inf is NaN, so a multiplied mask lets a
    non-finite future value reach earlier rows.
    """
    idx = torch.arange(length, device=device)
    return idx[:, None] >= idx[None, :]


def decay_mask(log_decay: torch.Tensor, length: int) -> torch.Tensor:
    """The causal decay matrix D[n, m] = γ^(n−m) for m ≤ n, else 0 (paper Eq. 5).

    Causality comes from an index mask, never from γ^∞. Scores must still be masked with
    :func:`causal_mask` (``torch.where``) rather than by multiplying with D's zeros (see there).

    Args:
        log_decay: ``(H,)`` log γ.
        length: T, the number of rows and columns.

    Returns:
        ``(H, T, T)`` in ``log_decay``'s dtype.
    """
    idx = torch.arange(length, device=log_decay.device)
    rel = idx[:, None] - idx[None, :]  # (T, T)
    causal = rel >= 0
    d = decay_powers(log_decay, rel.clamp(min=0))  # (H, T, T)
    return torch.where(causal, d, torch.zeros((), dtype=d.dtype, device=d.device))


def decay_row_norm(log_decay: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """c_n = Σ_{i=0..n} γ^i = (1 − γ^(n+1)) / (1 − γ), the decay-row normaliser of docs/spec.md §3 (factor 2).

    Computed as expm1((n+1)·log γ) / expm1(log γ) so that γ near 1 keeps its precision; for γ = 1 exactly
    (the no-decay ablation) it is n + 1. Negative positions (left padding) are clamped to 0.

    Args:
        log_decay: ``(H,)`` log γ.
        positions: ``(B, T)`` absolute positions n (integer).

    Returns:
        ``(B, H, T)`` values c_n ≥ 1 in ``log_decay``'s dtype.
    """
    n1 = positions.clamp(min=0).to(log_decay.dtype)[:, None, :] + 1  # (B, 1, T)
    lg = log_decay.view(1, -1, 1)  # (1, H, 1)
    no_decay = lg == 0
    safe_lg = torch.where(no_decay, torch.full_like(lg, -1.0), lg)
    ratio = torch.expm1(n1 * safe_lg) / torch.expm1(safe_lg)  # (B, H, T)
    return torch.where(no_decay, n1.expand_as(ratio), ratio)
