"""Choosing the next token from logits: greedy, temperature, top-k, top-p and repetition penalty.

:func:`next_token` draws from a ``torch.Generator`` (the eager generation loop). :func:`choose_tokens` is the
decoding engine's version: the same filters, but the randomness is a counter-based hash of (request key, token
index, token id) computed with integer tensor ops, so it needs no generator state, no host synchronisation and
no data-dependent branch, can be captured in a CUDA graph, gives the same numbers on every device, and makes a
request's tokens independent of the slot and batch it runs in. A token is drawn by the Gumbel-max rule
``argmax(logits / temperature + g)``, g = −log(−log u), which picks token i with probability softmax(...)_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(kw_only=True)
class SamplingConfig:
    """How to pick each token.

    Attributes:
        do_sample: sample (True) or take the argmax (False).
        temperature: logits are divided by it before sampling (> 0).
        top_k: keep only the k most likely tokens (None: all).
        top_p: keep the smallest set of tokens whose probability reaches p (None: all).
        repetition_penalty: > 1 discourages tokens already in the sequence (CTRL-style: positive logits are
            divided by it, negative ones multiplied).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Penalise tokens marked in ``seen`` ``(B, vocab)`` bool; ``logits`` is ``(B, vocab)``."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def seen_tokens(ids: torch.Tensor, mask: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """Which ids occur among each row's real tokens: the repetition penalty's starting ``seen`` set.

    The occurrences are counted with an integer ``scatter_add_``, whose result does not depend on the order of
    the writes, so an id written more than once (a repeated token, or the pad id equal to a real token) gives
    the same answer on every device; a boolean ``scatter_`` of the mask would leave such an id to whichever
    write lands last.

    Args:
        ids: ``(B, T)`` int64 token ids.
        mask: ``(B, T)`` 1 for real tokens, 0 for padding (never seen); None: every token is real.
        vocab_size: number of token ids.

    Returns:
        ``(B, vocab)`` bool.
    """
    real = torch.ones_like(ids) if mask is None else (mask != 0).to(torch.long)  # (B, T)
    counts = torch.zeros(ids.shape[0], vocab_size, dtype=torch.long, device=ids.device)
    return counts.scatter_add_(1, ids, real) > 0  # (B, vocab)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set logits outside the top-k / top-p sets to −inf (``(B, vocab)``; the best token always stays)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # probability of strictly better tokens
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(
    logits: torch.Tensor, config: SamplingConfig, seen: torch.Tensor | None, generator: torch.Generator | None
) -> torch.Tensor:
    """``(B, vocab)`` logits → ``(B,)`` token ids."""
    logits = _shaped_logits(logits, config, seen)
    if not config.do_sample:
        return logits.argmax(-1)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def _shaped_logits(logits: torch.Tensor, config: SamplingConfig, seen: torch.Tensor | None) -> torch.Tensor:
    """Float32 logits after the repetition penalty and, when sampling, temperature, top-k and top-p: what both
    samplers draw from (greedy takes their argmax)."""
    logits = logits.float()
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
    if config.do_sample:
        logits = filter_logits(logits / config.temperature, config.top_k, config.top_p)
    return logits


_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # < 2^27, so a 32-bit value times it stays below 2^59: exact in int64


def _mix32(x):
    """A 32-bit integer hash (two multiply-xorshift rounds) of Python ints or int64 tensors in ``[0, 2^32)``."""
    x = x ^ (x >> 16)
    x = (x * _MIX) & _MASK32
    x = x ^ (x >> 16)
    x = (x * _MIX) & _MASK32
    return x ^ (x >> 16)


def sampling_key(seed: int, stream: int = 0) -> int:
    """The 32-bit noise key of request ``stream`` under ``seed`` (Python ints; any sign or size)."""
    return _mix32(_mix32(seed & _MASK32) ^ ((seed >> 32) & _MASK32) ^ _mix32(stream & _MASK32))


def gumbel_noise(keys: torch.Tensor, counts: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Standard Gumbel noise ``(B, vocab)`` float32 for token ``counts[b]`` of the request with key ``keys[b]``.

    Args:
        keys: ``(B,)`` int64 keys from :func:`sampling_key`.
        counts: ``(B,)`` int64 index of the token being drawn in each request (0 for its first token).
        vocab_size: number of token ids.

    Returns:
        ``(B, vocab)`` float32: −log(−log u) with u = (h + ½) / 2^24 from 24 bits of the hash h.
    """
    row = _mix32(keys ^ _mix32(counts & _MASK32))  # (B,)
    cols = torch.arange(vocab_size, device=keys.device, dtype=torch.long)
    h = _mix32(row[:, None] ^ cols[None, :])  # (B, vocab)
    u = ((h >> 8).to(torch.float32) + 0.5) * 2.0**-24
    return -torch.log(-torch.log(u))


def choose_tokens(
    logits: torch.Tensor,
    config: SamplingConfig,
    seen: torch.Tensor | None,
    keys: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    """``(B, vocab)`` logits → ``(B,)`` token ids, without host synchronisation (CUDA-graph safe).

    Args:
        logits: ``(B, vocab)``; computed on in float32 like :func:`next_token`.
        config: the sampling settings (fixed: the Python branches below depend only on them).
        seen: ``(B, vocab)`` bool tokens already in each sequence (for the repetition penalty), or None.
        keys: ``(B,)`` int64 request keys (:func:`sampling_key`); unused when greedy.
        counts: ``(B,)`` int64 index of the token being drawn per request; unused when greedy.

    Returns:
        ``(B,)`` int64 token ids.
    """
    logits = _shaped_logits(logits, config, seen)
    if not config.do_sample:
        return logits.argmax(-1)
    return (logits + gumbel_noise(keys, counts, logits.shape[-1])).argmax(-1)
