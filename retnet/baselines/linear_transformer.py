"""Linear attention with the elu + 1 feature map (Katharopoulos et al. 2020, "Transformers are RNNs", Eq. 4–7).

o_n = φ(q_n) S_n / (φ(q_n) · z_n) with S_n = Σ_{m≤n} φ(k_m)ᵀ v_m and z_n = Σ_{m≤n} φ(k_m), φ(x) = elu(x) + 1.
This is retention with γ = 1 and no normalisation, so the training path reuses :func:`retnet.ops.retention`
(chunkwise form; the denominator comes from one extra value column of ones) and decoding is its recurrent form.
It uses the op's PyTorch path (``backend="torch"`` by default), so the baseline does not depend on kernel
support for γ = 1, unnormalised output and a value width of K + 1. No positional encoding, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.retention import RetentionState, retention
from ..ops.retention.decay import compute_dtype
from .base import RecurrentMixer


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1 (positive features)."""
    return nn.functional.elu(x) + 1.0


class LinearAttention(RecurrentMixer):
    """Multi-head causal linear attention.

    Args:
        hidden_size: D.
        num_heads: H; head dim K = V = D / H.
        chunk_size: chunk size of the chunkwise training path.
        eps: added to the denominator.
        backend: backend of :func:`retnet.ops.retention`.
    """

    def __init__(
        self, hidden_size: int, num_heads: int, chunk_size: int = 64, eps: float = 1e-6, backend: str = "torch"
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.chunk_size = chunk_size
        self.eps = eps
        self.backend = backend
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def _attend(self, x: torch.Tensor, state: RetentionState | None, form: str, output_state: bool):
        B, T, D = x.shape
        H, K = self.num_heads, self.head_dim
        dt = compute_dtype(x.dtype)  # sums of T positive terms: keep them in float32 or better
        q = feature_map(self.q_proj(x).view(B, T, H, K).to(dt))  # (B, T, H, K)
        k = feature_map(self.k_proj(x).view(B, T, H, K).to(dt))  # (B, T, H, K)
        v = self.v_proj(x).view(B, T, H, K).to(dt)  # (B, T, H, K)
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, T, H, K + 1): last column gives φ(q)·z
        log_decay = torch.zeros(H, device=x.device, dtype=dt)  # γ = 1
        o, new_state = retention(
            q, k, v1, log_decay, form=form, chunk_size=self.chunk_size, initial_state=state,
            output_final_state=output_state, normalize=False, backend=self.backend,
        )  # fmt: skip  # o: (B, T, H, K + 1)
        o = o[..., :K] / (o[..., K:] + self.eps)  # (B, T, H, K)
        return self.out_proj(o.reshape(B, T, D).to(x.dtype)), new_state

    def parallel(self, x: torch.Tensor, *, output_state: bool = False) -> tuple[torch.Tensor, RetentionState | None]:
        """Chunkwise linear attention over the segment."""
        return self._attend(x, None, "chunkwise", output_state)

    def step(self, x_t: torch.Tensor, state: RetentionState) -> tuple[torch.Tensor, RetentionState]:
        """One token: S += φ(k)ᵀv, z += φ(k); o = φ(q)S / φ(q)·z."""
        y, state = self._attend(x_t[:, None], state, "recurrent", True)
        return y[:, 0], state

    def empty_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> RetentionState:
        """S = 0, z = 0 (the value width includes the ones column)."""
        K = self.head_dim
        return RetentionState.zeros(batch_size, self.num_heads, K, K + 1, dtype=compute_dtype(dtype), device=device)
