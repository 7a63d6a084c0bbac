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
import shutil
import time
from pathlib import Path

import torch

from ..model import RetNetConfig
from ..training.build import model_config
from ..utils.environment import environment_stamp
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
        source = resolve_source(data.corpus, cache, fetch=data.fetch)
        prepare_dataset(
            source, in_dir, tokenizer=data.tokenizer, vocab_size=data.vocab_size, val_fraction=data.val_fraction,
            seed=config.seed, workers=data.workers, source_name=data.corpus,
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
            prepare_dataset(text, out, tokenizer_dir=in_dir / "tokenizer", val_fraction=0.5, source_name=corpus)
            shutil.rmtree(text, ignore_errors=True)
        ood[corpus] = out
    return in_dir, ood


def base_config(config: CompareConfig, vocab_size: int) -> RetNetConfig:
    """The RetNet row's config: what ``retnet train`` builds from ``config.model`` and the tokenizer's vocabulary."""
    return model_config(config.model, vocab_size)


def _check_resume(config: CompareConfig, run_dir: Path) -> None:
    path = run_dir / "compare_config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        new = config.to_dict()
        # the list of architectures may grow or shrink between calls; everything else must be the same
        for doc in (old, new):
            section = doc.get("compare", {})
            section.pop("archs", None), section.pop("out_dir", None)
        if old != new:
            raise ValueError(
                f"{run_dir} holds a comparison with a different config; use another compare.out_dir or delete "
                "the folder"
            )
    save_config(config, path)


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
    from .harness import evaluate_entry, train_entry

    run_dir = Path(config.compare.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(config, run_dir)
    in_dir, ood_dirs = prepare_data(config, run_dir)
    vocab = PreparedDataset(in_dir).tokenizer.vocab_size
    c = config.compare
    matched = match_parameters(c.archs, base_config(config, vocab), config.baseline, ffn_multiple=c.ffn_multiple,
                               small_head_factor=c.small_head_factor)  # fmt: skip
    (run_dir / "models.json").write_text(
        json.dumps(
            {n: {"parameters": m.parameters, "total_parameters": m.total_parameters, "config": m.config.to_dict()}
             for n, m in matched.items()}, indent=2,
        ) + "\n"
    )  # fmt: skip
    recipe = {k: v for k, v in config.to_dict().items() if k not in ("compare", "baseline")}
    meta = {
        "preset": c.preset,
        "command": command,
        "in_domain": _corpus_slug(config.data.corpus),
        "out_of_domain": [_corpus_slug(corpus) for corpus in c.out_of_domain],
        "corpora": {"in_domain": config.data.corpus, "out_of_domain": list(c.out_of_domain)},
        "tokenizer": {"kind": config.data.tokenizer, "vocab_size": vocab},
        "train": recipe | {"tokens": config.tokens},
        "environment": environment_stamp(),
    }
    if prepare_only:
        logger.info("data prepared under %s", run_dir / "data")
        return {"meta": meta, "results": {}}
    for name in c.archs:
        entry_dir = run_dir / name
        if (entry_dir / "result.json").is_file():
            logger.info("%s: done already, skipped", name)
            continue
        m = matched[name]
        logger.info("%s: %s non-embedding parameters (%+.2f%% vs RetNet)", LABELS[name], f"{m.parameters:,}",
                    100 * m.deviation)  # fmt: skip
        torch.manual_seed(config.seed)
        model = build_model(m.config)
        entry_dir.mkdir(exist_ok=True)
        start = time.time()
        train = train_entry(model, config, in_dir, entry_dir / "train")
        evaluation = {
            "in_domain": evaluate_entry(model, in_dir, config),
            "out_of_domain": {_corpus_slug(src): evaluate_entry(model, d, config) for src, d in ood_dirs.items()},
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
