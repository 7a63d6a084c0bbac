"""The results file of a comparison: one record per trained model run, keyed by the hash of its resolved config.

A *model run* is one architecture trained once: its matched model config, the recipe with the run's own seed,
learning rate and step count, the data and the evaluation settings. :func:`run_key` hashes exactly that (and
nothing about where it ran: folders, caches, worker counts, checkpoint cadence), so a finished run is recognised
on any machine. :class:`ResultsFile` holds the records; a comparison skips every run whose key it finds, which
lets a study be spread over several GPU commands on different days when the file is kept (and committed)
between them. The probes' results are records too (role ``"probe"``, keyed by what they measured). Seeds of the
same architecture are summarised by :func:`seed_summary` (mean and spread).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections.abc import Iterable
from pathlib import Path

from .archs import LABELS, OWN_FIELDS, BaselineSettings, mixer_of

# Settings that say where or how a run happened, not what it computed, are left out of the key: folders, caches,
# workers, checkpoint cadence, and compilation with its memory budget (compiled blocks compute the same function; an
# architecture whose mixer does not compile can then run eager in the same study). The scaling section only plans runs:
# each scaling run's own model and step count are in its key.
_NOT_IN_KEY = {
    "compare": ("archs", "out_dir", "seeds", "results_file"),
    "data": ("cache_dir", "fetch", "workers"),
    "": (
        "threads",
        "tensorboard",
        "checkpoint",
        "probes",
        "sweep",
        "scaling",
        "name",
        "compile",
        "compile_backend",
        "activation_memory_budget",
    ),
}


def run_config(config, name: str, model_config) -> dict:
    """The resolved config of one model run: ``config`` (that run's recipe) without placement, plus the model.

    Args:
        config: the run's :class:`~retnet.compare.CompareConfig` (its own seed, learning rate and steps).
        name: the entry (see :data:`retnet.compare.archs.ENTRIES`).
        model_config: the entry's matched RetNetConfig or MixerLMConfig.
    """
    doc = config.to_dict()
    for section, keys in _NOT_IN_KEY.items():
        target = doc.get(section, {}) if section else doc
        for key in keys:
            target.pop(key, None)
    # another architecture's own settings do not change this run: they are hashed at their defaults
    defaults = BaselineSettings()
    for arch, keys in OWN_FIELDS.items():
        if arch != mixer_of(name) and "baseline" in doc:
            doc["baseline"].update({key: getattr(defaults, key) for key in keys})
    return {"entry": name, "model_config": model_config.to_dict(), "recipe": doc}


def run_key(run: dict) -> str:
    """16 hex digits of the SHA-256 of ``run`` as canonical JSON (sorted keys)."""
    text = json.dumps(run, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ResultsFile:
    """A JSON file ``{"entries": {key: record}}`` of finished model runs, rewritten atomically on every addition.

    Args:
        path: the file; missing means empty.

    Raises:
        ValueError: a file that is not a results file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            doc = json.loads(self.path.read_text())
            if not isinstance(doc, dict) or not isinstance(doc.get("entries"), dict):
                raise ValueError(f"{self.path} is not a comparison results file (no 'entries' mapping)")
            self.entries = doc["entries"]

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str) -> dict | None:
        """The record of run ``key``, or None."""
        return self.entries.get(key)

    def add(self, key: str, record: dict) -> None:
        """Store ``record`` under ``key`` and rewrite the file."""
        self.entries[key] = record
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".partial")
        tmp.write_text(json.dumps({"entries": self.entries}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def merge(self, other: ResultsFile) -> tuple[list[str], list[str]]:
        """Add the runs of ``other`` that this file lacks (one rewrite); a key both hold keeps this file's record.

        Returns:
            ``(added, differing)``: the keys taken from ``other``, and the keys both files hold with different
            records (the same config trained twice, on machines whose numbers differ).
        """
        added = [key for key in other.entries if key not in self.entries]
        differing = [key for key in other.entries if key in self.entries and other.entries[key] != self.entries[key]]
        if added:
            self.entries.update({key: other.entries[key] for key in added})
            self._write()
        return added, differing

    def records(self, *, role: str | None = None, keys: Iterable[str] | None = None) -> list[dict]:
        """Records with ``role`` ("main", "sweep", "probe" or "scaling"), optionally only those of ``keys``."""
        chosen = self.entries if keys is None else {k: self.entries[k] for k in keys if k in self.entries}
        return [r for r in chosen.values() if role is None or r.get("role") == role]


def _mean_spread(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def seed_summary(records: Iterable[dict]) -> dict[str, dict]:
    """Mean and standard deviation over seeds of each entry's perplexities.

    Args:
        records: results-file records of role "main" (each with ``name``, ``seed`` and ``result["eval"]``).

    Returns:
        ``{name: {"seeds": [...], "in_domain": (mean, std), "out_of_domain": {corpus: (mean, std)}}}``; the
        spread of a single seed is 0.
    """
    by_name: dict[str, list[dict]] = {}
    for r in records:
        by_name.setdefault(r["name"], []).append(r)
    out = {}
    for name, runs in by_name.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        corpora = list(dict.fromkeys(c for r in runs for c in r["result"]["eval"]["out_of_domain"]))
        out[name] = {
            "seeds": [r["seed"] for r in runs],
            "in_domain": _mean_spread([r["result"]["eval"]["in_domain"]["perplexity"] for r in runs]),
            "out_of_domain": {
                c: _mean_spread([r["result"]["eval"]["out_of_domain"].get(c, {}).get("perplexity", math.nan)
                                 for r in runs])
                for c in corpora
            },
        }  # fmt: skip
    return out


def seed_table(summary: dict[str, dict], names: Iterable[str], ood: list[str]) -> str:
    """Markdown: perplexity mean ± standard deviation over seeds, a row per entry present in ``summary`` (an entry
    of one seed shows its perplexities alone: one run has no spread to show)."""
    header = ["Method", "Seeds", "In-domain", *ood]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        s = summary.get(name)
        if s is None:
            continue
        cells = [s["in_domain"], *(s["out_of_domain"].get(c, (math.nan, math.nan)) for c in ood)]
        spread = len(s["seeds"]) > 1
        text = [("—" if not math.isfinite(m) else f"{m:.2f} ± {d:.2f}" if spread else f"{m:.2f}") for m, d in cells]
        lines.append(f"| {LABELS.get(name, name)} | {', '.join(map(str, s['seeds']))} | " + " | ".join(text) + " |")
    return "\n".join(lines)
