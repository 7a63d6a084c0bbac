"""Small synthetic corpora and fast training settings shared by the training, data and CLI tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = "the king queen rose sword crown night day love death speak hear thou art my lord good sweet fair".split()


def make_corpus(folder: Path, docs: int = 24, words: int = 300, seed: int = 0) -> Path:
    """Write ``docs`` text files of patterned pseudo-verse (learnable in a few steps) into ``folder``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        lines = []
        for _ in range(words // 6):
            lines.append(" ".join(rng.choice(WORDS) for _ in range(5)) + ",")
        (folder / f"doc{d:03d}.txt").write_text(f"ACT {d}.\n" + "\n".join(lines) + "\n")
    return folder


def make_jsonl(path: Path, docs: int = 10, seed: int = 1) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(docs):
            f.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(80)) + " é ✓"}) + "\n")
    return path


def fast_overrides(dataset: Path, run_dir: Path, **extra) -> dict:
    """Overrides for a debug-sized run that takes well under a second per 10 steps on CPU."""
    cfg = {
        "run_dir": str(run_dir),
        "steps": 12,
        "batch_size": 4,
        "eval_every": 0,
        "eval_batches": 2,
        "log_every": 1,
        "sample_tokens": 0,
        "tensorboard": False,
        "model": {"preset": "debug"},
        "data": {"dataset": str(dataset), "seq_len": 32},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "checkpoint": {"every": 6, "keep": 3},
    }
    for key, value in extra.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def to_argv(overrides: dict, prefix: str = "") -> list[str]:
    """``{"optim": {"lr": 1}}`` -> ``["--optim.lr=1"]``."""
    out = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            out += to_argv(value, f"{prefix}{key}.")
        else:
            out.append(f"--{prefix}{key}={value}")
    return out
