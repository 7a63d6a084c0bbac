"""Building the pieces of a run from a :class:`TrainConfig`: the prepared dataset, the model config, the device."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import torch

from ..data import CORPORA, prepare_dataset, resolve_source
from ..model import RetNetConfig
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


def ensure_dataset(cfg: DataSection, info: DistInfo, seed: int = 0) -> Path:
    """Prepare the dataset on rank 0 if it is missing; every rank returns its folder.

    Raises:
        FileNotFoundError: missing corpus, or a missing explicit dataset folder.
    """
    path = dataset_dir(cfg)
    if cfg.dataset:
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(f"prepared dataset not found: {path} (run 'retnet data prepare')")
        return path
    if info.is_main and not (path / "manifest.json").is_file():
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
        )
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
