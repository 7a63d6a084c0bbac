"""RWKV-4 time mixing (Peng et al. 2023, "RWKV: Reinventing RNNs for the Transformer Era", §3, Eq. 11–17).

In the paper's comparison RWKV's time-mix replaces attention while the FFN stays the shared one. With token
shift x' = μ ⊙ x_t + (1 − μ) ⊙ x_{t−1}, r, k, v are projections of their own shifted inputs and

    wkv_t = (Σ_{i<t} e^{−(t−1−i)w + k_i} v_i + e^{u + k_t} v_t) / (Σ_{i<t} e^{−(t−1−i)w + k_i} + e^{u + k_t}),
    y_t = W_o (σ(r_t) ⊙ wkv_t),

per channel, with decay w = exp(time_decay) > 0 and bonus u = time_first. Numerics: every exponential is taken
relative to a running maximum (the state keeps a, b scaled by e^{−p}), as in the official RWKV-4 kernels, so
large keys never overflow. Training splits T into chunks of C: chunk-start states come from a short loop over
chunks and all within-chunk sums are computed at once in log space (memory ~C× the activations). On CUDA the
training path runs the same recurrence as one sequential loop per channel on Triton instead (:mod:`.wkv_triton`;
``backend`` picks). The wkv computation runs in float32 (float64 for float64 inputs, always on the PyTorch path).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import NamedTuple

import torch
from torch import nn

from .base import RecurrentMixer
from .conv import compute_dtype

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "triton")
NEG = -1e30  # log of an empty sum: finite, so that differences stay finite; exp(NEG − m) underflows to 0
EXP_FLOOR = -80.0  # exponents below this give exactly 0 rather than subnormal floats (slow on CPUs)


def _exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) for x ≤ 0, with exp(x) := 0 below ``EXP_FLOOR``.

    e^−80 ≈ 2e−35 is below float32's normal range relative to the 1 that every normalised sum holds, so the
    result is unchanged at float32 precision (and at 1e−30 relative in float64), while the subnormal values that
    make CPU arithmetic hundreds of times slower never appear.
    """
    return torch.exp(torch.where(x < EXP_FLOOR, float("-inf"), x))


class RWKVState(NamedTuple):
    """x ``(B, D)``: the previous input (token shift); a, b ``(B, D)``: numerator / denominator sums scaled by
    e^{−p}; p ``(B, D)``: their log scale."""

    x: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    p: torch.Tensor


def wkv_step(k, v, w, u, a, b, p):
    """One stable RWKV-4 step on ``(B, D)`` tensors; returns ``(wkv, a, b, p)``."""
    ww = u + k
    q = torch.maximum(p, ww)
    e1, e2 = _exp(p - q), _exp(ww - q)
    wkv = (e1 * a + e2 * v) / (e1 * b + e2)
    ww = p - w
    q = torch.maximum(ww, k)
    e1, e2 = _exp(ww - q), _exp(k - q)
    return wkv, e1 * a + e2 * v, e1 * b + e2, q


