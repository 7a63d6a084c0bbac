"""Generation: prefill the prompt (parallel or chunkwise form), then decode with the recurrent form (docs/spec.md §5).

The state per sequence is constant-size (per layer: S ``(B, H, K, V)``, z ``(B, H, K)``, position ``(B,)``),
so each new token costs O(1) in the context length. Prompts of different lengths are left-padded; padded
positions contribute nothing, so a padded batch gives the same tokens as each prompt alone.

Two loops produce the tokens. On CUDA the default is the :class:`~.engine.DecodeEngine` (static state, sampling
on the device, one CUDA graph per token, the host reading tokens back every ``sync_every`` steps); elsewhere, and
with ``use_engine=False``, the eager loop below calls the model's forward per token. Greedy decoding gives the
same tokens in both; sampling draws different (equally distributed) random numbers: the eager loop uses a
``torch.Generator``, the engine a counter-based hash of the seed (see :mod:`.sampling`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import torch

from .decoder_parts import decoder_parts
from .sampling import SamplingConfig, next_token, sampling_key, seen_tokens


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


def stop_and_pad_ids(config, eos_token_id, pad_token_id) -> tuple[list[int], int]:
    """The stop ids (``eos_token_id``, else the config's) and the pad id (given, else the config's, else the first
    stop id, else 0).

    Raises:
        ValueError: a stop id outside the vocabulary.
    """
    eos = eos_token_id if eos_token_id is not None else config.eos_token_id
    eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    if any(not isinstance(e, int) or isinstance(e, bool) or not 0 <= e < config.vocab_size for e in eos_ids):
        raise ValueError(f"eos_token_id must be ids in [0, {config.vocab_size}), got {eos!r}")
    if pad_token_id is None:
        pad_token_id = config.pad_token_id if config.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
    return eos_ids, pad_token_id


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
    use_engine: bool | None = None,
    prefill_chunk: int | None = None,
    sync_every: int = 8,
    cuda_graph: bool | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the ``(B,)`` tokens of each decoding step.

    Args:
        model: a :class:`retnet.RetNetForCausalLM`.
        input_ids: ``(B, T)`` ids (optionally with ``attention_mask`` for left padding) or a list of sequences
            of different lengths (left-padded here).
        max_new_tokens: most tokens to generate (≥ 0).
        do_sample: sample (True) or take the argmax (False); see :class:`SamplingConfig` for it and the next four.
        temperature: logits are divided by it before sampling (> 0).
        top_k: keep only the k most likely tokens (None: all).
        top_p: keep the smallest set of tokens whose probability reaches p (None: all).
        repetition_penalty: > 1 discourages tokens already in the sequence.
        eos_token_id: stop token(s): a row that produced one is finished and then yields ``pad_token_id``;
            generation ends when every row is finished. Defaults to ``model.config.eos_token_id``.
        pad_token_id: filler for padding and finished rows (default: config's pad id, else eos, else 0).
        attention_mask: ``(B, T)`` 1/0 left-padding mask for a tensor prompt.
        generator: random generator for sampling; ``seed`` makes one.
        prefill_form: ``"chunkwise"`` or ``"parallel"`` for the prompt (the engine always prefills chunkwise:
            the same function).
        chunk_size: chunk size of the chunkwise prefill.
        use_engine: decode with :class:`~.engine.DecodeEngine` (True), with the eager loop (False), or the
            engine on CUDA when every mixer supports it and the eager loop otherwise (None).
        prefill_chunk: with the engine, prefill long prompts in pieces of this many tokens.
        sync_every: with the engine, read the tokens back to the host (and check for stop tokens there) every
            this many steps; tokens are yielded after each read-back.
        cuda_graph: with the engine, capture its step in a CUDA graph (default: on CUDA).

    Raises:
        ValueError: on bad arguments (empty prompt, ids outside the vocabulary, bad sampling values).
        TypeError: ``use_engine=True`` for a model whose mixers have no static decoding state.
    """
    cfg = model.config
    sampling = SamplingConfig(
        do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty
    )
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if prefill_form not in ("chunkwise", "parallel", "recurrent"):
        raise ValueError(f"unknown prefill_form {prefill_form!r}")
    eos_ids, pad_token_id = stop_and_pad_ids(cfg, eos_token_id, pad_token_id)
    device = next(model.parameters()).device
    ids, mask = left_pad(input_ids, pad_token_id, device)
    if attention_mask is not None:
        if mask is not None:
            raise ValueError("attention_mask is only for a tensor prompt; lists are padded automatically")
        mask = attention_mask.to(device)
    if not isinstance(sync_every, int) or sync_every < 1:
        raise ValueError(f"sync_every must be an int >= 1, got {sync_every!r}")
    if use_engine is None:
        use_engine = device.type == "cuda" and _engine_supported(model)
    yield None  # the checks above ran at call time (see _checked_on_call)
    if max_new_tokens == 0:
        model._check_input_ids(ids)
        return
    if use_engine:
        if seed is None and do_sample:  # the engine's noise is keyed by a seed: draw one from the generator
            source = generator.device if generator is not None else "cpu"
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=source))
        yield from _engine_stream(
            model, _unpadded_rows(ids, mask), max_new_tokens, sampling, eos_ids, pad_token_id, seed or 0,
            chunk_size=chunk_size, prefill_chunk=prefill_chunk, sync_every=sync_every, cuda_graph=cuda_graph,
        )  # fmt: skip
        return
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    out = model(ids, form=prefill_form, chunk_size=chunk_size, attention_mask=mask, output_states=True)
    logits, states = out.logits[:, -1], out.states
    B = ids.shape[0]
    seen = None
    if repetition_penalty != 1.0:
        seen = seen_tokens(ids, mask, cfg.vocab_size)  # left padding is not seen
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


