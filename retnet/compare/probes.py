"""The recall probes and length extrapolation of a comparison: what runs, how the results are keyed and reported.

**MQAR** (:mod:`retnet.compare.mqar`) and **passkey retrieval** (:mod:`retnet.compare.passkey`) are tasks, not
language modelling: every architecture trains a fresh *task model* on each of them, the comparison's entry at a
small shape shared by all (``probes.task_layers`` layers of width ``probes.task_hidden_size`` with
``probes.task_heads`` heads, the value and FFN widths in the ratio of the comparison's RetNet row, the baselines
matched to RetNet's non-embedding parameters as in the comparison). This follows Arora et al. (two layers, fixed
width, many steps): recall is learned or not by the mixer alone, at a size small enough to train many models.
Each task model trains at every rate of ``probes.task_lrs``, on the comparison's path (compiled blocks where it
compiles; scoring runs them eagerly), and stops early once its validation accuracy reaches
``probes.task_stop_accuracy``; the rate whose model scores the highest mean accuracy on validation examples (a seed
stream of their own, :mod:`retnet.compare.task_training`) is reported, with the sweep beside it. MQAR trains and
tests on the grid ``mqar_seq_lens`` × ``mqar_pairs``; passkey trains at ``passkey_train_length`` tokens with filler
from the training split of ``passkey_corpus`` and is tested at every ``passkey_lengths`` × ``passkey_depths`` with
filler from its held-out split, so lengths past the training length measure whether retrieval carries over.

**Length extrapolation** (:mod:`retnet.compare.extrapolation`) scores each entry's trained language model.

Every (probe, entry, rate) result is a record of the results file (role ``"probe"``), keyed by what it measured,
so probes spread over several commands report together and a re-run skips what is there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .mqar import MQARTask, evaluate_mqar, mqar_batches, mqar_vocabulary
from .passkey import passkey_accuracy, passkey_batches
from .task_training import VALIDATION, autocast, train_on_task

logger = logging.getLogger(__name__)

PROBES = ("mqar", "passkey", "extrapolation")
TASK_PROBES = ("mqar", "passkey")  # trained on their task at the task models' shape
TASK_RULE = (
    "highest mean accuracy on validation examples (a diverged rate counts as 0; ties: a rate that trained, then the "
    "smaller)"
)


@dataclass
class ProbeSection:
    """Recall probes and length extrapolation of a comparison (run after training, for the selected entries).

    Attributes:
        run: the probes to run, some of ``PROBES`` (``retnet compare --probes``); empty runs none.
        task_hidden_size: width of the task models (MQAR and passkey).
        task_layers: their depth.
        task_heads: their heads (RetNet's retention heads and the attention-like baselines' heads).
        task_lrs: peak learning rates each task model trains at; the best on validation examples is reported.
        task_stop_accuracy: a task model stops training at the first check (every 5 % of its steps) where its
            mean validation accuracy (the rate rule's examples) reaches this; None trains every step.
        workers: task models trained at once, each in its own process (1: one after another in this process);
            where they run, not what they compute, so no result's key holds it.
        mqar_vocab_size: MQAR vocabulary V (the task models' vocabulary for MQAR).
        mqar_seq_lens: sequence lengths T of the MQAR grid.
        mqar_pairs: key-value pair counts P of the grid; settings with 4P > T (not every key queried) are left out.
        mqar_steps: MQAR training steps (cycling over the grid's settings).
        mqar_batch_size: MQAR examples per step.
        mqar_examples: evaluation examples per setting (validation and test alike).
        passkey_train_length: passkey training sequence length (tokens).
        passkey_steps: passkey training steps.
        passkey_batch_size: passkey sequences per step.
        passkey_lengths: passkey test sequence lengths (tokens).
        passkey_depths: test needle depths in [0, 1].
        passkey_trials: test sequences per (length, depth).
        passkey_corpus: filler: "" the in-domain corpus, else one of ``compare.out_of_domain``.
        extrapolation_factor: windows of this many times ``data.seq_len``.
        extrapolation_windows: windows averaged per position.
        extrapolation_corpus: "" the in-domain held-out split, else one of ``compare.out_of_domain``.
    """

    run: list[str] = field(default_factory=list)
    task_hidden_size: int = 128
    task_layers: int = 2
    task_heads: int = 2
    task_lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2])
    task_stop_accuracy: float | None = 0.99
    workers: int = 1
    mqar_vocab_size: int = 8192
    mqar_seq_lens: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    mqar_pairs: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    mqar_steps: int = 8000
    mqar_batch_size: int = 64
    mqar_examples: int = 256
    passkey_train_length: int = 1024
    passkey_steps: int = 1500
    passkey_batch_size: int = 16
    passkey_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384, 32768])
    passkey_depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    passkey_trials: int = 5
    passkey_corpus: str = ""
    extrapolation_factor: int = 8
    extrapolation_windows: int = 8
    extrapolation_corpus: str = ""

    def validate(self) -> None:
        """Check the values.

        Raises:
            ValueError: an unknown probe, a non-positive size, a depth outside [0, 1], no rates, or an empty
                MQAR grid.
        """
        unknown = [p for p in self.run if p not in PROBES]
        if unknown:
            raise ValueError(f"unknown probe(s) {unknown} in probes.run; expected some of {', '.join(PROBES)}")
        for name in ("task_hidden_size", "task_layers", "task_heads", "workers", "mqar_steps", "mqar_batch_size",
                     "mqar_examples", "passkey_train_length", "passkey_steps", "passkey_batch_size", "passkey_trials",
                     "extrapolation_factor", "extrapolation_windows"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"config probes.{name}={getattr(self, name)!r} is invalid; it must be >= 1")
        if self.task_hidden_size % self.task_heads:
            raise ValueError(f"config probes.task_hidden_size={self.task_hidden_size} is not a multiple of "
                             f"probes.task_heads={self.task_heads}")  # fmt: skip
        if self.task_stop_accuracy is not None and not 0 < self.task_stop_accuracy <= 1:
            raise ValueError(f"config probes.task_stop_accuracy={self.task_stop_accuracy!r} is invalid; give an "
                             "accuracy in (0, 1] or null")  # fmt: skip
        if not self.task_lrs or any(not lr > 0 for lr in self.task_lrs):
            raise ValueError(f"config probes.task_lrs={self.task_lrs} is invalid; give one or more rates > 0")
        mqar_vocabulary(self.mqar_vocab_size)
        if not self.mqar_tasks():
            raise ValueError(
                f"config probes.mqar_seq_lens={self.mqar_seq_lens} and probes.mqar_pairs={self.mqar_pairs} hold no "
                "setting with 4 × pairs <= sequence length"
            )
        if any(not 0 <= d <= 1 for d in self.passkey_depths):
            raise ValueError(f"config probes.passkey_depths={self.passkey_depths} is invalid; depths are in [0, 1]")

    def mqar_tasks(self) -> list[MQARTask]:
        """The MQAR grid: every (T, P) with room to query all P keys."""
        keys = len(mqar_vocabulary(self.mqar_vocab_size)[0])
        return [MQARTask(t, p) for t in self.mqar_seq_lens for p in self.mqar_pairs if 4 * p <= t and p <= keys]


def accuracy_table(rows: Sequence[dict], row_key: str, col_key: str, title: str = "") -> str:
    """A Markdown table of ``accuracy`` with one row per ``row_key`` value and one column per ``col_key`` value."""
    row_vals = list(dict.fromkeys(r[row_key] for r in rows))
    col_vals = list(dict.fromkeys(r[col_key] for r in rows))
    cell = {(r[row_key], r[col_key]): r["accuracy"] for r in rows}
    lines = [f"| {title or row_key} | " + " | ".join(f"{col_key} {c}" for c in col_vals) + " |"]
    lines.append("|" + "---|" * (len(col_vals) + 1))
    for rv in row_vals:
        vals = [f"{cell[(rv, c)]:.1%}" if (rv, c) in cell else "—" for c in col_vals]
        lines.append(f"| {rv} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


# ---- the task models -----------------------------------------------------------------------------------------------
def task_models(config, vocab_size: int) -> dict:
    """``{entry: MatchedModel}``: every entry of ``compare.archs`` at the task shape (module docstring).

    Args:
        config: the comparison (a CompareConfig).
        vocab_size: the task's vocabulary (MQAR's, or the tokenizer's for passkey).

    Raises:
        ValueError: a shape the comparison's RetNet row cannot be scaled to, or sizes that cannot be matched.
    """
    from ..training.build import model_config
    from .archs import match_parameters

    p, m = config.probes, config.model
    base = model_config(m, vocab_size)
    fields = {"hidden_size": p.task_hidden_size, "num_hidden_layers": p.task_layers, "num_heads": p.task_heads}
    for name in ("value_dim", "ffn_dim"):
        scaled = getattr(base, name) * p.task_hidden_size / base.hidden_size
        if scaled != int(scaled) or int(scaled) % p.task_heads:
            raise ValueError(f"the RetNet row's {name}={getattr(base, name)} does not scale to the task width "
                             f"{p.task_hidden_size} in {p.task_heads} heads")  # fmt: skip
        fields[name] = int(scaled)
    small = dataclasses.replace(m, **fields)
    baseline = dataclasses.replace(config.baseline, num_heads=p.task_heads)
    with torch.device("meta"):
        return match_parameters(config.compare.archs, model_config(small, vocab_size), baseline,
                                ffn_multiple=config.compare.ffn_multiple,
                                small_head_factor=config.compare.small_head_factor)  # fmt: skip


def choose_rate(per_rate: Mapping[float, dict]) -> dict:
    """The reported result of a task probe: the rate of :data:`TASK_RULE` and its test accuracy, with the sweep.

    Args:
        per_rate: ``{lr: {"train", "validation", "accuracy"}}`` (``validation``: mean validation accuracy, None
            where training diverged).

    Returns:
        ``{"lr", "rule", "sweep": [{"lr", "validation", "final_loss"}], "accuracy", "train"}``.
    """
    rates = sorted(per_rate)
    # a diverged rate counts as nothing learned and loses ties to one that trained
    best = max(rates, key=lambda lr: (per_rate[lr]["validation"] or 0.0, per_rate[lr]["validation"] is not None, -lr))
    sweep = [{"lr": lr, "validation": per_rate[lr]["validation"], "final_loss": per_rate[lr]["train"]["final_loss"]}
             for lr in rates]  # fmt: skip
    return {"lr": best, "rule": TASK_RULE, "sweep": sweep, "accuracy": per_rate[best]["accuracy"],
            "train": per_rate[best]["train"]}  # fmt: skip


# ---- running the probes of a comparison ----------------------------------------------------------------------------
_PREFIX = {"mqar": ("mqar_", "task_"), "passkey": ("passkey_", "task_"), "extrapolation": ("extrapolation_",)}


def _probe_fields(section: ProbeSection, probe: str) -> dict:
    """The settings of ``probe`` (the section's fields with its prefixes): part of its results' keys."""
    return {k: v for k, v in dataclasses.asdict(section).items() if k.startswith(_PREFIX[probe])}


def _task_optim(config, probe: str, lr: float):
    """The optimizer section of a task model: the recipe's AdamW at ``lr``, 5 % warm-up, decaying over its steps."""
    steps = config.probes.mqar_steps if probe == "mqar" else config.probes.passkey_steps
    return dataclasses.replace(config.optim, lr=lr, warmup_steps=max(1, round(0.05 * steps)), decay_steps=0)


def _task_key(config, probe: str, name: str, model_config, lr: float) -> str:
    """The key of one task model's result: its model, optimizer, probe settings, seed, numerics and (passkey) data."""
    from .entries import _NOT_IN_KEY, run_key

    doc = {
        "probe": probe,
        "entry": name,
        "model_config": model_config.to_dict(),
        # the other rates of the sweep do not change this model: adding a rate keeps the others' results
        "fields": {k: v for k, v in _probe_fields(config.probes, probe).items() if k != "task_lrs"},
        "optim": dataclasses.asdict(_task_optim(config, probe, lr)),
        "seed": config.seed,
        "precision": config.precision,
        "form": config.form,
        "chunk_size": config.chunk_size,
    }
    if probe == "passkey":  # the tokenizer and the filler come from the data
        doc["data"] = {k: v for k, v in dataclasses.asdict(config.data).items() if k not in _NOT_IN_KEY["data"]}
    return run_key(doc)


def _task_vocab(config, probe: str, matched: Mapping) -> int:
    """The task models' vocabulary: MQAR's own, or the tokenizer's (as the comparison's models hold it)."""
    if probe == "mqar":
        return config.probes.mqar_vocab_size
    return int(next(iter(matched.values())).config.to_dict()["vocab_size"])


def _held(results, path: Path, key: str) -> dict | None:
    """The result kept under ``key`` in the results file or in ``path``, else None."""
    held = results.get(key)
    if held is not None:
        return held["result"]
    doc = json.loads(path.read_text()) if path.is_file() else {}
    return doc["result"] if doc.get("key") == key else None


def _keep(results, record: dict, path: Path, key: str, result: dict) -> None:
    """Keep ``result`` under ``key`` in ``path`` and in the results file (with ``record``'s fields)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "result": result}, indent=1) + "\n")
    if key not in results:
        results.add(key, {**record, "role": "probe", "result": result})


def _cached(results, record: dict, path: Path, key: str, compute) -> dict:
    """``compute()``'s result, kept under ``key`` in the results file (with ``record``'s fields) and in ``path``;
    reused from either while the key is the same."""
    result = _held(results, path, key)
    if result is None:
        result = compute()
    _keep(results, record, path, key, result)
    return result


@dataclass(frozen=True)
class _TaskJob:
    """One task model to train: a probe, an entry, a rate, where its result goes."""

    probe: str
    name: str
    lr: float
    model_config: object
    dataset_dir: str | None  # passkey's filler corpus
    key: str
    path: Path

    def record(self, section: ProbeSection) -> dict:
        return {"name": self.name, "probe": self.probe, "fields": _probe_fields(section, self.probe), "lr": self.lr}


def _train_task_model(config, job: _TaskJob, device: str) -> dict:
    """Build, train and score one task model (in this process or in a worker)."""
    from ..data import PreparedDataset
    from .archs import build_model

    torch.manual_seed(config.seed)
    model = build_model(job.model_config).to(device)
    dataset = PreparedDataset(job.dataset_dir) if job.dataset_dir else None
    return _train_and_score(config, job.probe, model, job.lr, dataset)


def _set_worker_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def _train_task_models(config, jobs: list[_TaskJob], device: str):
    """Yield ``(job, result)`` for every job as it finishes: one after another here, or ``probes.workers`` at once
    in spawned processes (small models leave a GPU mostly idle, so several train side by side), the host's cores
    shared among them."""
    workers = min(config.probes.workers, len(jobs))
    if workers <= 1:
        for job in jobs:
            yield job, _train_task_model(config, job, device)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_set_worker_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(_train_task_model, config, job, device): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def finished_probes(config, results, matched: Mapping, main_keys: Mapping) -> dict:
    """``{probe: {entry: result}}`` of every probe the results file holds for this comparison's entries.

    A task probe counts when the results file holds its model at every rate of ``probes.task_lrs`` (keys this config
    gives); an extrapolation result when it was measured on one of the entry's full runs (``main_keys[entry]``,
    tried in order) with this config's settings. So probes measured by separate commands report together.
    """
    out: dict[str, dict] = {}
    names = [n for n in config.compare.archs if n in matched]
    if not names:
        return out
    for probe in TASK_PROBES:
        models = task_models(config, _task_vocab(config, probe, matched))
        for name in names:
            records = {lr: results.get(_task_key(config, probe, name, models[name].config, lr))
                       for lr in config.probes.task_lrs}  # fmt: skip
            if all(r is not None for r in records.values()):
                out.setdefault(probe, {})[name] = choose_rate({lr: r["result"] for lr, r in records.items()})
    fields = _probe_fields(config.probes, "extrapolation")
    found = [r for r in results.records(role="probe") if r.get("probe") == "extrapolation"
             and r.get("fields") == fields]  # fmt: skip
    for name in names:
        own = [r for r in found if r["name"] == name]
        record = next((r for k in main_keys.get(name, ()) for r in own if r.get("run_key") == k), None)
        if record is not None:
            out.setdefault("extrapolation", {})[name] = record["result"]
    return out


def write_probe_reports(out: Mapping[str, dict], run_dir: Path) -> None:
    """``<run_dir>/probes/``: the accuracy tables and plots of MQAR and passkey, the extrapolation report."""
    from .extrapolation import write_extrapolation

    out_dir = run_dir / "probes"
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_task_reports(out, out_dir)
    if out.get("extrapolation"):
        write_extrapolation(out["extrapolation"], out_dir)


def _task_compile(config, model) -> bool | str:
    """How task models train: compiled blocks where the comparison's full runs compile (``compile``, resolved for the
    model's device), on ``compile_backend``; else eager. Like the worker count, not part of a result's key."""
    from ..training.trainer import resolve_compile

    return resolve_compile(config.compile, next(model.parameters()).device) and config.compile_backend


def _train_and_score(config, probe: str, model, lr: float, dataset) -> dict:
    """Train one task model at ``lr`` and score it: ``{"train", "validation", "accuracy"}`` (module docstring)."""
    p = config.probes
    numerics = dict(precision=config.precision, form=config.form, chunk_size=config.chunk_size)
    if probe == "mqar":
        tasks = p.mqar_tasks()
        batches = mqar_batches(tasks, batch_size=p.mqar_batch_size, vocab_size=p.mqar_vocab_size, seed=config.seed)
        steps = p.mqar_steps
    else:
        sep = dataset.sep_id
        train_filler, test_filler = (np.asarray(dataset.tokens(split), dtype=np.int64) for split in ("train", "val"))
        train_filler, test_filler = train_filler[train_filler != sep], test_filler[test_filler != sep]
        batches = passkey_batches(dataset.tokenizer, train_filler, length=p.passkey_train_length,
                                  batch_size=p.passkey_batch_size, seed=config.seed)  # fmt: skip
        steps = p.passkey_steps
    if probe == "mqar":
        score = dict(vocab_size=p.mqar_vocab_size, examples=p.mqar_examples, batch_size=p.mqar_batch_size,
                     seed=config.seed, **numerics)  # fmt: skip

        @torch.compiler.set_stance("force_eager")  # scoring runs eagerly, as below
        def validation():
            return evaluate_mqar(model, tasks, split=VALIDATION, **score)

    else:
        score = dict(depths=p.passkey_depths, trials=p.passkey_trials, seed=config.seed, **numerics)

        @torch.compiler.set_stance("force_eager")  # scoring runs eagerly, as below
        def validation():
            return passkey_accuracy(model, dataset.tokenizer, test_filler, lengths=[p.passkey_train_length],
                                    split=VALIDATION, **score)  # fmt: skip

    def solved() -> bool:
        return float(np.mean([r["accuracy"] for r in validation()])) >= p.task_stop_accuracy

    stop = {} if p.task_stop_accuracy is None else {"stop": solved, "check_every": max(1, steps // 20)}
    train = train_on_task(model, batches, steps=steps, optim=_task_optim(config, probe, lr),
                          log_every=max(1, steps // 100), compile=_task_compile(config, model), **stop,
                          **numerics)  # fmt: skip
    if train["diverged_at"] is not None:
        logger.warning("%s at lr %g diverged at step %d", probe, lr, train["diverged_at"])
        return {"train": train, "validation": None, "accuracy": []}
    # scoring runs the blocks eagerly: their graphs are compiled for training, and each test length and the forward
    # without gradients would recompile every block (up to dynamo's limit) for a few forward passes
    with torch.compiler.set_stance("force_eager"):
        if probe == "mqar":
            test = evaluate_mqar(model, tasks, **score)
        else:
            test = passkey_accuracy(model, dataset.tokenizer, test_filler, lengths=p.passkey_lengths, **score)
    return {"train": train, "validation": float(np.mean([r["accuracy"] for r in validation()])), "accuracy": test}


def run_probes(
    config,
    run_dir: Path,
    matched: Mapping,
    selected: list[str],
    datasets: Mapping[str, Path],
    trained: Mapping[str, tuple[str, Path]],
    results,
    main_keys: Mapping[str, list[str]],
) -> dict:
    """Run ``config.probes.run`` for the ``selected`` entries and write ``<run_dir>/probes/<probe>.{json,md,png}``.

    MQAR and passkey train task models (module docstring; ``probes.workers`` of them at once); extrapolation reads
    each entry's trained model. Each
    result is kept in the results file (role ``"probe"``) and in ``probes/<probe>/<entry>[/lr-<rate>].json``, and
    reused while its inputs are the same; the reports list every entry whose probes the results file holds.

    Args:
        config: the comparison (a CompareConfig).
        run_dir: the run folder.
        matched: ``{entry: MatchedModel}`` of the comparison's entries.
        selected: the entries to probe in this call.
        datasets: prepared datasets by corpus: ``""`` the in-domain one, else the ``compare.out_of_domain`` names.
        trained: ``{entry: (run key, exported model folder)}`` of the entries with a trained model in the folder.
        results: the comparison's :class:`~retnet.compare.entries.ResultsFile`.
        main_keys: ``{entry: keys of its full runs}`` (seed order), for the report's choice among results.

    Returns:
        ``{probe: {entry: result}}`` of every entry with results.
    """
    from ..data import PreparedDataset
    from .entries import run_key
    from .extrapolation import length_extrapolation
    from .harness import load_entry_model

    p, out_dir = config.probes, run_dir / "probes"
    device = torch.device("cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu")
    for corpus in (p.passkey_corpus, p.extrapolation_corpus):
        if corpus not in datasets:
            raise ValueError(f"probe corpus {corpus!r} is not '' (in-domain) or one of compare.out_of_domain")
    jobs = []
    for probe in (t for t in TASK_PROBES if t in p.run):
        dataset_dir = str(datasets[p.passkey_corpus]) if probe == "passkey" else None
        models = task_models(config, _task_vocab(config, probe, matched))
        for name in selected:
            for lr in p.task_lrs:
                config_of = models[name].config
                job = _TaskJob(probe, name, lr, config_of, dataset_dir, _task_key(config, probe, name, config_of, lr),
                               out_dir / probe / name / f"lr-{lr:g}.json")  # fmt: skip
                held = _held(results, job.path, job.key)
                if held is None:
                    jobs.append(job)
                else:
                    _keep(results, job.record(p), job.path, job.key, held)
    for job, result in _train_task_models(config, jobs, device.type):
        _keep(results, job.record(p), job.path, job.key, result)
        logger.info("%s %s lr %g: validation accuracy %s", job.probe, job.name, job.lr, result["validation"])
    if "extrapolation" in p.run:
        ds = PreparedDataset(datasets[p.extrapolation_corpus])
        stream = ds.tokens("val")
        for name in selected:
            if name not in trained:
                logger.warning("extrapolation: %s has no trained model in this run folder; skipped", name)
                continue
            entry_key, model_dir = trained[name]
            key = run_key({"entry": entry_key, "probe": _probe_fields(p, "extrapolation"),
                           "data": str(ds.manifest["tokenizer"]), "form": config.form})  # fmt: skip

            def score(model_dir=model_dir, name=name):
                model = load_entry_model(matched[name].config, model_dir, device)
                return length_extrapolation(model, stream, train_len=config.data.seq_len,
                                            factor=p.extrapolation_factor, windows=p.extrapolation_windows,
                                            form=config.form, chunk_size=config.chunk_size,
                                            autocast=autocast(config.precision, device))  # fmt: skip

            record = {"name": name, "probe": "extrapolation", "fields": _probe_fields(p, "extrapolation"),
                      "run_key": entry_key}  # fmt: skip
            _cached(results, record, out_dir / "extrapolation" / f"{name}.json", key, score)
    out = finished_probes(config, results, matched, main_keys)
    write_probe_reports(out, run_dir)
    return out


def _write_task_reports(out: Mapping[str, dict], out_dir: Path) -> None:
    from .archs import LABELS

    for probe, key_row, key_col in (("mqar", "seq_len", "num_pairs"), ("passkey", "length", "depth")):
        results = out.get(probe)
        if not results:
            continue
        (out_dir / f"{probe}.json").write_text(json.dumps(results, indent=1) + "\n")
        title = "MQAR" if probe == "mqar" else "Passkey retrieval"
        parts = [f"# {title} accuracy", "", f"Each architecture's task model at the rate of the rule: {TASK_RULE}.", ""]
        for name, r in results.items():
            sweep = ", ".join(f"{s['lr']:g}: " + ("diverged" if s["validation"] is None else f"{s['validation']:.1%}")
                              for s in r["sweep"])  # fmt: skip
            train = r.get("train") or {}
            stopped = f"; solved, stopped at step {train['stopped_at']:,}" if train.get("stopped_at") else ""
            heading = f"{LABELS.get(name, name)} (lr {r['lr']:g}; validation accuracy by rate: {sweep}{stopped})"
            parts += [f"## {heading}", ""]
            parts += [accuracy_table(r["accuracy"], key_row, key_col) if r["accuracy"] else "(every rate diverged)", ""]
        (out_dir / f"{probe}.md").write_text("\n".join(parts))
        _plot_accuracy(results, probe, out_dir / f"{probe}.png")


def _plot_accuracy(results: Mapping[str, dict], probe: str, path: Path) -> None:
    """MQAR: accuracy against pairs, one panel per sequence length; passkey: accuracy against length (mean over
    depths); a line per entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .archs import LABELS

    rows = {name: r["accuracy"] for name, r in results.items()}
    x_key, panel_key = ("num_pairs", "seq_len") if probe == "mqar" else ("length", None)
    panels = sorted({r[panel_key] for rs in rows.values() for r in rs}) if panel_key else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for name, rs in rows.items():
            xs = sorted({r[x_key] for r in rs if panel is None or r[panel_key] == panel})
            ys = [np.mean([r["accuracy"] for r in rs if r[x_key] == x and (panel is None or r[panel_key] == panel)])
                  for x in xs]  # fmt: skip
            ax.plot(xs, ys, marker="o", label=LABELS.get(name, name), linewidth=1.2)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("key-value pairs" if probe == "mqar" else "sequence length (tokens)")
        ax.set_title(f"T = {panel}" if panel is not None else "passkey retrieval (mean over depths)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
