"""``run_comparison``: train every selected architecture on the same data with the same recipe, evaluate
in-domain and out-of-domain perplexity, and write the report (paper §3.4, Tables 5 and 6).

Run folder layout::

    compare_config.json        # the full config; a resumed run must match it
    data/in_domain/            # prepared in-domain dataset (tokenizer trained here)
    data/ood/<corpus>/         # each out-of-domain corpus, tokenised with the same tokenizer
    models.json                # matched configs and exact parameter counts
    <arch>/train/              # the trainer's checkpoints (resumable)
    <arch>/result.json         # written last: an entry with it is done and skipped on resume
    results.{json,md} loss_curves.png perplexity.png

Every stage is skipped when its output is complete, so an interrupted comparison continues where it stopped:
finished architectures are not retrained and an unfinished one resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from ..model import RetNetConfig
from .archs import LABELS, build_model, match_parameters
from .config import CompareConfig, save_config
from .report import write_report

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
        source = resolve_source(data.in_domain, cache, fetch=data.fetch)
        prepare_dataset(
            source, in_dir, tokenizer=data.tokenizer, vocab_size=data.vocab_size, val_fraction=data.val_fraction,
            seed=config.train.seed, source_name=data.in_domain,
        )  # fmt: skip
    tok_hash = read_manifest(in_dir)["tokenizer"]["hash"]
    ood = {}
    for corpus in data.out_of_domain:
        out = run_dir / "data" / "ood" / _corpus_slug(corpus)
        if not (out / "manifest.json").is_file() or read_manifest(out)["tokenizer"]["hash"] != tok_hash:
            source = resolve_source(corpus, cache, fetch=data.fetch)
            text = _capped_copy(source, run_dir / "data" / "ood_text" / _corpus_slug(corpus), data.ood_max_bytes)
            # the held-out half is scored; any part of a corpus never trained on is out-of-domain
            prepare_dataset(text, out, tokenizer_dir=in_dir / "tokenizer", val_fraction=0.5, source_name=corpus)
            shutil.rmtree(text, ignore_errors=True)
        ood[corpus] = out
    return in_dir, ood


def base_config(config: CompareConfig, vocab_size: int) -> RetNetConfig:
    """The RetNet row's config."""
    m = config.model
    return RetNetConfig(
        vocab_size=vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_hidden_layers,
        num_heads=m.num_heads, flavour=m.flavour,
    )  # fmt: skip


def _check_resume(config: CompareConfig, run_dir: Path) -> None:
    path = run_dir / "compare_config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        new = config.to_dict()
        # the list of architectures may grow or shrink between calls; everything else must be the same
        old.pop("archs", None), new.pop("archs", None)
        old.pop("out_dir", None), new.pop("out_dir", None)
        if old != new:
            raise ValueError(
                f"{run_dir} holds a comparison with a different config; use another out_dir or delete the folder"
            )
    save_config(config, path)


def environment() -> dict:
    """Where the run happened."""
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
    else:
        env["device"] = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return env


def run_comparison(config: CompareConfig, *, prepare_only: bool = False, command: str = "") -> dict:
    """Run (or resume) a comparison; returns the results document (also written to the run folder).

    Args:
        config: the comparison.
        prepare_only: stop after preparing the data (e.g. on a machine with network, before moving the run
            folder to a machine without).
        command: the command line, recorded in the results.

    Raises:
        ValueError: a run folder holding a different comparison, or unmatchable sizes.
    """
    from ..data import PreparedDataset
    from .harness import evaluate_entry, train_config, train_entry

    run_dir = Path(config.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(config, run_dir)
    in_dir, ood_dirs = prepare_data(config, run_dir)
    vocab = PreparedDataset(in_dir).tokenizer.vocab_size
    train_config(config, in_dir, run_dir / "check")  # validates the trainer settings before any training
    matched = match_parameters(config.archs, base_config(config, vocab), config.baseline,
                               ffn_multiple=config.model.ffn_multiple)  # fmt: skip
    (run_dir / "models.json").write_text(
        json.dumps(
            {n: {"parameters": m.parameters, "total_parameters": m.total_parameters, "config": m.config.to_dict()}
             for n, m in matched.items()}, indent=2,
        ) + "\n"
    )  # fmt: skip
    meta = {
        "preset": config.preset,
        "command": command,
        "in_domain": _corpus_slug(config.data.in_domain),
        "out_of_domain": [_corpus_slug(c) for c in config.data.out_of_domain],
        "corpora": {"in_domain": config.data.in_domain, "out_of_domain": list(config.data.out_of_domain)},
        "tokenizer": {"kind": config.data.tokenizer, "vocab_size": vocab},
        "train": config.to_dict()["train"] | {"steps": config.train.steps},
        "environment": environment(),
    }
    if prepare_only:
        logger.info("data prepared under %s", run_dir / "data")
        return {"meta": meta, "results": {}}
    for name in config.archs:
        entry_dir = run_dir / name
        if (entry_dir / "result.json").is_file():
            logger.info("%s: done already, skipped", name)
            continue
        m = matched[name]
        logger.info("%s: %s non-embedding parameters (%+.2f%% vs RetNet)", LABELS[name], f"{m.parameters:,}",
                    100 * m.deviation)  # fmt: skip
        torch.manual_seed(config.train.seed)
        model = build_model(m.config)
        entry_dir.mkdir(exist_ok=True)
        start = time.time()
        train = train_entry(model, config, in_dir, entry_dir / "train")
        evaluation = {
            "in_domain": evaluate_entry(model, in_dir, config),
            "out_of_domain": {_corpus_slug(c): evaluate_entry(model, d, config) for c, d in ood_dirs.items()},
        }
        result = {
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
        tmp = entry_dir / "result.json.partial"
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, entry_dir / "result.json")
        logger.info("%s: in-domain perplexity %.2f", LABELS[name], evaluation["in_domain"]["perplexity"])
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return write_report(run_dir, meta)
