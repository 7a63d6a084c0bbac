"""Passkey retrieval (Mohtashami and Jaggi 2023): examples, training batches and scoring.

A five-digit number is hidden at a chosen depth in filler text, and the sequence ends by asking for it; the answer
counts when every answer token is the model's most likely next token (teacher-forced exact match, which is what
greedy decoding of the answer would produce). Training scores the answer tokens only, at needle depths drawn
uniformly from [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..model.loss import IGNORE_INDEX
from .task_training import TEST, TRAIN, Batch, autocast

PASSKEY_INTRO = "There is an important number hidden inside a lot of irrelevant text. Find it and remember it.\n"
PASSKEY_NEEDLE = "\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
PASSKEY_QUESTION = "\nWhat is the pass key? The pass key is"


@dataclass
class PasskeyExample:
    """One passkey sequence.

    Attributes:
        input_ids: ``(L,)`` int64: intro, filler with the needle inside, question, then the answer.
        answer_start: index of the first answer token (the prompt is ``input_ids[:answer_start]``).
        passkey: the hidden number.
        needle_start: index of the needle's first token.
    """

    input_ids: np.ndarray
    answer_start: int
    passkey: int
    needle_start: int

    @property
    def answer_ids(self) -> np.ndarray:
        """The answer tokens (the passkey after a space)."""
        return self.input_ids[self.answer_start :]


def make_passkey(
    tokenizer, filler: np.ndarray | str, *, length: int, depth: float, seed: int | Sequence[int] = 0, digits: int = 5
) -> PasskeyExample:
    """A passkey sequence of exactly ``length`` tokens with the needle ``depth`` of the way into the filler.

    Args:
        tokenizer: a :class:`retnet.data.Tokenizer`.
        filler: filler text, or its token ids (encode once with ``tokenizer.encode`` when making many);
            repeated as needed, starting at a seeded offset.
        length: total tokens, answer included.
        depth: 0 puts the needle right after the intro, 1 right before the question.
        seed: seeds the passkey and the filler offset.
        digits: digits of the passkey.

    Raises:
        ValueError: empty filler, a depth outside [0, 1], ``digits`` < 1, or a length too short for the prompt.
    """
    ids = np.asarray(tokenizer.encode(filler), dtype=np.int64) if isinstance(filler, str) else np.asarray(filler)
    if ids.size == 0:
        raise ValueError("filler is empty; give some filler text")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth={depth} is invalid; it must be in [0, 1]")
    if digits < 1:
        raise ValueError(f"digits={digits} is invalid; it must be >= 1")
    rng = np.random.default_rng(seed)
    key = int(rng.integers(10 ** (digits - 1), 10**digits))
    offset = int(rng.integers(ids.size))
    parts = [tokenizer.encode(t) for t in (PASSKEY_INTRO, PASSKEY_NEEDLE.format(key=key), PASSKEY_QUESTION, f" {key}")]
    intro, needle, question, answer = (np.asarray(p, dtype=np.int64) for p in parts)
    room = length - sum(p.size for p in (intro, needle, question, answer))
    if room < 0:
        raise ValueError(f"length={length} is too short: the passkey prompt alone takes {length - room} tokens")
    stream = ids[(offset + np.arange(room)) % ids.size]  # the filler from the seeded offset, repeated as needed
    before = int(round(depth * room))
    seq = np.concatenate([intro, stream[:before], needle, stream[before:], question, answer])
    return PasskeyExample(seq, length - answer.size, key, intro.size + before)


@torch.no_grad()
def passkey_accuracy(
    model: nn.Module,
    tokenizer,
    filler: str | np.ndarray,
    *,
    lengths: Sequence[int],
    depths: Sequence[float],
    trials: int = 5,
    seed: int = 0,
    split: int = TEST,
    precision: str = "fp32",
    form: str = "chunkwise",
    chunk_size: int = 64,
) -> list[dict]:
    """Passkey retrieval accuracy of a model at every (length, depth).

    Args:
        model: a RetNetForCausalLM or MixerLM using ``tokenizer``'s vocabulary.
        tokenizer: the model's tokenizer.
        filler: the filler text or its token ids (e.g. held-out tokens of the training corpus).
        lengths: sequence lengths in tokens.
        depths: needle depths in [0, 1].
        trials: sequences (different passkeys and filler offsets) per cell.
        seed: seeds the sequences.
        split: their seed stream (:data:`~retnet.compare.task_training.TEST` or ``VALIDATION``).
        precision: "fp32", "bf16" or "auto".
        form: forward form ("chunkwise", "parallel" or "recurrent"; baselines use their own path).
        chunk_size: chunkwise chunk size.

    Returns:
        One ``{"length", "depth", "accuracy", "trials"}`` per cell, lengths outer.
    """
    if trials < 1:
        raise ValueError(f"trials={trials} is invalid; it must be >= 1")
    if isinstance(filler, str):
        filler = np.asarray(tokenizer.encode(filler), dtype=np.int64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    for length in lengths:
        for depth in depths:
            hits = 0
            for trial in range(trials):
                ex = make_passkey(tokenizer, filler, length=length, depth=depth, seed=[seed, split, length, trial])
                ids = torch.from_numpy(ex.input_ids[None, :-1]).to(device)  # (1, L - 1): the last token is not input
                with autocast(precision, device):
                    logits = model(ids, form=form, chunk_size=chunk_size).logits  # (1, L - 1, vocab)
                guess = logits[0, ex.answer_start - 1 :].argmax(-1).cpu().numpy()
                hits += int(np.array_equal(guess, ex.answer_ids))
            rows.append({"length": length, "depth": depth, "accuracy": hits / trials, "trials": trials})
    model.train(was_training)
    return rows


def passkey_batches(tokenizer, filler: np.ndarray, *, length: int, batch_size: int, seed: int = 0
                    ) -> Callable[[int], Batch]:  # fmt: skip
    """Training batches for :func:`~retnet.compare.task_training.train_on_task`: step ``s`` draws ``batch_size``
    passkey sequences of ``length`` tokens at uniform depths, input the first ``length - 1`` tokens, the answer
    tokens the only targets.

    Raises:
        ValueError: a non-positive ``batch_size``, or what :func:`make_passkey` refuses.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid; it must be >= 1")
    make_passkey(tokenizer, filler, length=length, depth=0.0)  # refuse a bad length or filler before training

    def batch(step: int) -> Batch:
        ids = np.empty((batch_size, length), dtype=np.int64)
        targets = np.full((batch_size, length - 1), IGNORE_INDEX, dtype=np.int64)
        for i in range(batch_size):
            depth = float(np.random.default_rng([seed, TRAIN, step, i, 1]).random())  # apart from the key's stream
            ex = make_passkey(tokenizer, filler, length=length, depth=depth, seed=[seed, TRAIN, step, i])
            ids[i] = ex.input_ids
            targets[i, ex.answer_start - 1 :] = ex.answer_ids  # predicted one position before each answer token
        return torch.from_numpy(ids[:, :-1]), torch.from_numpy(targets)

    return batch
