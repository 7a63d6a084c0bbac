"""Accuracy, length-normalised accuracy and their standard errors, as lm-evaluation-harness defines them.

For one document with choice log-likelihoods ll_j:

- ``acc``: 1 if argmax_j ll_j is the gold choice (ties go to the first choice), else 0;
- ``acc_norm``: the same with ll_j / len(choice_j), the choice's length in characters (without the delimiter);
- ``acc_bytes``: the same with ll_j / the choice's UTF-8 bytes.

Each metric is a mean over documents; its standard error is the sample standard deviation (n − 1) over √n, and
None for a single document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

METRICS = ("acc", "acc_norm", "acc_bytes")


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value, the first one on ties."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def document_metrics(logprobs: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, int]:
    """``acc``, ``acc_norm`` and ``acc_bytes`` (0 or 1) of one document.

    Raises:
        ValueError: the log-likelihoods and choices differ in number, or a choice is empty.
    """
    if len(logprobs) != len(choices):
        raise ValueError(f"{len(logprobs)} log-likelihoods for {len(choices)} choices")
    if any(not c for c in choices):
        raise ValueError("a choice is empty; its normalised log-likelihood is undefined")
    chars = [lp / len(c) for lp, c in zip(logprobs, choices)]
    nbytes = [lp / len(c.encode("utf-8")) for lp, c in zip(logprobs, choices)]
    return {
        "acc": int(argmax(logprobs) == gold),
        "acc_norm": int(argmax(chars) == gold),
        "acc_bytes": int(argmax(nbytes) == gold),
    }


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and its standard error (sample standard deviation over √n; None for n = 1).

    Raises:
        ValueError: no values.
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = sum(values) / n
    if n == 1:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def aggregate(per_doc: Sequence[dict[str, int]]) -> dict[str, float | None]:
    """``{metric: mean, metric_stderr: standard error}`` over documents, for every metric of :data:`METRICS`."""
    out: dict[str, float | None] = {}
    for name in METRICS:
        out[name], out[f"{name}_stderr"] = mean_and_stderr([d[name] for d in per_doc])
    return out
