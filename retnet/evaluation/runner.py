"""``retnet eval --tasks``: score every choice of every document, then accuracy and length-normalised accuracy.

The model is the native one (a run folder, checkpoint or exported model, loaded like ``retnet generate`` does), in
any retention form. All requests of a task are scored in one batched pass (:mod:`.scoring`); a progress bar on
stderr counts them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..data import Tokenizer
from .metrics import aggregate, document_metrics
from .prompts import build_requests
from .scoring import score_texts
from .tasks import Task, load_task


@dataclass
class TaskResult:
    """One task's metrics (means and standard errors, see :mod:`.metrics`) and what produced them."""

    name: str
    num_docs: int
    num_fewshot: int
    metrics: dict[str, float | None]
    path: str | None = None
    logprobs: list[list[float]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        """The JSON form (without the per-document log-likelihoods)."""
        return {"path": self.path, "num_docs": self.num_docs, "num_fewshot": self.num_fewshot, **self.metrics}


@dataclass
class TaskReport:
    """What ``retnet eval --tasks`` prints: the settings and every task's result."""

    model: str
    form: str
    num_fewshot: int
    seed: int
    tasks: list[TaskResult]

    def as_dict(self) -> dict:
        """The ``--json`` document: settings, then ``tasks`` keyed by task name (docs/evaluation.md)."""
        settings = {k: v for k, v in asdict(self).items() if k != "tasks"}
        return {**settings, "tasks": {t.name: t.as_dict() for t in self.tasks}}


def evaluate_task(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    task: Task,
    *,
    num_fewshot: int = 0,
    seed: int = 0,
    form: str = "chunkwise",
    chunk_size: int | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> TaskResult:
    """Evaluate one task (arguments as :func:`.scoring.score_tokens` and :func:`.prompts.build_requests`).

    Raises:
        ValueError: bad settings or a prompt that cannot be scored (see the functions named above).
    """
    requests = build_requests(task, num_fewshot, seed)
    scores = score_texts(
        model,
        tokenizer,
        [(r.context, r.continuation) for r in requests],
        form=form,
        chunk_size=chunk_size,
        batch_size=batch_size,
        max_length=max_length,
        on_batch=on_batch,
    )
    logprobs: list[list[float]] = [[] for _ in task.docs]
    for request, score in zip(requests, scores):
        logprobs[request.doc].append(score.logprob)
    per_doc = [document_metrics(lp, doc.choices, doc.gold) for lp, doc in zip(logprobs, task.docs)]
    return TaskResult(task.name, len(task.docs), num_fewshot, aggregate(per_doc), task.path, logprobs)


def count_requests(tasks: Sequence[Task]) -> int:
    """How many continuations the tasks hold (one per choice per document)."""
    return sum(len(doc.choices) for task in tasks for doc in task.docs)


def evaluate_task_files(
    model_path: str,
    task_paths: Sequence[str],
    *,
    num_fewshot: int = 0,
    seed: int = 0,
    form: str = "chunkwise",
    chunk_size: int | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    device: str = "cpu",
    progress: bool = False,
    trust_checkpoint: bool = False,
    allow_unverified: bool = False,
) -> TaskReport:
    """Load a trained model and evaluate it on JSONL task files (``retnet eval MODEL --tasks ...``).

    Args:
        model_path: run folder, checkpoint folder, exported model folder or Hugging Face directory.
        task_paths: task files in the format of :mod:`.tasks`.
        num_fewshot: solved examples before each question (:mod:`.prompts`).
        seed: seed of the few-shot draw (:mod:`.prompts`).
        form: ``"parallel"``, ``"chunkwise"`` or ``"recurrent"`` (scoring: :func:`.scoring.score_tokens`).
        chunk_size: chunk size of the chunkwise form.
        batch_size: rows per forward pass.
        max_length: keep at most this many tokens per row, the oldest context tokens dropped first (None: all).
        device: where the model runs.
        progress: show a progress bar on stderr.
        trust_checkpoint: see :func:`retnet.training.artifacts.load_trained`.
        allow_unverified: see :func:`retnet.training.artifacts.load_trained`.

    Raises:
        FileNotFoundError: a missing model or task file.
        ValueError: a malformed task file, two tasks of one name, or bad settings.
    """
    from tqdm import tqdm

    from ..training.artifacts import load_trained

    if not task_paths:
        raise ValueError("no task file given")
    tasks = [load_task(p) for p in task_paths]
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"two task files share the name(s) {repeated}; rename a file or set its header name")
    for task in tasks:  # fail on an impossible few-shot setting before loading the model
        build_requests(task, num_fewshot, seed)
    trained = load_trained(
        model_path, device=device, trust_checkpoint=trust_checkpoint, allow_unverified=allow_unverified
    )
    results = []
    with tqdm(total=count_requests(tasks), desc="eval", unit=" choices", file=sys.stderr, disable=not progress) as bar:
        for task in tasks:
            bar.set_postfix_str(task.name)
            results.append(
                evaluate_task(
                    trained.model,
                    trained.tokenizer,
                    task,
                    num_fewshot=num_fewshot,
                    seed=seed,
                    form=form,
                    chunk_size=chunk_size,
                    batch_size=batch_size,
                    max_length=max_length,
                    on_batch=bar.update,
                )
            )
    return TaskReport(str(model_path), form, num_fewshot, seed, results)
