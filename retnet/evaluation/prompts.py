"""Zero- and k-shot prompts of a multiple-choice task, and the (context, continuation) requests they give.

A k-shot prompt is k solved examples followed by the question, as lm-evaluation-harness builds it::

    ex_1.context + target_delimiter + ex_1.choices[ex_1.gold]
    + fewshot_delimiter + ... + fewshot_delimiter
    + doc.context

and each choice is scored as the continuation ``target_delimiter + choice``. The examples are drawn without
replacement from the task's few-shot pool, or, when it has none, from the other evaluated documents (never the
question itself). The draw for document i depends only on ``(seed, i)``, so a prompt does not change with the batch
size, the order of evaluation or the documents around it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .tasks import Doc, Task


@dataclass(frozen=True)
class Request:
    """One continuation to score: ``log p(continuation | context)``, for document ``doc`` and choice ``choice``."""

    context: str
    continuation: str
    doc: int
    choice: int


def fewshot_examples(task: Task, index: int, num_fewshot: int, seed: int) -> list[Doc]:
    """The ``num_fewshot`` solved examples shown before document ``index``.

    Raises:
        ValueError: ``num_fewshot`` negative, or larger than the documents available to draw from.
    """
    if num_fewshot < 0:
        raise ValueError(f"num_fewshot must be >= 0, got {num_fewshot}")
    if num_fewshot == 0:
        return []
    if task.fewshot_pool:
        candidates = list(task.fewshot_pool)
    else:
        candidates = [d for i, d in enumerate(task.docs) if i != index]
    if num_fewshot > len(candidates):
        raise ValueError(
            f"task {task.name}: num_fewshot {num_fewshot} is more than the {len(candidates)} document(s) to draw "
            "examples from (add a fewshot split or lower --num-fewshot)"
        )
    # One generator per document: its examples depend on (seed, index) alone.
    rng = random.Random(seed * 1_000_003 + index)
    return rng.sample(candidates, num_fewshot)


def build_context(task: Task, index: int, num_fewshot: int = 0, seed: int = 0) -> str:
    """The prompt of document ``index`` with ``num_fewshot`` examples (see the module docstring)."""
    shots = [
        ex.context + task.target_delimiter + ex.choices[ex.gold]
        for ex in fewshot_examples(task, index, num_fewshot, seed)
    ]
    return task.fewshot_delimiter.join([*shots, task.docs[index].context])


def build_requests(task: Task, num_fewshot: int = 0, seed: int = 0) -> list[Request]:
    """Every (document, choice) continuation of ``task``, documents in file order, choices in their order."""
    requests = []
    for i, doc in enumerate(task.docs):
        context = build_context(task, i, num_fewshot, seed)
        for j, choice in enumerate(doc.choices):
            requests.append(Request(context, task.target_delimiter + choice, i, j))
    return requests
