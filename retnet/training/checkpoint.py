"""Training checkpoints: atomic, verified, resharding, keeping the last k.

A checkpoint is a folder ``<run>/checkpoints/step_XXXXXXXX/``::

    state/            # torch.distributed.checkpoint (DCP): model + optimizer, sharded or not, any rank count
    rng/rankN.pt      # each rank's RNG states (torch.save, loaded with weights_only=True)
    trainer.json      # step, tokens seen, skipped steps, grad-scaler state, world size
    config.json       # the RetNetConfig (architecture check on load)
    train_config.yaml # the TrainConfig of the run
    tokenizer/        # the tokenizer
    checkpoint.json   # sha256 of every file above, written last

Everything is written into ``.step_XXXXXXXX.tmp`` and renamed when complete, so a process killed at any moment
(SIGKILL included) leaves either the previous checkpoints untouched or a temporary folder that is ignored and
removed. Loading verifies the checksums and falls back to the previous checkpoint if one is corrupt. DCP
stores tensors with their global shapes, so a run saved on N ranks resumes on M ranks, sharded or not.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..model import RetNetConfig
from ..utils.files import sha256_file
from .distributed import DistInfo, barrier, broadcast_object

logger = logging.getLogger(__name__)

MANIFEST = "checkpoint.json"
_STEP_RE = re.compile(r"^step_(\d{8})$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    """This process's RNG states."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete-looking checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_RE.match(p.name))


def verify_checkpoint(path: str | Path) -> None:
    """Check that every file listed in the manifest exists and matches its sha256.

    Raises:
        ValueError: the checkpoint is incomplete or corrupt.
    """
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise ValueError(f"checkpoint {path} is incomplete (no {MANIFEST})")
    files = json.loads(manifest.read_text())["files"]
    for rel, digest in files.items():
        f = path / rel
        if not f.is_file():
            raise ValueError(f"checkpoint {path} is missing {rel}")
        if sha256_file(f) != digest:
            raise ValueError(f"checkpoint {path}: {rel} does not match its checksum (corrupt)")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``run_dir`` that verifies (corrupt ones are skipped with a warning)."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
            return path
        except ValueError as err:
            logger.warning("skipping %s", err)
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a run folder (its latest valid checkpoint) or a checkpoint folder.

    Raises:
        FileNotFoundError: nothing usable there.
    """
    path = Path(path)
    if (path / MANIFEST).is_file():
        verify_checkpoint(path)
        return path
    if not path.exists():
        raise FileNotFoundError(f"no such run or checkpoint: {path}")
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(f"no complete checkpoint in {path}")
    return ckpt


def clean_partial(run_dir: str | Path) -> None:
    """Remove temporary folders left by a save that was killed."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.endswith(".tmp"):
                logger.info("removing incomplete checkpoint %s", p.name)
                shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict,
    *,
    info: DistInfo,
    model_config: RetNetConfig,
    write_extras,
    keep: int,
) -> Path:
    """Save a checkpoint collectively (every rank calls this); returns its final path.

    Args:
        run_dir: the run folder.
        step: optimizer steps done.
        model: the (possibly wrapped) model.
        optimizer: its optimizer.
        trainer_state: JSON-able loop state (step, tokens, scaler, ...).
        info: this rank.
        model_config: the architecture, stored as config.json.
        write_extras: ``f(folder)`` writing the run's config and tokenizer (rank 0).
        keep: checkpoints to keep (older ones are deleted after the new one is complete).
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:08d}"
    tmp = root / f".step_{step:08d}.tmp"
    if info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    barrier()
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to")
        dcp.save(state, checkpoint_id=str(tmp / "state"))
    torch.save(rng_state(), tmp / "rng" / f"rank{info.rank}.pt")
    barrier()
    if info.is_main:
        (tmp / "trainer.json").write_text(json.dumps(dict(trainer_state, world_size=info.world_size), indent=1))
        model_config.save(tmp / "config.json")
        write_extras(tmp)
        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1))
        for p in [*tmp.rglob("*"), tmp]:
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.debug("saved checkpoint %s", final)
    barrier()
    return final


def check_architecture(ckpt: Path, model_config: RetNetConfig) -> None:
    """Raise ValueError when the checkpoint's architecture differs from ``model_config``."""
    saved = json.loads((ckpt / "config.json").read_text())
    current = model_config.to_dict()
    diffs = [f"{k} {saved.get(k)!r} != {v!r}" for k, v in current.items() if saved.get(k) != v and k != "backend"]
    if diffs:
        raise ValueError(f"checkpoint {ckpt} holds another architecture: {', '.join(diffs[:4])}")


def load_checkpoint(
    ckpt: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    info: DistInfo,
    model_config: RetNetConfig,
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``); every rank calls it.

    Returns:
        The trainer state (``trainer.json``).

    Raises:
        ValueError: corrupt checkpoint or a different architecture.
    """
    check_architecture(ckpt, model_config)
    state = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(model, optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to")
        dcp.load(state, checkpoint_id=str(ckpt / "state"))
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optim"])
    trainer_state = json.loads((ckpt / "trainer.json").read_text())
    rng_file = ckpt / "rng" / f"rank{info.rank}.pt"
    if rng_file.is_file() and trainer_state.get("world_size") == info.world_size:
        set_rng_state(torch.load(rng_file, weights_only=True))
    else:
        logger.info(
            "rank count changed (%s -> %d): RNG states not restored", trainer_state.get("world_size"), info.world_size
        )
    return broadcast_object(trainer_state)
