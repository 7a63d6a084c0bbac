"""Batched log-likelihood of continuations on the native model, in any retention form.

``log p(continuation | context)`` is the sum, over the continuation's tokens, of the model's next-token
log-probabilities, read from one forward pass over ``context + continuation`` minus its last token. Requests are
sorted by length (longest first) and packed into left-padded batches: left padding contributes nothing and every
row counts positions from its first real token (docs/spec.md §3, padding), so a batched score equals the score of
the row alone, in the parallel, chunkwise and recurrent forms alike (docs/spec.md §3: the forms compute one
function).

Strings become tokens as in lm-evaluation-harness: whitespace at the end of the context moves to the front of the
continuation, the continuation's tokens are those of ``context + continuation`` after the context's, and an empty
context is replaced by the document separator (the token a document follows in training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..data import Tokenizer

FORMS = ("parallel", "chunkwise", "recurrent")


@dataclass(frozen=True)
class Score:
    """The log-likelihood of one continuation (nats), whether greedy decoding would produce it, and its length."""

    logprob: float
    is_greedy: bool
    num_tokens: int


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids (see the module docstring).

    Raises:
        ValueError: an empty continuation, or one that adds no token to the context.
    """
    if not continuation:
        raise ValueError("continuation must be a non-empty string")
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    if not stripped:
        return [tokenizer.sep_id], tokenizer.encode(continuation)
    whole = tokenizer.encode(stripped + continuation)
    context_ids = tokenizer.encode(stripped)
    continuation_ids = whole[len(context_ids) :]
    if not continuation_ids:
        raise ValueError(f"continuation {continuation!r} adds no token to its context")
    return context_ids, continuation_ids


def _check_pair(context: Sequence[int], continuation: Sequence[int], max_length: int | None, vocab: int) -> None:
    if not context:
        raise ValueError("a context needs at least one token (use the separator for an empty context)")
    if not continuation:
        raise ValueError("a continuation needs at least one token")
    if max_length is not None and len(continuation) > max_length:
        raise ValueError(f"a continuation of {len(continuation)} tokens does not fit max_length {max_length}")
    for t in (*context, *continuation):
        if not 0 <= int(t) < vocab:
            raise ValueError(f"token id {t} outside the model's vocabulary [0, {vocab})")


@torch.no_grad()
def score_tokens(
    model: torch.nn.Module,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    form: str = "chunkwise",
    chunk_size: int | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[Score]:
    """Score ``(context_ids, continuation_ids)`` pairs in batches.

    Args:
        model: a retnet causal LM (its forward takes ``form``, ``chunk_size`` and ``attention_mask``).
        pairs: token ids; contexts and continuations each need at least one token.
        form: ``"parallel"``, ``"chunkwise"`` or ``"recurrent"``.
        chunk_size: chunk size of the chunkwise form (default: the model's).
        batch_size: rows per forward pass.
        max_length: keep at most this many input tokens per row, dropping the oldest context tokens first (None:
            no limit; retention has no trained maximum, so the whole context is used).
        on_batch: called with the number of pairs scored after each batch (a progress bar's ``update``).

    Returns:
        One :class:`Score` per pair, in the order given.

    Raises:
        ValueError: a bad form, batch size or max length, an empty context or continuation, a continuation longer
            than ``max_length``, or ids outside the vocabulary.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1 or None, got {max_length}")
    vocab = model.config.vocab_size
    for context, continuation in pairs:
        _check_pair(context, continuation, max_length, vocab)
    rows = []
    for context, continuation in pairs:
        ids = [*context, *continuation][:-1]  # inputs; position t predicts token t + 1
        if max_length is not None:
            ids = ids[-max_length:]
        rows.append((ids, [int(t) for t in continuation]))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # stable: longest first
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores: list[Score | None] = [None] * len(rows)
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = len(rows[batch[0]][0])
            input_ids = torch.zeros(len(batch), width, dtype=torch.long)  # (B, T), left padded
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for r, i in enumerate(batch):
                ids = rows[i][0]
                input_ids[r, width - len(ids) :] = torch.tensor(ids)
                mask[r, width - len(ids) :] = 1
            padded = bool((mask == 0).any())
            logits = model(
                input_ids.to(device),
                form=form,
                chunk_size=chunk_size,
                attention_mask=mask.to(device) if padded else None,
            ).logits  # (B, T, vocab)
            for r, i in enumerate(batch):
                target = torch.tensor(rows[i][1], device=device)  # (n,)
                # Only the continuation's predictions: a full (B, T, vocab) log-softmax would double peak memory.
                picked = torch.log_softmax(logits[r, width - len(target) :].float(), dim=-1)  # (n, vocab)
                scores[i] = Score(
                    logprob=float(picked.gather(-1, target[:, None]).sum()),
                    is_greedy=bool((picked.argmax(-1) == target).all()),
                    num_tokens=len(target),
                )
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        model.train(was_training)
    return scores  # type: ignore[return-value]


def score_texts(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    pairs: Sequence[tuple[str, str]],
    **kwargs,
) -> list[Score]:
    """:func:`score_tokens` for ``(context, continuation)`` strings, tokenized with :func:`encode_pair`."""
    return score_tokens(model, [encode_pair(tokenizer, c, x) for c, x in pairs], **kwargs)
