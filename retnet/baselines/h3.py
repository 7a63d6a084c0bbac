"""H3, "Hungry Hungry Hippos" (Fu et al. 2023, §3.1–3.2, Algorithm 1).

q, k, v are projections of the input. k passes through a *shift SSM* (a learned causal convolution over the
last N tokens, the SSM whose transition is the shift matrix), then multiplies v; the product passes through a
*diagonal SSM* (S4D-style, N/2 complex modes per head, zero-order-hold discretisation) and is read out by q:

    y = W_o · (q ⊙ SSM_diag(SSM_shift(k) ⊙ v)).

With head dim d_h (8 in the paper's comparison) the product is the per-head outer product k_hᵀ v_h, so each
head carries a d_h × d_h state per mode and q_h contracts its rows (H3 §3.2, "multi-head"). Training uses the
FFT convolution with the SSM kernel K_l = 2 Re(Σ_n C̃_n Ā_n^l); decoding runs the SSM recurrence
h_t = Ā h_{t−1} + x_t, y_t = 2 Re(C̃ h_t) + D x_t, which equals the convolution exactly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..ops.retention.decay import compute_dtype
from .base import RecurrentMixer
from .conv import ShortConv, fft_conv


class H3State(NamedTuple):
    """shift: ``(B, D, N − 1)`` last inputs of the shift SSM; diag: ``(B, H, d, d, N/2)`` complex modes."""

    shift: torch.Tensor
    diag: torch.Tensor


class DiagonalSSM(nn.Module):
    """S4D-Lin diagonal SSM, one kernel per head (Gu et al. 2022), with a skip term D.

    Args:
        num_heads: H, independent kernels.
        state_size: N; N/2 complex conjugate-pair modes.
        dt_min: lower end of the log-uniform step size Δ at initialisation.
        dt_max: upper end of that range.
    """

    def __init__(self, num_heads: int, state_size: int, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        M = state_size // 2
        self.log_dt = nn.Parameter(torch.rand(num_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_a_real = nn.Parameter(torch.full((num_heads, M), math.log(0.5)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(M, dtype=torch.float32).expand(num_heads, M).clone())
        self.c = nn.Parameter(torch.randn(num_heads, M, 2) * 0.5**0.5)  # complex C as (real, imag)
        self.skip = nn.Parameter(torch.randn(num_heads))

    def discrete(self, dt: torch.dtype):
        """log Ā = ΔA ``(H, N/2)`` and C̃ = C (Ā − 1) / A ``(H, N/2)`` (zero-order hold, B = 1), complex."""
        A = torch.complex(-torch.exp(self.log_a_real.to(dt)), self.a_imag.to(dt))  # (H, M)
        dtA = torch.exp(self.log_dt.to(dt))[:, None] * A  # (H, M)
        C = torch.view_as_complex(self.c.to(dt).contiguous())  # (H, M)
        return dtA, C * torch.expm1(dtA) / A

    def kernel(self, T: int, dt: torch.dtype) -> torch.Tensor:
        """K_l = 2 Re(Σ_n C̃_n Ā_n^l), l = 0..T−1: ``(H, T)``."""
        dtA, Ct = self.discrete(dt)
        l = torch.arange(T, device=dtA.device, dtype=dt)
        vandermonde = torch.exp(dtA[:, :, None] * l)  # (H, M, T): Ā^l without repeated products
        return 2 * torch.einsum("hm,hmt->ht", Ct, vandermonde).real


class H3(RecurrentMixer):
    """The H3 layer.

    Args:
        hidden_size: D.
        head_dim: d_h (D / d_h heads).
        state_size: N of both SSMs.
    """

    def __init__(self, hidden_size: int, head_dim: int = 8, state_size: int = 64):
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = hidden_size // head_dim
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.shift_ssm = ShortConv(hidden_size, state_size, bias=False)
        self.shift_skip = nn.Parameter(torch.randn(hidden_size))
        self.diag_ssm = DiagonalSSM(self.num_heads, state_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D) -> (..., H, d)``."""
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def parallel(self, x: torch.Tensor, *, output_state: bool = False) -> tuple[torch.Tensor, H3State | None]:
        """FFT-convolution path over the segment."""
        B, T, D = x.shape
        dt = compute_dtype(x.dtype)
        q, k, v = self.q_proj(x).to(dt), self.k_proj(x).to(dt), self.v_proj(x).to(dt)  # each (B, T, D)
        k_cT = k.transpose(1, 2)  # (B, D, T)
        k_s = self.shift_ssm(k_cT) + self.shift_skip.to(dt)[:, None] * k_cT  # (B, D, T)
        kh = self._heads(k_s.transpose(1, 2))  # (B, T, H, d)
        vh = self._heads(v)  # (B, T, H, d)
        kv = (kh[..., :, None] * vh[..., None, :]).permute(0, 2, 3, 4, 1)  # (B, H, d, d, T): k_hᵀ v_h
        kernel = self.diag_ssm.kernel(T, dt)[:, None, None, :]  # (H, 1, 1, T)
        skip = self.diag_ssm.skip.to(dt)[:, None, None, None]
        kv_s = fft_conv(kv, kernel) + skip * kv  # (B, H, d, d, T)
        y = torch.einsum("bthi,bhijt->bthj", self._heads(q), kv_s)  # (B, T, H, d)
        y = self.out_proj(y.reshape(B, T, D).to(x.dtype))
        state = None
        if output_state:
            dtA, _ = self.diag_ssm.discrete(dt)  # (H, M)
            # h_T = Σ_t Ā^{T−1−t} kv_t, per mode (the sum the convolution takes)
            powers = torch.exp(dtA[..., None] * torch.arange(T - 1, -1, -1, device=x.device, dtype=dt))  # (H, M, T)
            diag = torch.einsum("bhijt,hmt->bhijm", kv.to(powers.dtype), powers)  # (B, H, d, d, M)
            state = H3State(self.shift_ssm.last_inputs(k_cT), diag)
        return y, state

    def step(self, x_t: torch.Tensor, state: H3State) -> tuple[torch.Tensor, H3State]:
        """One token of both SSM recurrences."""
        B, D = x_t.shape
        dt = state.shift.dtype
        q, k, v = self.q_proj(x_t).to(dt), self.k_proj(x_t).to(dt), self.v_proj(x_t).to(dt)  # (B, D)
        k_s, shift = self.shift_ssm.step(k, state.shift)
        k_s = k_s + self.shift_skip.to(dt) * k
        kv = self._heads(k_s)[..., :, None] * self._heads(v)[..., None, :]  # (B, H, d, d)
        dtA, Ct = self.diag_ssm.discrete(dt)  # (H, M)
        h = torch.exp(dtA)[:, None, None, :] * state.diag + kv[..., None]  # (B, H, d, d, M)
        kv_s = 2 * torch.einsum("hm,bhijm->bhij", Ct, h).real + self.diag_ssm.skip.to(dt)[:, None, None] * kv
        y = torch.einsum("bhi,bhij->bhj", self._heads(q), kv_s)  # (B, H, d)
        return self.out_proj(y.reshape(B, D).to(x_t.dtype)), H3State(shift, h)

    def empty_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> H3State:
        """Zero shift cache and zero modes."""
        dt = compute_dtype(dtype)
        D = self.num_heads * self.head_dim
        shift = self.shift_ssm.empty_cache(batch_size, D, device, dt)
        M = self.diag_ssm.a_imag.shape[1]
        cdt = torch.complex128 if dt == torch.float64 else torch.complex64
        diag = torch.zeros(batch_size, self.num_heads, self.head_dim, self.head_dim, M, device=device, dtype=cdt)
        return H3State(shift, diag)
