"""Generation: prefill the prompt (parallel or chunkwise form), then decode with the recurrent form (SPEC §5).

The state per sequence is constant-size (per layer: S ``(B, H, K, V)``, z ``(B, H, K)``, position ``(B,)``),
so each new token costs O(1) in the context length. Prompts of different lengths are left-padded; padded
positions contribute nothing, so a padded batch gives the same tokens as each prompt alone.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import torch

from .sampling import SamplingConfig, next_token


def left_pad(prompts: torch.Tensor | Sequence, pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(B, T)`` ids and mask (None when nothing is padded) from a tensor or a list of sequences.

    Raises:
        ValueError: on an empty batch or an empty prompt.
    """
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() == 1:
            prompts = prompts[None]
        if prompts.dim() != 2 or prompts.numel() == 0:
            raise ValueError(f"prompt ids must be a non-empty (B, T) tensor, got shape {tuple(prompts.shape)}")
        if prompts.dtype.is_floating_point or prompts.dtype.is_complex or prompts.dtype == torch.bool:
            raise TypeError(f"prompt ids must be integers, got a {prompts.dtype} tensor")  # never truncate 1.7 to 1
        return prompts.to(device=device, dtype=torch.long), None
    rows = [torch.as_tensor(p).flatten() for p in prompts]
    if not rows:
        raise ValueError("no prompts given")
    if any(r.numel() == 0 for r in rows):
        raise ValueError("empty prompt: every prompt needs at least one token")
    if any(r.dtype.is_floating_point or r.dtype.is_complex or r.dtype == torch.bool for r in rows):
        raise TypeError("prompt ids must be integers, got non-integer values")  # never truncate 1.7 to 1
    rows = [r.long() for r in rows]
    T = max(r.numel() for r in rows)
    ids = torch.full((len(rows), T), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - r.numel() :] = r
        mask[i, T - r.numel() :] = 1
    padded = bool((mask == 0).any())
    return ids.to(device), (mask.to(device) if padded else None)


def _checked_on_call(gen_fn):
    """Run a generator function up to its first ``yield`` at call time, so its argument checks raise there and
    not at the first ``next()``; the priming value is swallowed."""

    @functools.wraps(gen_fn)
    def call(*args, **kwargs):
        gen = gen_fn(*args, **kwargs)
        next(gen)
        return gen

    return call


@_checked_on_call
@torch.no_grad()
def stream_generate(
    model,
    input_ids,
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    prefill_form: str = "chunkwise",
    chunk_size: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the ``(B,)`` tokens of each decoding step.

    Args:
        model: a :class:`retnet.RetNetForCausalLM`.
        input_ids: ``(B, T)`` ids (optionally with ``attention_mask`` for left padding) or a list of sequences
            of different lengths (left-padded here).
        max_new_tokens: most tokens to generate (≥ 0).
        do_sample, temperature, top_k, top_p, repetition_penalty: see :class:`SamplingConfig`.
        eos_token_id: stop token(s): a row that produced one is finished and then yields ``pad_token_id``;
            generation ends when every row is finished. Defaults to ``model.config.eos_token_id``.
        pad_token_id: filler for padding and finished rows (default: config's pad id, else eos, else 0).
        attention_mask: ``(B, T)`` 1/0 left-padding mask for a tensor prompt.
        generator: random generator for sampling; ``seed`` makes one.
        prefill_form: ``"chunkwise"`` or ``"parallel"`` for the prompt.
        chunk_size: chunk size of the chunkwise prefill.

    Raises:
        ValueError: on bad arguments (empty prompt, ids outside the vocabulary, bad sampling values).
    """
    cfg = model.config
    sampling = SamplingConfig(
        do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty
    )
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if prefill_form not in ("chunkwise", "parallel", "recurrent"):
        raise ValueError(f"unknown prefill_form {prefill_form!r}")
    eos = eos_token_id if eos_token_id is not None else cfg.eos_token_id
    eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    if any(not isinstance(e, int) or isinstance(e, bool) or not 0 <= e < cfg.vocab_size for e in eos_ids):
        raise ValueError(f"eos_token_id must be ids in [0, {cfg.vocab_size}), got {eos!r}")
    if pad_token_id is None:
        pad_token_id = cfg.pad_token_id if cfg.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
    device = next(model.parameters()).device
    ids, mask = left_pad(input_ids, pad_token_id, device)
    if attention_mask is not None:
        if mask is not None:
            raise ValueError("attention_mask is only for a tensor prompt; lists are padded automatically")
        mask = attention_mask.to(device)
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    yield None  # the checks above ran at call time (see _checked_on_call)
    if max_new_tokens == 0:
        model._check_input_ids(ids)
        return
    out = model(ids, form=prefill_form, chunk_size=chunk_size, attention_mask=mask, output_states=True)
    logits, states = out.logits[:, -1], out.states
    B = ids.shape[0]
    seen = None
    if repetition_penalty != 1.0:
        seen = torch.zeros(B, cfg.vocab_size, dtype=torch.bool, device=device)
        seen.scatter_(1, ids, True if mask is None else mask.bool())
    eos_tensor = torch.tensor(eos_ids, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        token = next_token(logits, sampling, seen, generator)
        token = torch.where(finished, torch.full_like(token, pad_token_id), token)
        yield token
        if eos_ids:
            finished |= torch.isin(token, eos_tensor)
            if bool(finished.all()):
                return
        if step + 1 == max_new_tokens:
            return
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
        out = model(token[:, None], form="recurrent", states=states, output_states=True)
        logits, states = out.logits[:, -1], out.states


def generate(model, input_ids, **kwargs) -> torch.Tensor:
    """The (left-padded) prompt followed by the generated tokens, ``(B, T + n)``; kwargs as :func:`stream_generate`."""
    device = next(model.parameters()).device
    pad = kwargs.get("pad_token_id")
    if pad is None:
        cfg = model.config
        eos = kwargs.get("eos_token_id", cfg.eos_token_id)
        eos0 = eos if isinstance(eos, int) or eos is None else list(eos)[0]
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else (eos0 if eos0 is not None else 0)
        kwargs["pad_token_id"] = pad
    ids, _ = left_pad(input_ids, pad, device)
    new = list(stream_generate(model, input_ids, **kwargs))
    if not new:
        return ids
    return torch.cat([ids, torch.stack(new, dim=1)], dim=1)
