"""Zero- and few-shot evaluation: multiple-choice tasks scored by log-likelihood on the native model.

- :mod:`.tasks`: the local JSONL task format (docs/evaluation.md) and its loader.
- :mod:`.prompts`: zero- and k-shot prompts, seeded.
- :mod:`.scoring`: batched log-likelihood of continuations, in any retention form.
- :mod:`.metrics`: accuracy, length-normalised accuracy, standard errors.
- :mod:`.runner`: ``retnet eval --tasks``.
- :mod:`.table3`: the paper's Table 3 layout.
- :mod:`.lm_eval_adapter` and :mod:`.lm_eval_cli`: the lm-evaluation-harness model ``retnet`` (needs ``lm-eval``,
  the ``eval`` extra; imported only on demand).
"""

from .metrics import aggregate, document_metrics, mean_and_stderr
from .prompts import Request, build_context, build_requests
from .runner import TaskReport, TaskResult, evaluate_task, evaluate_task_files
from .scoring import Score, encode_pair, score_texts, score_tokens
from .table3 import TABLE3, Row, format_table3, load_lm_eval_row, row_from_lm_eval, row_from_metrics
from .tasks import Doc, Task, load_task

__all__ = [
    "TABLE3",
    "Doc",
    "Request",
    "Row",
    "Score",
    "Task",
    "TaskReport",
    "TaskResult",
    "aggregate",
    "build_context",
    "build_requests",
    "document_metrics",
    "encode_pair",
    "evaluate_task",
    "evaluate_task_files",
    "format_table3",
    "load_lm_eval_row",
    "load_task",
    "mean_and_stderr",
    "row_from_lm_eval",
    "row_from_metrics",
    "score_texts",
    "score_tokens",
]
