"""Convolution helpers shared by the SSM and long-convolution mixers (H3, Fu et al. 2023; Hyena, Poli et al. 2023).

* :func:`fft_conv`: causal long convolution through the FFT, O(T log T) (H3 §3.3, Hyena §3.3).
* :class:`ShortConv`: a causal depthwise convolution with a short kernel, in parallel form (``conv1d``) and
  as a one-token step over a cache of the last inputs (recurrent decoding).

FFTs run in float32 (float64 for float64 inputs): cuFFT has no bf16 transform and half precision loses the
long tails of the kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.retention.decay import compute_dtype


def fft_conv(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Causal convolution y_t = Σ_{j≤t} kernel_j u_{t−j} along the last dim.

    Args:
        u: ``(..., T)`` input.
        kernel: ``(..., T)`` kernel, broadcastable against ``u``.

    Returns:
        ``(..., T)`` in float32 (float64 for float64 inputs).
    """
    T = u.shape[-1]
    dt = compute_dtype(u.dtype)
    n = 2 * T  # zero-pad to 2T so the circular convolution is the linear (causal) one
    u_f = torch.fft.rfft(u.to(dt), n=n)
    k_f = torch.fft.rfft(kernel.to(dt), n=n)
    return torch.fft.irfft(u_f * k_f, n=n)[..., :T]


class ShortConv(nn.Module):
    """Causal depthwise convolution with a kernel of ``width`` taps (and an optional bias).

    Args:
        channels: C, number of channels.
        width: kernel length W (≥ 1); the output at t sees inputs t−W+1 .. t.
        bias: add a per-channel bias.
    """

    def __init__(self, channels: int, width: int, bias: bool = True):
        super().__init__()
        self.width = width
        self.weight = nn.Parameter(torch.empty(channels, 1, width))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Parallel form: ``(B, C, T) -> (B, C, T)``."""
        w = self.weight.to(u.dtype)
        b = None if self.bias is None else self.bias.to(u.dtype)
        u = nn.functional.pad(u, (self.width - 1, 0))  # (B, C, T + W − 1)
        return nn.functional.conv1d(u, w, b, groups=w.shape[0])

    def empty_cache(self, batch_size: int, channels: int, device, dtype) -> torch.Tensor:
        """The last W − 1 inputs before the first token: zeros, ``(B, C, W − 1)``."""
        return torch.zeros(batch_size, channels, self.width - 1, device=device, dtype=dtype)

    def step(self, u_t: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: ``u_t (B, C)`` and the cache ``(B, C, W − 1)`` → ``(y_t (B, C), new cache)``."""
        window = torch.cat([cache, u_t[..., None]], dim=-1)  # (B, C, W)
        y = (window * self.weight[:, 0].to(window.dtype)).sum(-1)  # (B, C)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y, window[..., 1:]

    def last_inputs(self, u: torch.Tensor) -> torch.Tensor:
        """The cache after a parallel call on ``u (B, C, T)``: its last W − 1 inputs (zero-padded)."""
        u = nn.functional.pad(u, (self.width - 1, 0))
        return u[..., u.shape[-1] - (self.width - 1) :]
