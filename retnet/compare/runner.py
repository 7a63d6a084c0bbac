"""``run_comparison``: train every selected architecture on the same data with the same recipe, evaluate
in-domain and out-of-domain perplexity, and write the report (paper §3.4, Tables 5 and 6).

Run folder layout::

    compare_config.json        # the full config; a resumed run must match it
    data/in_domain/            # prepared in-domain dataset (tokenizer trained here)
    data/ood/<corpus>/         # each out-of-domain corpus, tokenised with the same tokenizer
    models.json                # matched configs and exact parameter counts
    <arch>/train/              # the trainer's checkpoints (resumable)
    <arch>/result.json         # written last: an entry with it is done and skipped on resume
    <arch>/run_key             # the key of the run the folder holds (retnet.compare.entries)
    <arch>/seed-<k>/           # the same for another seed of compare.seeds
    <arch>/sweep/lr-<lr>/      # a learning-rate sweep run (retnet.compare.sweep)
    entries.json               # every finished model run by key (compare.results_file; may live elsewhere)
    probes/                    # MQAR, passkey and length-extrapolation results (retnet.compare.probes)
    results.{json,md} loss_curves.png perplexity.png

Every stage is skipped when its output is complete, so an interrupted comparison continues where it stopped:
finished runs are not retrained (found by key in the results file, or in their folder) and an unfinished one
resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch

from ..model import RetNetConfig
from ..training.build import model_config
from ..utils.environment import environment_stamp
from .archs import LABELS, TABLE5, TABLE6, build_model, match_parameters
from .config import CompareConfig, save_config
from .entries import ResultsFile, run_config, run_key, seed_summary, seed_table
from .report import write_report
from .sweep import RULE, next_rate, pick_learning_rate, rate_source, sweep_config, sweep_table

logger = logging.getLogger(__name__)


def _corpus_slug(source: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(source).name or source)


def _capped_copy(source: Path, dest: Path, max_bytes: int) -> Path:
    """Write the first documents of ``source`` (sorted, at most ``max_bytes`` in total) as text files in ``dest``."""
    from ..data import iter_documents

    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    used = 0
    for i, (_, text) in enumerate(iter_documents(source)):
        if used >= max_bytes:
            break
        text = text[: max_bytes - used]
        (tmp / f"{i:06d}.txt").write_text(text, encoding="utf-8")
        used += len(text.encode("utf-8"))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def prepare_data(config: CompareConfig, run_dir: Path) -> tuple[Path, dict[str, Path]]:
    """Prepare the in-domain dataset (and its tokenizer) and each out-of-domain evaluation set.

    Returns:
        ``(in_domain_dir, {corpus: ood_dir})``; each is a prepared dataset folder (see :mod:`retnet.data`).
    """
    from ..data import prepare_dataset, read_manifest, resolve_source

    data = config.data
    cache = Path(data.cache_dir).expanduser()
    in_dir = run_dir / "data" / "in_domain"
    if not (in_dir / "manifest.json").is_file():
        source = resolve_source(data.corpus, cache, fetch=data.fetch)
        prepare_dataset(
            source, in_dir, tokenizer=data.tokenizer, vocab_size=data.vocab_size, val_fraction=data.val_fraction,
            seed=config.seed, workers=data.workers, bpe_train_bytes=config.compare.bpe_train_bytes,
            source_name=data.corpus,
        )  # fmt: skip
    tok_hash = read_manifest(in_dir)["tokenizer"]["hash"]
    ood = {}
    for corpus in config.compare.out_of_domain:
        out = run_dir / "data" / "ood" / _corpus_slug(corpus)
        if not (out / "manifest.json").is_file() or read_manifest(out)["tokenizer"]["hash"] != tok_hash:
            source = resolve_source(corpus, cache, fetch=data.fetch)
            text = _capped_copy(
                source, run_dir / "data" / "ood_text" / _corpus_slug(corpus), config.compare.ood_max_bytes
            )
            # the held-out half is scored; any part of a corpus never trained on is out-of-domain
            prepare_dataset(text, out, tokenizer_dir=in_dir / "tokenizer", val_fraction=0.5, workers=data.workers,
                            source_name=corpus)  # fmt: skip
            shutil.rmtree(text, ignore_errors=True)
        ood[corpus] = out
    return in_dir, ood


def _fetched_records(sources: list[str], cache_dir: str) -> dict[str, dict]:
    """What the cache records of each registered corpus among ``sources`` (its FETCHED.json): where the text came
    from (a registry package, a subset of one, or a corpus archive and its sha256)."""
    from ..data.corpora import CORPORA, corpus_dir

    out = {}
    for source in sources:
        record = corpus_dir(source, cache_dir) / "FETCHED.json"
        if source in CORPORA and not Path(source).expanduser().exists() and record.is_file():
            out[source] = json.loads(record.read_text())
    return out


def base_config(config: CompareConfig, vocab_size: int) -> RetNetConfig:
    """The RetNet row's config: what ``retnet train`` builds from ``config.model`` and the tokenizer's vocabulary."""
    return model_config(config.model, vocab_size)


def _check_resume(config: CompareConfig, run_dir: Path) -> None:
    path = run_dir / "compare_config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        new = config.to_dict()
        # what is selected, where results go, the sweep, the probes and compilation may change between calls; each
        # model run is keyed by its own config (retnet.compare.entries); the shared recipe must stay the same
        for doc in (old, new):
            section = doc.get("compare", {})
            for key in ("archs", "out_dir", "seeds", "results_file"):
                section.pop(key, None)
            for key in ("sweep", "probes", "scaling", "compile", "compile_backend", "activation_memory_budget"):
                doc.pop(key, None)
        if old != new:
            raise ValueError(
                f"{run_dir} holds a comparison with a different config; use another compare.out_dir or delete "
                "the folder"
            )
    save_config(config, path)


def _scores(losses: dict) -> dict:
    """Sweep losses as the rule scores them: a diverged run (None) is infinity."""
    return {lr: math.inf if loss is None else loss for lr, loss in losses.items()}


def _variant(config: CompareConfig, seed: int, lr: float) -> CompareConfig:
    return dataclasses.replace(config, seed=seed, optim=dataclasses.replace(config.optim, lr=lr))


class _Entries:
    """The model runs of one comparison: their keys, folders, and the results file that marks them done."""

    def __init__(self, config: CompareConfig, run_dir: Path, matched: dict, in_dir: Path, ood_dirs: dict) -> None:
        self.config, self.run_dir, self.matched, self.in_dir, self.ood_dirs = config, run_dir, matched, in_dir, ood_dirs
        self.results = ResultsFile(config.compare.results_file or run_dir / "entries.json")

    def key(self, cfg: CompareConfig, name: str) -> tuple[str, dict]:
        run = run_config(cfg, name, self.matched[name].config)
        return run_key(run), run

    def folder(self, name: str, seed: int, lr: float, role: str) -> Path:
        if role == "sweep":
            return self.run_dir / name / "sweep" / f"lr-{lr:g}"
        return self.run_dir / name if seed == self.config.seed else self.run_dir / name / f"seed-{seed}"

    def chosen_lr(self, name: str) -> tuple[float, dict | None]:
        """The learning rate of ``name``'s full runs and its own sweep (None without one, while unfinished, or when
        the rate is another entry's: :func:`~retnet.compare.sweep.rate_source`)."""
        sweep, source = self.config.sweep, rate_source(self.config, name)
        if not sweep.lrs:
            return self.config.optim.lr, None
        if source != name:
            return self.chosen_lr(source)[0], None
        losses = self.sweep(name, train=False)
        if losses is None:
            return self.config.optim.lr, None
        chosen = pick_learning_rate(_scores(losses))
        return chosen, {"losses": losses, "chosen": chosen}

    def sweep(self, name: str, train: bool) -> dict | None:
        """``{rate: validation loss}`` (None: diverged) of ``name``'s sweep: ``sweep.lrs``, then the rates
        :func:`~retnet.compare.sweep.next_rate` adds (at most ``sweep.extend``). ``train``: run what is unfinished;
        else None as soon as a run is missing from the results file."""
        sweep = self.config.sweep
        losses, pending = {}, list(sweep.lrs)
        while pending:
            cfg = sweep_config(self.config, pending.pop(0))
            if train:
                result = self.run(cfg, name, "sweep")
            else:
                record = self.results.get(self.key(cfg, name)[0])
                if record is None:
                    return None
                result = record["result"]
            losses[cfg.optim.lr] = result["val_loss"]  # None: diverged (kept as null in the JSON)
            if not pending and len(losses) < len(sweep.lrs) + sweep.extend:
                extra = next_rate(_scores(losses))
                pending += [] if extra is None else [extra]
        return losses

    def run(self, cfg: CompareConfig, name: str, role: str) -> dict:
        """The result of one model run: from the results file, a finished folder, or by training it now."""
        key, run = self.key(cfg, name)
        entry_dir = self.folder(name, cfg.seed, cfg.optim.lr, role)
        done, marker = entry_dir / "result.json", entry_dir / "run_key"
        record = self.results.get(key)
        if record is not None:
            if role == "main" and not done.is_file():  # a run finished elsewhere: its numbers join this report
                entry_dir.mkdir(parents=True, exist_ok=True)
                _write_json(done, record["result"])
            logger.info("%s (%s, seed %d, lr %g): done already, skipped", name, role, cfg.seed, cfg.optim.lr)
            return record["result"]
        if done.is_file():
            old = json.loads(done.read_text())
            if old.get("key", key) != key:
                raise ValueError(f"{entry_dir} holds run {old['key']}, not {key}; delete the folder to train this one")
            old["key"] = key  # a result written before runs were keyed: the folder's config is this one
            self.results.add(key, {"name": name, "role": role, "seed": cfg.seed, "lr": cfg.optim.lr, "run": run,
                                   "result": old})  # fmt: skip
            return old
        if marker.is_file() and marker.read_text().strip() != key:
            raise ValueError(
                f"{entry_dir} holds an unfinished run {marker.read_text().strip()}, not {key}; delete the folder"
            )
        entry_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(key + "\n")
        result = self._train(cfg, name, role, entry_dir) | {"key": key, "role": role, "seed": cfg.seed,
                                                              "lr": cfg.optim.lr}  # fmt: skip
        _write_json(done, result)
        self.results.add(key, {"name": name, "role": role, "seed": cfg.seed, "lr": cfg.optim.lr, "run": run,
                               "result": result})  # fmt: skip
        return result

    def _train(self, cfg: CompareConfig, name: str, role: str, entry_dir: Path) -> dict:
        from ..training import NonFiniteLossError
        from .harness import evaluate_entry, train_entry

        m = self.matched[name]
        logger.info("%s (%s, seed %d, lr %g): %s non-embedding parameters (%+.2f%% vs RetNet)", LABELS[name], role,
                    cfg.seed, cfg.optim.lr, f"{m.parameters:,}", 100 * m.deviation)  # fmt: skip
        torch.manual_seed(cfg.seed)
        model = build_model(m.config)
        start = time.time()
        try:
            if role == "sweep":
                try:
                    train = train_entry(model, cfg, self.in_dir, entry_dir / "train")
                    loss = evaluate_entry(model, self.in_dir, cfg, second_half=True)["loss"]
                except NonFiniteLossError as err:  # a diverged rate loses the sweep; the others still run
                    logger.warning("%s at lr %g diverged: %s", name, cfg.optim.lr, err)
                    train, loss = {"diverged": str(err)}, None
                # only the score is kept: the weights and optimizer state of every rate would fill the disk
                for heavy in ("checkpoints", "model"):
                    shutil.rmtree(entry_dir / "train" / heavy, ignore_errors=True)
                return {"name": name, "label": LABELS[name], "train": train, "val_loss": loss,
                        "wall_time_s": time.time() - start}  # fmt: skip
            train = train_entry(model, cfg, self.in_dir, entry_dir / "train")
            evaluation = {
                "in_domain": evaluate_entry(model, self.in_dir, cfg),
                "out_of_domain": {_corpus_slug(src): evaluate_entry(model, d, cfg) for src, d in self.ood_dirs.items()},
            }
        finally:
            del model
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        logger.info("%s: in-domain perplexity %.2f", LABELS[name], evaluation["in_domain"]["perplexity"])
        return {
            "name": name,
            "label": LABELS[name],
            "parameters": m.parameters,
            "total_parameters": m.total_parameters,
            "target_parameters": m.target,
            "config": m.config.to_dict(),
            "train": train,
            "eval": evaluation,
            "wall_time_s": time.time() - start,
        }


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def run_comparison(
    config: CompareConfig,
    *,
    prepare_only: bool = False,
    command: str = "",
    only: list[str] | None = None,
    sweep_only: bool = False,
) -> dict:
    """Run (or resume) a comparison; returns the results document (also written to the run folder).

    For each selected architecture: the learning-rate sweep when ``sweep.lrs`` names rates
    (:mod:`retnet.compare.sweep`), then one full run per seed (``compare.seeds``); a model run found in the results
    file (:mod:`retnet.compare.entries`) or finished in its folder is not trained again. Then the probes of
    ``probes.run``, and the report of every finished architecture of ``compare.archs``.

    Args:
        config: the comparison.
        prepare_only: stop after preparing the data (e.g. on a machine with network, before moving the run
            folder to a machine without).
        command: the command line, recorded in the results.
        only: train and probe only these of ``compare.archs`` in this call (the report still lists every finished
            one).
        sweep_only: stop each architecture after its sweep (a study split into shorter commands).

    Raises:
        ValueError: a run folder holding a different comparison, unmatchable sizes, or ``only`` naming an
            architecture outside ``compare.archs``.
    """
    from ..data import PreparedDataset

    c = config.compare
    outside = [a for a in only or [] if a not in c.archs]
    if outside:
        raise ValueError(f"--only names {outside}, which compare.archs ({', '.join(c.archs)}) does not hold")
    run_dir = Path(c.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(config, run_dir)
    in_dir, ood_dirs = prepare_data(config, run_dir)
    in_domain = PreparedDataset(in_dir)
    vocab, unique = in_domain.tokenizer.vocab_size, in_domain.manifest["splits"]["train"]["tokens"]
    matched = match_parameters(c.archs, base_config(config, vocab), config.baseline, ffn_multiple=c.ffn_multiple,
                               small_head_factor=c.small_head_factor)  # fmt: skip
    (run_dir / "models.json").write_text(
        json.dumps(
            {n: {"parameters": m.parameters, "total_parameters": m.total_parameters, "config": m.config.to_dict()}
             for n, m in matched.items()}, indent=2,
        ) + "\n"
    )  # fmt: skip
    recipe = {k: v for k, v in config.to_dict().items() if k not in ("compare", "baseline", "probes")}
    meta = {
        "preset": c.preset,
        "command": command,
        "in_domain": _corpus_slug(config.data.corpus),
        "out_of_domain": [_corpus_slug(corpus) for corpus in c.out_of_domain],
        "corpora": {
            "in_domain": config.data.corpus,
            "out_of_domain": list(c.out_of_domain),
            "fetched": _fetched_records([config.data.corpus, *c.out_of_domain], config.data.cache_dir),
        },
        "tokenizer": {"kind": config.data.tokenizer, "vocab_size": vocab},
        # epochs over the unique training tokens: at most 2 keeps any token from being seen more than twice
        "train": recipe | {"tokens": config.tokens, "epochs": config.tokens / unique},
        "environment": environment_stamp(),
    }
    if prepare_only:
        logger.info("data prepared under %s", run_dir / "data")
        return {"meta": meta, "results": {}}
    entries = _Entries(config, run_dir, matched, in_dir, ood_dirs)
    selected = [a for a in c.archs if a in only] if only else list(c.archs)
    for name in selected:
        source = rate_source(config, name)
        if source not in c.archs:
            raise ValueError(f"{name} trains at {source}'s swept rate (sweep.ablations={config.sweep.ablations!r}), "
                             f"but compare.archs does not hold {source}")  # fmt: skip
        entries.sweep(source, train=True)  # finished runs are skipped
        if sweep_only:
            continue
        lr = entries.chosen_lr(name)[0]
        for seed in config.seeds:
            entries.run(_variant(config, seed, lr), name, "main")
    return _report(config, entries, meta, selected)


@dataclasses.dataclass(frozen=True)
class _RecordedModel:
    """An architecture's matched model config as a results-file record holds it (``run["model_config"]``)."""

    doc: dict

    @property
    def config(self) -> _RecordedModel:
        return self

    def to_dict(self) -> dict:
        return self.doc


def rebuild_report(config: CompareConfig, *, command: str = "") -> dict:
    """Train nothing: write the report of every run of this comparison that its results file holds.

    No data is read. Each record carries its architecture's model config, and a record counts only where this
    config's recipe (sweep, seeds, learning rate chosen by the sweep) with that model gives its key, so records
    of another recipe are ignored. The run-level facts (environment, data, epochs) are those of the run folder's
    ``results.json`` (the last training command's, whose ``command`` stays), with this command as ``report_command``
    and the rebuilt sweep and seeds.

    Raises:
        ValueError: a results file holding no run of any architecture of ``compare.archs``.
    """
    c = config.compare
    run_dir = Path(c.out_dir)
    results = ResultsFile(c.results_file or run_dir / "entries.json")
    models: dict[str, _RecordedModel] = {}
    for record in results.entries.values():
        if record["name"] in c.archs and record.get("role") in ("main", "sweep"):  # probes hold no model config
            models.setdefault(record["name"], _RecordedModel(record["run"]["model_config"]))
    if not models:
        raise ValueError(f"{results.path} holds no run of {', '.join(c.archs)}")
    config = dataclasses.replace(
        config,
        compare=dataclasses.replace(c, archs=[a for a in c.archs if a in models]),
        probes=dataclasses.replace(config.probes, run=[]),
    )
    entries = _Entries(config, run_dir, models, run_dir / "data" / "in_domain", {})
    entries.results = results
    for name in models:
        lr = entries.chosen_lr(name)[0]
        for seed in config.seeds:
            variant = _variant(config, seed, lr)
            if entries.key(variant, name)[0] in results:
                entries.run(variant, name, "main")  # found: its result.json joins the folder, nothing trains
    old = run_dir / "results.json"
    meta = json.loads(old.read_text()).get("meta", {}) if old.is_file() else {"preset": c.preset}
    meta["report_command"] = command
    return _report(config, entries, meta, [])


def _report(config: CompareConfig, entries: _Entries, meta: dict, selected: list[str]) -> dict:
    """The report of every finished architecture: tables, seeds and sweep, then the probes of ``selected``."""
    from .probes import finished_probes, run_probes, write_probe_reports

    sweeps, keys, lrs = {}, [], {}
    for name in config.compare.archs:
        lrs[name], sweep = entries.chosen_lr(name)
        if sweep is not None:
            sweeps[name] = sweep
        keys += [entries.key(_variant(config, seed, lrs[name]), name)[0] for seed in config.seeds]
    if config.sweep.lrs:
        steps = sweep_config(config, config.optim.lr).steps
        meta["sweep"] = {"rule": RULE, "lrs": list(config.sweep.lrs), "fraction": config.sweep.fraction,
                         "steps": steps, "ablations": config.sweep.ablations, "extend": config.sweep.extend,
                         "results": sweeps}  # fmt: skip
    summary = seed_summary(entries.results.records(role="main", keys=keys))
    meta["seeds"] = {"seeds": config.seeds, "summary": summary}
    doc = write_report(entries.run_dir, meta)
    extra = []
    if len(config.seeds) > 1 and summary:
        names = [n for n in (*TABLE5, *TABLE6[1:]) if n in summary]
        extra += ["## Mean ± standard deviation over seeds", "",
                  seed_table(summary, names, meta["out_of_domain"]), ""]  # fmt: skip
    if sweeps:
        steps = sweep_config(config, config.optim.lr).steps
        shared = " The Table-6 ablations train at RetNet's rate." if config.sweep.ablations == "retnet" else ""
        if config.sweep.extend:
            shared += (f" Where the best rate was an end of the grid, up to {config.sweep.extend} more rates were tried"
                       " beyond it, a grid step each.")  # fmt: skip
        extra += ["## Learning-rate sweep", "", f"Rule: {RULE}; {steps} steps per run.{shared}", "",
                  "In-domain validation loss per peak learning rate:", "", sweep_table(sweeps), ""]  # fmt: skip
    if extra:
        with open(entries.run_dir / "results.md", "a") as f:
            f.write("\n".join(["", *extra]))
    # each entry's full runs, the config's own seed first: a probe reads the first of them trained in this folder
    seeds = list(dict.fromkeys([config.seed, *config.seeds]))
    main_keys = {n: [entries.key(_variant(config, seed, lrs[n]), n)[0] for seed in seeds] for n in config.compare.archs}
    if config.probes.run:
        trained = {}
        for name in selected:
            for seed, key in zip(seeds, main_keys[name]):
                model_dir = entries.folder(name, seed, lrs[name], "main") / "train" / "model"
                if key in entries.results and (model_dir / "config.json").is_file():
                    trained[name] = (key, model_dir)
                    break
        datasets = {"": entries.in_dir, **entries.ood_dirs}
        doc["probes"] = run_probes(config, entries.run_dir, entries.matched, selected, datasets, trained,
                                   entries.results, main_keys)  # fmt: skip
    else:
        held = finished_probes(config, entries.results, entries.matched, main_keys)
        if held:  # probes measured by earlier commands (or on other machines) keep their report
            write_probe_reports(held, entries.run_dir)
            doc["probes"] = held
    return doc