def wkv_chunked(k, v, w, u, chunk_size: int = 16):
    """WKV over a whole segment from an empty state, chunk by chunk.

    Args:
        k: ``(B, T, D)`` in the compute dtype.
        v: ``(B, T, D)`` in the compute dtype.
        w: ``(D,)`` positive decay rates.
        u: ``(D,)`` bonus.
        chunk_size: C.

    Returns:
        ``(wkv (B, T, D), (a, b, p))`` with the final state, each ``(B, D)``.
    """
    B, T, D = k.shape
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:  # pad at the front with empty tokens (k = NEG, v = 0): they carry no weight
        k = torch.cat([k.new_full((B, pad, D), NEG), k], dim=1)
        v = torch.cat([v.new_zeros(B, pad, D), v], dim=1)
    N = k.shape[1] // C
    kc, vc = k.view(B, N, C, D), v.view(B, N, C, D)
    j = torch.arange(C, device=k.device, dtype=k.dtype)  # local positions
    # chunk-start states: the sums over all earlier tokens, decayed to the last token of the previous chunk
    to_end = kc - (C - 1 - j)[:, None] * w  # (B, N, C, D): log weight of token i at the chunk's last token
    a = k.new_zeros(B, D)
    b = k.new_zeros(B, D)
    p = k.new_full((B, D), NEG)
    starts = []
    for n in range(N):
        starts.append((a, b, p))
        q = torch.maximum(p - C * w, to_end[:, n].amax(1))  # (B, D)
        e_state = _exp(p - C * w - q)
        e_tok = _exp(to_end[:, n] - q[:, None])  # (B, C, D)
        a = e_state * a + (e_tok * vc[:, n]).sum(1)
        b = e_state * b + e_tok.sum(1)
        p = q
    a0, b0, p0 = (torch.stack(s, dim=1) for s in zip(*starts))  # each (B, N, D)
    # within-chunk log weights L[t, i] = k_i − (t − 1 − i) w (i < t), u + k_t (i = t)
    dist = (j[:, None] - 1 - j[None, :]).clamp(min=0)  # (C, C)
    L = kc[:, :, None, :, :] - dist[:, :, None] * w  # (B, N, C_t, C_i, D)
    diag = torch.eye(C, dtype=torch.bool, device=k.device)[:, :, None]  # (C, C, 1)
    L = torch.where(diag, (u + kc)[:, :, :, None, :], L)
    L = L.masked_fill(torch.triu(torch.ones(C, C, dtype=torch.bool, device=k.device), 1)[:, :, None], NEG)
    state_log = p0[:, :, None, :] - j[:, None] * w  # (B, N, C_t, D): the state decayed to token t
    m = torch.maximum(L.amax(3), state_log)  # (B, N, C, D)
    e = _exp(L - m[:, :, :, None, :])  # (B, N, C_t, C_i, D)
    e_state = _exp(state_log - m)  # (B, N, C, D)
    num = (e * vc[:, :, None]).sum(3) + e_state * a0[:, :, None]  # (B, N, C, D)
    den = e.sum(3) + e_state * b0[:, :, None]
    wkv = (num / den).view(B, N * C, D)[:, pad:]  # (B, T, D)
    return wkv, (a, b, p)


@functools.cache
def _triton_installed() -> bool:
    """Whether Triton can be imported (found without importing it); logged once when a GPU is left without it."""
    found = importlib.util.find_spec("triton") is not None
    if not found and torch.cuda.is_available():
        logger.warning("RWKV: Triton is not installed; backend='auto' runs the PyTorch WKV (wkv_chunked) on CUDA")
    return found


