"""The paper's Table 3 layout (zero- and few-shot accuracy): HS, BoolQ, COPA, PIQA, Winograd, Winogrande, SC, Avg.

A row comes from ``retnet eval --tasks`` results (a task file named after a column, e.g. ``copa.jsonl``, or with
that name in its header) or from an lm-evaluation-harness results file (``results_*.json``, the lm-eval task names
of :data:`LM_EVAL_TASKS`). HellaSwag reports length-normalised accuracy (``acc_norm``), the others accuracy
(``acc``), as is customary for these tasks; numbers are percentages. ``Avg`` is the mean of the columns present,
marked with ``*`` when some are missing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Column:
    """One column: its heading, the task names that fill it (local names and lm-eval's) and the metric shown."""

    heading: str
    names: tuple[str, ...]
    metric: str


TABLE3 = (
    Column("HS", ("hellaswag",), "acc_norm"),
    Column("BoolQ", ("boolq",), "acc"),
    Column("COPA", ("copa",), "acc"),
    Column("PIQA", ("piqa",), "acc"),
    Column("Winograd", ("winograd", "wsc273"), "acc"),
    Column("Winogrande", ("winogrande",), "acc"),
    Column("SC", ("storycloze", "story_cloze", "storycloze_2016", "storycloze_2018", "xstorycloze_en"), "acc"),
)
# The lm-evaluation-harness tasks of the seven columns (StoryCloze: the English part of XStoryCloze, which is the
# 2016 spring test set and, unlike lm-eval's storycloze_2016, needs no manual download).
LM_EVAL_TASKS = ("hellaswag", "boolq", "copa", "piqa", "wsc273", "winogrande", "xstorycloze_en")


@dataclass
class Row:
    """One line of the table: a label and the metric of each column present (fractions in [0, 1])."""

    label: str
    values: dict[str, float]
    unmatched: list[str] = field(default_factory=list)


def column_of(task_name: str) -> Column | None:
    """The column a task fills (matched case-insensitively by name), or None."""
    key = task_name.lower()
    for col in TABLE3:
        if key in col.names:
            return col
    return None


def row_from_metrics(label: str, tasks: Mapping[str, Mapping[str, float | None]]) -> Row:
    """A row from ``{task name: {metric: value}}``; tasks that fill no column are listed in ``unmatched``.

    Raises:
        ValueError: two tasks fill one column, or a task lacks its column's metric.
    """
    row = Row(label, {})
    for name, metrics in tasks.items():
        col = column_of(name)
        if col is None:
            row.unmatched.append(name)
            continue
        if col.heading in row.values:
            raise ValueError(f"two tasks fill the {col.heading} column of {label!r} (the second is {name})")
        value = metrics.get(col.metric)
        if value is None:
            raise ValueError(f"task {name} of {label!r} has no {col.metric} (the metric of column {col.heading})")
        row.values[col.heading] = float(value)
    return row


def row_from_lm_eval(results: Mapping, label: str | None = None) -> Row:
    """A row from an lm-evaluation-harness results document (the JSON that ``--output_path`` writes).

    Args:
        results: the parsed JSON: ``results`` maps task names to ``{"acc,none": ..., "acc_norm,none": ...}``.
        label: the row's label (default: the model arguments and the number of shots).

    Raises:
        ValueError: no ``results`` mapping, or see :func:`row_from_metrics`.
    """
    tasks = results.get("results") if isinstance(results, Mapping) else None
    if not isinstance(tasks, Mapping):
        raise ValueError("not an lm-evaluation-harness results file (it has no 'results' mapping)")
    metrics = {
        name: {key.split(",")[0]: v for key, v in values.items() if isinstance(v, int | float)}
        for name, values in tasks.items()
    }
    if label is None:
        config = results.get("config", {}) or {}
        shots = sorted({str(v) for k, v in (results.get("n-shot", {}) or {}).items() if column_of(k)})
        model = config.get("model_args") or config.get("model") or "model"
        if isinstance(model, str) and "pretrained=" in model:  # "pretrained=DIR,form=chunkwise"
            model = dict(kv.split("=", 1) for kv in model.split(",") if "=" in kv)
        if isinstance(model, Mapping):
            model = model.get("pretrained", "model")
        label = f"{model} {'/'.join(shots) or '?'}-shot"
    return row_from_metrics(label, metrics)


def load_lm_eval_row(path: str | Path, label: str | None = None) -> Row:
    """:func:`row_from_lm_eval` of a results file.

    Raises:
        FileNotFoundError / ValueError: a missing or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lm-eval results file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None
    return row_from_lm_eval(doc, label)


def format_table3(rows: Sequence[Row]) -> str:
    """The table as aligned Markdown, percentages with one decimal, ``–`` for a missing task, notes below.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("no rows to show")
    headings = ["", *(c.heading for c in TABLE3), "Avg"]
    lines = [headings]
    notes = []
    for row in rows:
        present = [row.values[c.heading] for c in TABLE3 if c.heading in row.values]
        cells = [f"{100 * row.values[c.heading]:.1f}" if c.heading in row.values else "–" for c in TABLE3]
        avg = f"{100 * sum(present) / len(present):.2f}" if present else "–"
        if present and len(present) < len(TABLE3):
            avg += "*"
        lines.append([row.label, *cells, avg])
        if row.unmatched:
            notes.append(f"{row.label}: not in Table 3: {', '.join(row.unmatched)}")
    widths = [max(len(line[i]) for line in lines) for i in range(len(headings))]

    def render(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "| " + " | ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]) + " |"

    out = [render(lines[0]), "|" + "|".join(["-" * (widths[0] + 2), *("-" * (w + 1) + ":" for w in widths[1:])]) + "|"]
    out += [render(cells) for cells in lines[1:]]
    if any(len(r.values) < len(TABLE3) for r in rows if r.values):
        notes.append("* average over the tasks present")
    notes.append("HS: acc_norm; the others: acc (percent)")
    return "\n".join(out + [""] + notes)