def _engine_supported(model) -> bool:
    """Whether every mixer has static decoding state and no dropout is active (the eager loop applies it)."""
    if model.training and any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return False
    try:
        decoder_parts(model)
    except TypeError:
        return False
    return True


def _unpadded_rows(ids: torch.Tensor, mask: torch.Tensor | None) -> list[list[int]]:
    """Each row's real tokens (left padding removed), read to the host once before decoding."""
    if mask is None:
        return ids.tolist()
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(ids.shape)}")
    rows = []
    for row, m in zip(ids.tolist(), mask.long().tolist()):
        first = m.index(1) if 1 in m else len(m)
        if any(v not in (0, 1) for v in m) or any(v != 1 for v in m[first:]) or first == len(m):
            raise ValueError("attention_mask must be 0/1 left padding with at least one real token per row")
        rows.append(row[first:])
    return rows


def _engine_stream(
    model, rows, max_new_tokens, sampling, eos_ids, pad_token_id, seed, *, chunk_size, prefill_chunk, sync_every,
    cuda_graph,
) -> Iterator[torch.Tensor]:  # fmt: skip
    """The engine's tokens with the eager loop's stopping rule (stop once every row produced a stop token)."""
    from .engine import DecodeEngine

    B = len(rows)
    engine = DecodeEngine(
        model, max_batch=B, max_len=max(len(r) for r in rows) + max_new_tokens, sampling=sampling,
        eos_token_id=eos_ids, pad_token_id=pad_token_id, chunk_size=chunk_size, prefill_chunk=prefill_chunk,
        cuda_graph=cuda_graph,
    )  # fmt: skip
    engine.add(rows, seeds=[sampling_key(seed, i) for i in range(B)], max_new_tokens=max_new_tokens)
    eos = set(eos_ids)
    done = [False] * B
    emitted = 0
    while emitted < max_new_tokens:
        block = [engine.step().clone() for _ in range(min(sync_every, max_new_tokens - emitted))]
        values = torch.stack(block).tolist()  # (n, B): the host's one read per block
        for token, row_values in zip(block, values):
            yield token
            done = [d or v in eos for d, v in zip(done, row_values)]
            if eos and all(done):
                return
        emitted += len(block)


def generate(model, input_ids, **kwargs) -> torch.Tensor:
    """The (left-padded) prompt followed by the generated tokens, ``(B, T + n)``; kwargs as :func:`stream_generate`."""
    device = next(model.parameters()).device
    _, pad = stop_and_pad_ids(model.config, kwargs.get("eos_token_id"), kwargs.get("pad_token_id"))
    kwargs["pad_token_id"] = pad
    ids, _ = left_pad(input_ids, pad, device)
    new = list(stream_generate(model, input_ids, **kwargs))
    if not new:
        return ids
    return torch.cat([ids, torch.stack(new, dim=1)], dim=1)