class RWKVTimeMix(RecurrentMixer):
    """RWKV-4 time mixing (attention replacement).

    Args:
        hidden_size: D.
        layer_idx: index of the layer (the official initialisation depends on depth).
        num_layers: L.
        chunk_size: chunk size of the PyTorch training path (:func:`wkv_chunked`).
        backend: WKV of the training path: ``"torch"`` (:func:`wkv_chunked`), ``"triton"``
            (:func:`~.wkv_triton.wkv_triton`; CUDA, or CPU under ``TRITON_INTERPRET=1``) or ``"auto"`` (Triton on
            CUDA when it is installed, else PyTorch). float64 inputs always take the PyTorch path.

    Raises:
        ValueError: an unknown ``backend``.
    """

    def __init__(self, hidden_size: int, layer_idx: int, num_layers: int, chunk_size: int = 16, backend: str = "auto"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        D = hidden_size
        self.chunk_size = chunk_size
        self.backend = backend
        self._triton_installed = backend == "auto" and _triton_installed()
        self.time_decay = nn.Parameter(torch.empty(D))
        self.time_first = nn.Parameter(torch.empty(D))
        self.time_mix_k = nn.Parameter(torch.empty(D))
        self.time_mix_v = nn.Parameter(torch.empty(D))
        self.time_mix_r = nn.Parameter(torch.empty(D))
        self.key = nn.Linear(D, D, bias=False)
        self.value = nn.Linear(D, D, bias=False)
        self.receptance = nn.Linear(D, D, bias=False)
        self.output = nn.Linear(D, D, bias=False)
        self.layer_idx, self.num_layers = layer_idx, num_layers
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official RWKV-4 initialisation of decay, bonus and token-shift mixes (depth dependent)."""
        D, L = self.time_decay.numel(), self.num_layers
        ratio_0_to_1 = self.layer_idx / max(L - 1, 1)
        ratio_1_to_0 = 1.0 - self.layer_idx / L
        h = torch.arange(D, dtype=torch.float64)
        self.time_decay.copy_(-5 + 8 * (h / max(D - 1, 1)) ** (0.7 + 1.3 * ratio_0_to_1))
        zigzag = ((h + 1) % 3 - 1) * 0.5
        self.time_first.copy_(torch.full((D,), 0.3).log() + zigzag)
        x = h / D
        self.time_mix_k.copy_(x**ratio_1_to_0)
        self.time_mix_v.copy_(x**ratio_1_to_0 + 0.3 * ratio_0_to_1)
        self.time_mix_r.copy_(x ** (0.5 * ratio_1_to_0))

    def _rkv(self, x: torch.Tensor, x_prev: torch.Tensor):
        """Token shift and projections; x, x_prev ``(..., D)``."""
        mk, mv, mr = (m.to(x.dtype) for m in (self.time_mix_k, self.time_mix_v, self.time_mix_r))
        k = self.key(x * mk + x_prev * (1 - mk))
        v = self.value(x * mv + x_prev * (1 - mv))
        r = self.receptance(x * mr + x_prev * (1 - mr))
        return r, k, v

    def _decay(self, dt: torch.dtype):
        return torch.exp(self.time_decay.to(dt)), self.time_first.to(dt)

    def parallel(self, x: torch.Tensor, *, output_state: bool = False) -> tuple[torch.Tensor, RWKVState | None]:
        """Chunked, stable WKV over the segment."""
        x_prev = nn.functional.pad(x, (0, 0, 1, -1))  # (B, T, D): x_{t−1}, zeros before the first token
        r, k, v = self._rkv(x, x_prev)
        dt = compute_dtype(x.dtype)
        w, u = self._decay(dt)
        wkv, (a, b, p) = self._wkv(k.to(dt), v.to(dt), w, u)  # (B, T, D)
        y = self.output((torch.sigmoid(r.to(dt)) * wkv).to(x.dtype))
        return y, (RWKVState(x[:, -1], a, b, p) if output_state else None)

    def _uses_triton(self, k: torch.Tensor) -> bool:
        if k.dtype == torch.float64 or self.backend == "torch":
            return False
        return self.backend == "triton" or (k.is_cuda and self._triton_installed)

    def _wkv(self, k, v, w, u):
        """WKV from an empty state on the chosen backend: k, v ``(B, T, D)`` -> ``(wkv (B, T, D), (a, b, p))``."""
        if self._uses_triton(k):
            from .wkv_triton import wkv_triton

            wkv, state = wkv_triton(k, v, w, u)
            return wkv, tuple(state)
        return wkv_chunked(k, v, w, u, self.chunk_size)

    def step(self, x_t: torch.Tensor, state: RWKVState) -> tuple[torch.Tensor, RWKVState]:
        """One token of the recurrence."""
        r, k, v = self._rkv(x_t, state.x.to(x_t.dtype))  # each (B, D)
        dt = state.a.dtype
        w, u = self._decay(dt)
        wkv, a, b, p = wkv_step(k.to(dt), v.to(dt), w, u, state.a, state.b, state.p)
        y = self.output((torch.sigmoid(r.to(dt)) * wkv).to(x_t.dtype))
        return y, RWKVState(x_t, a, b, p)

    def empty_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> RWKVState:
        """Zero previous input, empty sums."""
        D, dt = self.time_decay.numel(), compute_dtype(dtype)
        zeros = torch.zeros(batch_size, D, device=device, dtype=dt)
        return RWKVState(zeros.to(dtype), zeros, zeros, torch.full_like(zeros, NEG))
