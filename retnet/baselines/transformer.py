"""Causal softmax attention with rotary positions and a KV cache (Vaswani et al. 2017; RoFormer, Su et al. 2021).

The Transformer baseline of the paper's Table 5 (there with FlashAttention): attention runs through
``torch.nn.functional.scaled_dot_product_attention``, which picks the flash / memory-efficient kernels on GPU.
Positions rotate q and k with the same interleaved rotation RetNet uses (:func:`retnet.layers.position.apply_rotation`),
so both models see relative positions the same way. Decoding appends to a cache of past keys and values.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..layers.position import apply_rotation
from .base import RecurrentMixer


class KVCache(NamedTuple):
    """Keys ``(B, H, t, K)``, values ``(B, H, t, K)`` of the t tokens seen so far, and t as ``(B,)`` positions."""

    k: torch.Tensor
    v: torch.Tensor
    position: torch.Tensor


class CausalSelfAttention(RecurrentMixer):
    """Multi-head causal self-attention.

    Args:
        hidden_size: D.
        num_heads: H; head dim K = D / H (even, for the rotation).
    """

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor):
        B, T, _ = x.shape
        H, K = self.num_heads, self.head_dim
        q = apply_rotation(self.q_proj(x).view(B, T, H, K), positions).transpose(1, 2)  # (B, H, T, K)
        k = apply_rotation(self.k_proj(x).view(B, T, H, K), positions).transpose(1, 2)  # (B, H, T, K)
        v = self.v_proj(x).view(B, T, H, K).transpose(1, 2)  # (B, H, T, K)
        return q, k, v

    def parallel(self, x: torch.Tensor, *, output_state: bool = False) -> tuple[torch.Tensor, KVCache | None]:
        """Causal attention over the segment (flash kernels on GPU); the state is the KV cache."""
        B, T, D = x.shape
        positions = torch.arange(T, device=x.device).expand(B, T)  # (B, T)
        q, k, v = self._qkv(x, positions)
        o = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, K)
        y = self.out_proj(o.transpose(1, 2).reshape(B, T, D))
        state = KVCache(k, v, torch.full((B,), T, device=x.device, dtype=torch.long)) if output_state else None
        return y, state

    def step(self, x_t: torch.Tensor, state: KVCache) -> tuple[torch.Tensor, KVCache]:
        """One token attends to the cache and itself."""
        B, D = x_t.shape
        q, k, v = self._qkv(x_t[:, None], state.position[:, None])  # each (B, H, 1, K)
        k = torch.cat([state.k.to(k.dtype), k], dim=2)  # (B, H, t + 1, K)
        v = torch.cat([state.v.to(v.dtype), v], dim=2)
        o = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, H, 1, K)
        return self.out_proj(o.reshape(B, D)), KVCache(k, v, state.position + 1)

    def empty_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        """An empty cache."""
        empty = torch.zeros(batch_size, self.num_heads, 0, self.head_dim, device=device, dtype=dtype)
        return KVCache(empty, empty, torch.zeros(batch_size, device=device, dtype=torch.long))
