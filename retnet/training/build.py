"""Building the pieces of a run from a :class:`TrainConfig`: the prepared dataset, the model config, the device."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import torch

from ..data import CORPORA, prepare_dataset, read_manifest, resolve_source
from ..data.fingerprint import corpus_key, key_change
from ..data.prepare import FORMAT_VERSION, MANIFEST
from ..model import RetNetConfig
from ..utils.files import atomic_write
from .config import DataSection, ModelSection, TrainConfig
from .distributed import DistInfo, barrier

logger = logging.getLogger(__name__)

_MODEL_OVERRIDES = (
    "hidden_size",
    "num_hidden_layers",
    "num_heads",
    "value_dim",
    "ffn_dim",
    "flavour",
    "dropout",
    "tie_word_embeddings",
    "backend",
)


def dataset_dir(cfg: DataSection) -> Path:
    """The prepared dataset folder of ``cfg`` (explicit, or derived from corpus and tokenizer)."""
    if cfg.dataset:
        return Path(cfg.dataset).expanduser()
    keys = []
    for name in corpus_names(cfg):
        if name in CORPORA:
            keys.append(name)
        else:
            resolved = str(Path(name).expanduser().resolve())
            digest = hashlib.sha256(resolved.encode()).hexdigest()[:8]
            keys.append(re.sub(r"[^A-Za-z0-9_.-]", "_", Path(resolved).name) + "-" + digest)
    key = "+".join(keys)
    tok = "byte" if cfg.tokenizer == "byte" else f"bpe{cfg.vocab_size}"
    return Path(cfg.cache_dir).expanduser() / "datasets" / f"{key}-{tok}-v{cfg.val_fraction:g}"


def corpus_names(cfg: DataSection) -> list[str]:
    """The corpora of ``cfg.corpus`` (a comma-separated list makes a mixture)."""
    names = [c.strip() for c in cfg.corpus.split(",") if c.strip()]
    if not names:
        raise ValueError("config data.corpus is empty; name a corpus or a path")
    return names


def cache_key(cfg: DataSection, seed: int, recorded: dict | None = None) -> dict:
    """What the cached dataset of ``cfg`` is made from: each corpus (a local one by its files' sizes, times and
    hashes, a registered one by its pinned version), the tokenizer settings, the split seed and fraction.

    Args:
        cfg: the data settings.
        seed: the split seed.
        recorded: the key stored with the cached dataset; files whose size and time still match it are not
            hashed again (:mod:`retnet.data.fingerprint`).
    """
    before = (recorded or {}).get("corpora", [])
    corpora = []
    for i, name in enumerate(corpus_names(cfg)):
        local = Path(name).expanduser()
        if not local.exists() and name in CORPORA:  # the order of resolve_source: an existing path wins
            corpora.append({"name": name, "version": CORPORA[name].version})
        else:
            prev = before[i] if i < len(before) else None
            corpora.append({"name": name, **corpus_key(local, prev)})
    tokenizer = {"kind": cfg.tokenizer, **({"vocab_size": cfg.vocab_size} if cfg.tokenizer == "bpe" else {})}
    return {
        "format_version": FORMAT_VERSION,
        "corpora": corpora,
        "tokenizer": tokenizer,
        "seed": seed,
        "val_fraction": cfg.val_fraction,
    }


def ensure_dataset(cfg: DataSection, info: DistInfo, seed: int = 0) -> Path:
    """Prepare the dataset on rank 0 if it is missing or stale; every rank returns its folder.

    A cached dataset is stale when its cache key (:func:`cache_key`) no longer matches: an edited, added or
    removed corpus file, another tokenizer setting, split seed or fraction. It is then re-prepared, with one
    log line saying why.

    Raises:
        FileNotFoundError: missing corpus, or a missing explicit dataset folder.
    """
    path = dataset_dir(cfg)
    if cfg.dataset:
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(f"prepared dataset not found: {path} (run 'retnet data prepare')")
        return path
    if info.is_main:
        cached = (path / MANIFEST).is_file()
        recorded = read_manifest(path).get("cache_key") if cached else None
        key = cache_key(cfg, seed, recorded)
        reason = key_change(recorded, key) if cached else None
        if reason is not None:
            logger.info("re-preparing %s: %s", path, reason)
        if not cached or reason is not None:
            source = [resolve_source(name, cfg.cache_dir, fetch=cfg.fetch) for name in corpus_names(cfg)]
            logger.info("preparing %s with the %s tokenizer into %s", cfg.corpus, cfg.tokenizer, path)
            prepare_dataset(
                source,
                path,
                tokenizer=cfg.tokenizer,
                vocab_size=cfg.vocab_size,
                val_fraction=cfg.val_fraction,
                seed=seed,
                workers=cfg.workers,
                source_name=cfg.corpus,
                cache_key=key,
            )
        elif key != recorded:  # same content, newer times: record them so the next check hashes nothing
            manifest = dict(read_manifest(path), cache_key=key)
            atomic_write(path / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1) + "\n"))
    barrier()
    return path


def model_config(cfg: ModelSection, vocab_size: int) -> RetNetConfig:
    """The RetNetConfig of the run: the preset, the non-None overrides and the tokenizer's vocabulary size."""
    overrides = {k: getattr(cfg, k) for k in _MODEL_OVERRIDES if getattr(cfg, k) is not None}
    return RetNetConfig.from_preset(cfg.preset, vocab_size=vocab_size, **overrides)


def pick_device(cfg: TrainConfig, info: DistInfo) -> torch.device:
    """cuda:LOCAL_RANK when available (or asked), else cpu.

    Raises:
        RuntimeError: device "cuda" asked for on a machine without CUDA.
    """
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but CUDA is not available")
    if cfg.device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")
