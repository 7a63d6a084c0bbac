"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"): examples, training batches and scoring.

One example of ``T`` tokens over a vocabulary of ``V``::

    k1 v1 k2 v2 ... kP vP | _ _ kq vq _ _ kr vr _ ...
    '--- P key-value pairs --' '------- queries among blanks --------'

Token 0 is the blank filler, keys come from ``[1, 1 + (V - 1) // 2)`` and values from the rest. The ``P`` keys of
an example are distinct; values are drawn independently (with repeats), so chance accuracy is one over the number
of values. Each query repeats one of the keys (every key at most once) followed by its value; the only scored
targets are those values, predicted at the query key's position (the next-token convention of
:meth:`retnet.model.CausalLM.forward`, other targets -100). A model can answer only by recalling the pair from
the context, which a fixed-size state must have kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..model.loss import IGNORE_INDEX
from .task_training import TEST, TRAIN, Batch, autocast, count_correct

BLANK = 0  # the filler token


@dataclass(frozen=True)
class MQARTask:
    """One MQAR setting: ``num_pairs`` key-value pairs in sequences of ``seq_len`` tokens."""

    seq_len: int
    num_pairs: int


@dataclass
class MQARData:
    """A batch of MQAR examples.

    Attributes:
        input_ids: ``(N, T)`` int64 token ids.
        targets: ``(N, T)`` int64 next-token targets: the paired value at every query key, -100 elsewhere.
    """

    input_ids: torch.Tensor
    targets: torch.Tensor

    @property
    def num_queries(self) -> int:
        """Scored targets in the batch."""
        return int((self.targets != IGNORE_INDEX).sum())


