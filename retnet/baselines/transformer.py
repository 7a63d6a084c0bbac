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

from ..layers.packing import PackedProjection, current_packing, pack_linears_
from ..layers.position import apply_rotation
from .base import RecurrentMixer


class KVCache(NamedTuple):
    """Keys ``(B, H, t, K)``, values ``(B, H, t, K)`` of the t tokens seen so far, and t as ``(B,)`` positions."""

    k: torch.Tensor
    v: torch.Tensor
    position: torch.Tensor


class StaticKVCache(NamedTuple):
    """Preallocated cache for :meth:`CausalSelfAttention.decode_step_`: keys and values ``(B, H, max_len, K)``
    written in place at each row's position, and the positions ``(B,)`` (each row's number of cached tokens)."""

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
        self._packed_decode: PackedProjection | None = None  # set by pack_decode_weights_

    def _qkv(self, x: torch.Tensor, positions: torch.Tensor, packed: PackedProjection | None = None):
        B, T, _ = x.shape
        H, K = self.num_heads, self.head_dim
        q, k, v = packed(x) if packed is not None else (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        q = apply_rotation(q.view(B, T, H, K), positions).transpose(1, 2)  # (B, H, T, K)
        k = apply_rotation(k.view(B, T, H, K), positions).transpose(1, 2)  # (B, H, T, K)
        v = v.view(B, T, H, K).transpose(1, 2)  # (B, H, T, K)
        return q, k, v

    def pack_decode_weights_(self) -> None:
        """Stack the q/k/v weights so that :meth:`decode_step_` reads them with one matrix product (the
        parameters become views of one buffer, values unchanged; moving or casting the module drops it)."""
        self._packed_decode = pack_linears_([self.q_proj, self.k_proj, self.v_proj])

    def _apply(self, fn, recurse=True):
        self._packed_decode = None  # the parameters get new storage: the stacked buffer would go stale
        return super()._apply(fn, recurse)

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

    # ---- static decoding state (retnet.generation.engine) ----------------------------------------------------
    def allocate_decode_state(
        self, batch_size: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> StaticKVCache:
        """A zeroed :class:`StaticKVCache` of ``batch_size`` rows and at least ``max_len`` positions in ``dtype``
        (rounded up to a multiple of 16: the memory-efficient SDPA kernel wants the mask's rows aligned)."""
        shape = (batch_size, self.num_heads, -(-max_len // 16) * 16, self.head_dim)
        k = torch.zeros(shape, device=device, dtype=dtype)
        v = torch.zeros(shape, device=device, dtype=dtype)
        return StaticKVCache(k, v, torch.zeros(batch_size, device=device, dtype=torch.long))

    def prefill_decode_state_(
        self, x: torch.Tensor, state: StaticKVCache, rows: torch.Tensor, start: int, *, chunk_size: int = 64
    ) -> torch.Tensor:
        """Attend a segment of rows ``rows`` to their cache and itself; write its keys and values in place.

        Args:
            x: ``(n, T, D)`` normalised block input.
            state: buffers from :meth:`allocate_decode_state`.
            rows: ``(n,)`` int64 slot indices.
            start: the rows' common number of cached tokens (0: a new sequence).
            chunk_size: unused (attention has no chunked form here); accepted for the mixer protocol.

        Returns:
            ``(n, T, D)`` layer output.

        Raises:
            ValueError: if the segment would run past the cache's ``max_len``.
        """
        del chunk_size
        n, T, D = x.shape
        end = start + T
        if end > state.k.shape[2]:
            raise ValueError(f"segment ends at position {end}, past the cache's max_len {state.k.shape[2]}")
        positions = torch.arange(start, end, device=x.device).expand(n, T)  # (n, T)
        q, k, v = self._qkv(x, positions)  # each (n, H, T, K)
        state.k[rows, :, start:end] = k.to(state.k.dtype)
        state.v[rows, :, start:end] = v.to(state.v.dtype)
        if start == 0:
            o = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # (n, H, T, K)
        else:
            keys, values = state.k[rows, :, :end].to(q.dtype), state.v[rows, :, :end].to(q.dtype)  # (n, H, end, K)
            mask = torch.arange(end, device=x.device)[None, :] <= positions[0, :, None]  # (T, end)
            o = nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        state.position.index_fill_(0, rows, end)
        return self.out_proj(o.transpose(1, 2).reshape(n, T, D))

    def decode_step_(self, x_t: torch.Tensor, state: StaticKVCache) -> torch.Tensor:
        """One token for every row: its key and value are written at the row's position (read on the device),
        then it attends to the cache with the unwritten positions masked. No host synchronisation, no
        allocation that depends on the position, so the step can be captured in a CUDA graph.

        Rows whose cache is full (position = max_len) write over the last position; the caller stops rows
        before that.

        Args:
            x_t: ``(B, D)`` normalised block input.
            state: buffers from :meth:`allocate_decode_state`.

        Returns:
            ``(B, D)`` layer output.
        """
        B, D = x_t.shape
        L = state.k.shape[2]
        position = state.position  # (B,)
        packed = current_packing(self._packed_decode, self.q_proj)
        q, k, v = self._qkv(x_t[:, None], position[:, None], packed)  # each (B, H, 1, K)
        slot = position.clamp(max=L - 1)[:, None, None, None].expand_as(k)  # (B, H, 1, K)
        state.k.scatter_(2, slot, k.to(state.k.dtype))
        state.v.scatter_(2, slot, v.to(state.v.dtype))
        mask = torch.arange(L, device=x_t.device)[None, :] <= position[:, None]  # (B, L)
        o = nn.functional.scaled_dot_product_attention(
            q, state.k.to(q.dtype), state.v.to(q.dtype), attn_mask=mask[:, None, None, :]
        )  # (B, H, 1, K)
        position.add_(1).clamp_(max=L)
        return self.out_proj(o.reshape(B, D))
