"""Hyena operator (Poli et al. 2023, "Hyena Hierarchy", §3, Algorithm 1–3).

An input projection to (N + 1)·D channels passes a short causal depthwise convolution and splits into
x_0 .. x_{N−1} and v (N = order, 2 in the paper's comparison). Then, for each remaining gate x_i (last first),
v ← h_i * (x_i ⊙ v) + b_i ⊙ (x_i ⊙ v) with a long causal convolution h_i, and y = W_o (x_0 ⊙ v).
The long filters are *implicit*: a small network (sine activations) maps positional features of n
(n / (L − 1) and complex exponentials e^{−i f 2πn/L}) to a filter value per channel, multiplied by an
exponential decay window exp(−(n / (L − 1)) |δ_c|) with per-channel rates. L = ``max_position_embeddings`` is a
fixed length scale, so a filter value depends only on n and the filter extends to any length. Training uses
the FFT convolution.

Decoding: a long convolution has no constant-size recurrence, so the state caches every earlier input of
each long convolution and a step evaluates the filter over positions 0..t and takes one dot product per
channel (O(t) per token). This computes the same function as the FFT path exactly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..ops.retention.decay import compute_dtype
from .base import RecurrentMixer
from .conv import ShortConv, fft_conv


class HyenaState(NamedTuple):
    """short: ``(B, (N + 1)·D, W − 1)`` short-conv cache; long: N − 1 tensors ``(B, D, t)`` of earlier long-conv
    inputs (oldest first)."""

    short: torch.Tensor
    long: tuple[torch.Tensor, ...]


class Sin(nn.Module):
    """sin(ω ⊙ x) with a learned frequency per feature (Hyena's filter activation)."""

    def __init__(self, dim: int, w: float = 1.0):
        super().__init__()
        self.freq = nn.Parameter(torch.full((dim,), w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise."""
        return torch.sin(self.freq.to(x.dtype) * x)


class HyenaFilter(nn.Module):
    """Implicit long filters: ``positions (T,) -> (N − 1, D, T)``.

    Args:
        hidden_size: D.
        num_filters: N − 1, one filter per long convolution.
        emb_dim: positional features (odd: n / (L − 1) and (emb_dim − 1)/2 complex exponentials).
        filter_size: width of the filter network.
        max_positions: L, the length scale of the positional features and of the decay window.
        fast_decay_pct: the fastest channel's decay window decays to ``target`` at this fraction of L.
        slow_decay_pct: the slowest channel's decay window decays to ``target`` at this fraction of L.
        target: the value the decay windows reach at their ends.
    """

    def __init__(
        self,
        hidden_size: int,
        num_filters: int,
        emb_dim: int = 3,
        filter_size: int = 64,
        max_positions: int = 2048,
        fast_decay_pct: float = 0.3,
        slow_decay_pct: float = 1.5,
        target: float = 1e-2,
    ):
        super().__init__()
        self.num_filters, self.hidden_size = num_filters, hidden_size
        self.emb_dim, self.max_positions = emb_dim, max_positions
        self.mlp = nn.Sequential(
            nn.Linear(emb_dim, filter_size),
            Sin(filter_size),
            nn.Linear(filter_size, filter_size),
            Sin(filter_size),
            nn.Linear(filter_size, num_filters * hidden_size, bias=False),
        )
        max_decay, min_decay = math.log(target) / fast_decay_pct, math.log(target) / slow_decay_pct
        self.decay_range = (min_decay, max_decay)
        self._deltas: dict[tuple, torch.Tensor] = {}
        self.bias = nn.Parameter(torch.randn(num_filters, hidden_size))

    def deltas(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(D,)`` per-channel decay rates |δ_c| of the window, cached per device and dtype.

        A fixed function of D, computed in float32 on the host as before; not a buffer, so that a model built on
        the meta device (the verified checkpoint loader) needs nothing but its state dict.
        """
        key = (device, dtype)
        cached = self._deltas.get(key)
        if cached is None:
            rates = torch.linspace(*self.decay_range, self.hidden_size, dtype=torch.float32, device="cpu").abs()
            cached = rates.to(device=device, dtype=dtype)
            # Filled by eager calls only: activation checkpointing cannot replay a traced write to module state.
            if not torch.compiler.is_compiling():
                self._deltas[key] = cached
        return cached

    def reset_parameters(self) -> None:
        """PyTorch's default ``nn.Linear`` initialisation for the filter network (as in the Hyena code)."""
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def forward(self, positions: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
        """Filter values at integer ``positions (T,)`` in dtype ``dt``: ``(N − 1, D, T)``."""
        L = self.max_positions
        n = positions.to(dt)[:, None]  # (T, 1)
        t = n / (L - 1)
        bands = (self.emb_dim - 1) // 2
        f = torch.linspace(1e-4, bands - 1, bands, dtype=dt, device=positions.device)  # (bands,)
        angle = f * (2 * math.pi * n / L)  # (T, bands)
        z = torch.cat([t, torch.cos(angle), -torch.sin(angle)], dim=-1)  # (T, emb_dim): t, Re/Im e^{−i f w}
        with torch.autocast(positions.device.type, enabled=False):
            h = z
            for module in self.mlp:
                h = _apply(module, h)
        h = h * torch.exp(-t * self.deltas(positions.device, dt))  # (T, (N − 1)·D) times the decay window
        return h.T.reshape(self.num_filters, self.hidden_size, -1)  # (N − 1, D, T)


def _apply(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Run a filter-network layer in h's dtype (the filter is computed in float32 or float64)."""
    if isinstance(module, nn.Linear):
        bias = None if module.bias is None else module.bias.to(h.dtype)
        return nn.functional.linear(h, module.weight.to(h.dtype), bias)
    return module(h)


class Hyena(RecurrentMixer):
    """The Hyena operator.

    Args:
        hidden_size: D.
        order: N (≥ 2).
        filter_size: width of the implicit filter network.
        emb_dim: positional features of the filter network.
        short_filter: length of the short depthwise convolution.
        max_positions: length scale of the implicit filters.
    """

    def __init__(
        self,
        hidden_size: int,
        order: int = 2,
        filter_size: int = 64,
        emb_dim: int = 3,
        short_filter: int = 3,
        max_positions: int = 2048,
    ):
        super().__init__()
        self.order, self.hidden_size = order, hidden_size
        self.in_proj = nn.Linear(hidden_size, (order + 1) * hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.short_conv = ShortConv((order + 1) * hidden_size, short_filter, bias=True)
        self.filter_fn = HyenaFilter(hidden_size, order - 1, emb_dim, filter_size, max_positions)

    def reset_parameters(self) -> None:
        """Re-initialise the filter network after the skeleton's generic initialisation."""
        self.filter_fn.reset_parameters()

    def parallel(self, x: torch.Tensor, *, output_state: bool = False) -> tuple[torch.Tensor, HyenaState | None]:
        """FFT long convolutions over the segment."""
        B, T, D = x.shape
        dt = compute_dtype(x.dtype)
        u = self.in_proj(x).transpose(1, 2)  # (B, (N + 1)·D, T)
        uc = self.short_conv(u).to(dt)
        *gates, v = uc.split(D, dim=1)  # N gates and v, each (B, D, T)
        h = self.filter_fn(torch.arange(T, device=x.device), dt)  # (N − 1, D, T)
        inputs = []
        for i, gate in enumerate(reversed(gates[1:])):
            v = v * gate
            inputs.append(v)
            v = fft_conv(v, h[i]) + self.filter_fn.bias[i].to(dt)[:, None] * v  # (B, D, T)
        y = self.out_proj((v * gates[0]).transpose(1, 2).to(x.dtype))  # (B, T, D)
        state = HyenaState(self.short_conv.last_inputs(u), tuple(inputs)) if output_state else None
        return y, state

    def step(self, x_t: torch.Tensor, state: HyenaState) -> tuple[torch.Tensor, HyenaState]:
        """One token: the long convolutions recomputed over the cached inputs."""
        D = self.hidden_size
        dt = compute_dtype(x_t.dtype)
        uc, short = self.short_conv.step(self.in_proj(x_t), state.short.to(x_t.dtype))  # (B, (N + 1)·D)
        *gates, v = uc.to(dt).split(D, dim=1)  # each (B, D)
        t = state.long[0].shape[-1] if state.long else 0
        h = self.filter_fn(torch.arange(t, -1, -1, device=x_t.device), dt)  # (N − 1, D, t + 1): h_t .. h_0
        caches = []
        for i, gate in enumerate(reversed(gates[1:])):
            v = v * gate
            cache = torch.cat([state.long[i].to(dt), v[..., None]], dim=-1)  # (B, D, t + 1)
            caches.append(cache)
            v = (cache * h[i]).sum(-1) + self.filter_fn.bias[i].to(dt) * v  # (B, D)
        y = self.out_proj((v * gates[0]).to(x_t.dtype))
        return y, HyenaState(short, tuple(caches))

    def empty_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> HyenaState:
        """Zero short-conv cache, empty long caches."""
        N, D = self.order, self.hidden_size
        short = self.short_conv.empty_cache(batch_size, (N + 1) * D, device, dtype)
        empty = torch.zeros(batch_size, D, 0, device=device, dtype=compute_dtype(dtype))
        return HyenaState(short, tuple(empty for _ in range(N - 1)))