def mqar_vocabulary(vocab_size: int) -> tuple[range, range]:
    """The key and value token ranges of an MQAR vocabulary of ``vocab_size`` (token 0 is the blank).

    Raises:
        ValueError: ``vocab_size`` below 3 (a blank, one key and one value).
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size={vocab_size} is too small for MQAR; it needs >= 3 (blank, keys, values)")
    split = 1 + (vocab_size - 1) // 2
    return range(1, split), range(split, vocab_size)


def make_mqar(
    num_examples: int,
    *,
    seq_len: int,
    num_pairs: int,
    vocab_size: int,
    seed: int | Sequence[int] = 0,
    num_queries: int | None = None,
) -> MQARData:
    """Deterministic MQAR examples (the layout is in the module docstring).

    Args:
        num_examples: N, examples in the batch.
        seq_len: T, tokens per example.
        num_pairs: P, key-value pairs in the context (the first ``2P`` tokens).
        vocab_size: V; keys and values split the tokens after the blank (:func:`mqar_vocabulary`).
        seed: seeds NumPy's generator (an int or a sequence of ints); equal arguments give equal examples.
        num_queries: queries per example (default: as many of the P keys as the rest of the sequence holds).

    Returns:
        :class:`MQARData` of ``(N, T)`` ids and targets.

    Raises:
        ValueError: a non-positive count, more pairs than keys, or a sequence too short for the queries.
    """
    for name, value in (("num_examples", num_examples), ("seq_len", seq_len), ("num_pairs", num_pairs)):
        if value < 1:
            raise ValueError(f"{name}={value} is invalid; it must be >= 1")
    keys_range, values_range = mqar_vocabulary(vocab_size)
    if num_pairs > len(keys_range):
        raise ValueError(
            f"num_pairs={num_pairs} exceeds the {len(keys_range)} distinct keys of vocab_size={vocab_size}"
        )
    slots = (seq_len - 2 * num_pairs) // 2  # two-token query slots after the context
    queries = min(num_pairs, slots) if num_queries is None else num_queries
    if queries < 1 or queries > num_pairs or queries > slots:
        raise ValueError(
            f"seq_len={seq_len} with num_pairs={num_pairs} leaves room for {max(slots, 0)} queries; "
            f"num_queries={queries} must be in [1, min(num_pairs, that)]"
        )
    rng = np.random.default_rng(seed)
    N, P, Q = num_examples, num_pairs, queries
    rows = np.arange(N)[:, None]
    # P distinct keys per row in random order: the P smallest of uniform draws, ordered by draw (argsort's first
    # P columns, without sorting the whole row)
    draws = rng.random((N, len(keys_range)))  # (N, K)
    smallest = np.argpartition(draws, P - 1, axis=1)[:, :P]  # (N, P), unordered
    order = np.argsort(np.take_along_axis(draws, smallest, axis=1), axis=1)
    keys = np.take_along_axis(smallest, order, axis=1) + keys_range.start  # (N, P) distinct per row
    values = rng.integers(values_range.start, values_range.stop, size=(N, P))  # (N, P)
    asked = np.argsort(rng.random((N, P)), axis=1)[:, :Q]  # (N, Q) which pairs are queried, in query order
    where = np.sort(np.argsort(rng.random((N, slots)), axis=1)[:, :Q], axis=1)  # (N, Q) slot of each query
    ids = np.full((N, seq_len), BLANK, dtype=np.int64)
    targets = np.full((N, seq_len), IGNORE_INDEX, dtype=np.int64)
    ids[:, 0 : 2 * P : 2], ids[:, 1 : 2 * P : 2] = keys, values
    pos = 2 * P + 2 * where  # (N, Q) position of each query key
    ids[rows, pos] = keys[rows, asked]
    ids[rows, pos + 1] = values[rows, asked]
    targets[rows, pos] = values[rows, asked]  # predicted at the key: the next token is its value
    return MQARData(torch.from_numpy(ids), torch.from_numpy(targets))


@torch.no_grad()
def evaluate_mqar(
    model: nn.Module,
    tasks: Sequence[MQARTask],
    *,
    vocab_size: int,
    examples: int = 256,
    batch_size: int = 64,
    seed: int = 0,
    split: int = TEST,
    precision: str = "fp32",
    form: str = "chunkwise",
    chunk_size: int = 64,
) -> list[dict]:
    """MQAR accuracy of ``model`` on fresh examples of each task.

    Args:
        split: the examples' seed stream (:data:`~retnet.compare.task_training.TEST` or ``VALIDATION``; training
            draws from ``TRAIN``).

    Returns:
        One ``{"seq_len", "num_pairs", "accuracy", "queries"}`` per task, in order.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    for task in tasks:
        correct = scored = 0
        for start in range(0, examples, batch_size):
            n = min(batch_size, examples - start)
            data = make_mqar(n, seq_len=task.seq_len, num_pairs=task.num_pairs, vocab_size=vocab_size,
                             seed=[seed, split, task.seq_len, task.num_pairs, start])  # fmt: skip
            with autocast(precision, device):
                logits = model(data.input_ids.to(device), form=form, chunk_size=chunk_size).logits  # (n, T, V)
            c, s = count_correct(logits.float(), data.targets.to(device))
            correct, scored = correct + c, scored + s
        rows.append({"seq_len": task.seq_len, "num_pairs": task.num_pairs, "accuracy": correct / scored,
                     "queries": scored})  # fmt: skip
    model.train(was_training)
    return rows


def mqar_batches(
    tasks: Sequence[MQARTask], *, batch_size: int, vocab_size: int, seed: int = 0
) -> Callable[[int], Batch]:
    """Training batches for :func:`~retnet.compare.task_training.train_on_task`: step ``s`` draws ``batch_size``
    fresh examples of ``tasks[s % len(tasks)]``.

    Raises:
        ValueError: no tasks or a non-positive ``batch_size``.
    """
    if not tasks or batch_size < 1:
        raise ValueError(f"MQAR training needs tasks ({len(tasks)} given) and batch_size >= 1 ({batch_size} given)")

    def batch(step: int) -> Batch:
        task = tasks[step % len(tasks)]
        data = make_mqar(batch_size, seq_len=task.seq_len, num_pairs=task.num_pairs, vocab_size=vocab_size,
                         seed=[seed, TRAIN, step])  # fmt: skip
        return data.input_ids, data.targets

    return batch
