"""Training checkpoints: atomic, verified, resharding, keeping the last k, and never unpickled.

A checkpoint is a folder ``<run>/checkpoints/step_XXXXXXXX/``::

    state/            # model + optimizer tensors: torch.distributed.checkpoint (DCP) in the safetensors + JSON
                      # format of :mod:`retnet.training.safe_storage` (sharded or not, any rank count)
    state.json        # the non-tensor rest of the model and optimizer state (hyper-parameters, names)
    rng/rankN.json    # each rank's RNG states
    trainer.json      # step, tokens seen, skipped steps, grad-scaler state, world size
    config.json       # the RetNetConfig (architecture check on load)
    train_config.yaml # the TrainConfig of the run
    tokenizer/        # the tokenizer
    elapsed.json      # wall seconds the run had taken at this save, over every call that led to it
    checkpoint.json   # sha256 of every file above, written last

Everything is written into ``.step_XXXXXXXX.tmp`` and renamed when complete, so a process killed at any moment
(SIGKILL included) leaves either the previous checkpoints untouched or a temporary folder that is ignored and
removed. A save that fails (a full disk) removes its temporary folder and says which checkpoint is the last
complete one. Loading verifies the checksums (every file it reads must be listed) and falls back to the previous
checkpoint if one is corrupt. DCP stores tensors with their global shapes, so a run saved on N ranks resumes on
M ranks, sharded or not. Loading reads JSON and safetensors only; checkpoints in DCP's own pickled format (older
runs) are refused unless ``trust_checkpoint`` is set (``docs/security.md``).
"""

from __future__ import annotations

import errno
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
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..model import RetNetConfig
from ..utils.files import sha256_file
from .distributed import DistInfo, barrier, broadcast_object
from .safe_storage import SafeTensorsReader, SafeTensorsWriter, is_safe_state, join_tensors, split_tensors, state_files

logger = logging.getLogger(__name__)

MANIFEST = "checkpoint.json"
STATE_JSON = "state.json"
_STEP_RE = re.compile(r"^step_(\d{8})$")
_LEGACY_HINT = (
    "is in torch.distributed.checkpoint's own format, whose metadata is a pickle: loading it can run code "
    "hidden in the files. Pass --trust-checkpoint (trust_checkpoint=True) only if you trust where it came from"
)


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (for example a full disk); the partial save was removed."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    """This process's RNG states as JSON values (Python's Mersenne state; torch's states as byte lists)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (after a JSON round trip: lists where tuples were)."""
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    torch.set_rng_state(_byte_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_byte_tensor(s) for s in state["cuda"]])


def _byte_tensor(values) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=torch.uint8)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete-looking checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_RE.match(p.name))


def _required_files(path: Path) -> list[str]:
    """The files a load reads, which the manifest must therefore list."""
    required = ["config.json", "trainer.json"]
    if is_safe_state(path / "state"):
        required += [STATE_JSON, "state/metadata.json", *(f"state/{f}" for f in state_files(path / "state"))]
    return required


def verify_checkpoint(path: str | Path) -> None:
    """Check that the manifest lists every file a load reads and that every listed file matches its sha256.

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
    unlisted = [rel for rel in _required_files(path) if rel not in files]
    if unlisted:
        raise ValueError(f"checkpoint {path}: {MANIFEST} has no checksum for {', '.join(unlisted[:3])} (unverifiable)")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``run_dir`` that verifies (corrupt ones are skipped with a warning)."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
            return path
        except ValueError as err:
            logger.warning("skipping %s", err)
    return None


def resolve_checkpoint(path: str | Path, *, allow_unverified: bool = False) -> Path:
    """A checkpoint folder from a run folder (its latest valid checkpoint) or a checkpoint folder.

    Args:
        path: a run folder or a checkpoint folder.
        allow_unverified: accept a checkpoint folder that has no manifest (its files cannot be verified).

    Raises:
        FileNotFoundError: nothing usable there.
        ValueError: a checkpoint folder that is corrupt or, without ``allow_unverified``, has no manifest.
    """
    path = Path(path)
    if (path / MANIFEST).is_file():
        verify_checkpoint(path)
        return path
    if not path.exists():
        raise FileNotFoundError(f"no such run or checkpoint: {path}")
    if (path / "trainer.json").is_file() and (path / "state").is_dir():
        if not allow_unverified:
            raise ValueError(
                f"checkpoint {path} has no {MANIFEST}, so its files cannot be verified; to load it anyway pass "
                "--allow-unverified to eval or generate (allow_unverified=True)"
            )
        logger.warning("loading unverified checkpoint %s (no %s)", path, MANIFEST)
        return path
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


def _no_space(err: BaseException) -> OSError | None:
    """The ENOSPC error inside ``err`` (DCP wraps the errors of its ranks), if any."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return err
    if isinstance(err, CheckpointException):
        for failure in err.failures.values():  # (exception, stack summary) per failed rank
            inner = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(inner, BaseException) and _no_space(inner) is not None:
                return _no_space(inner)
    cause = err.__cause__ or err.__context__
    return _no_space(cause) if cause is not None else None


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

    Raises:
        CheckpointSaveError: no space left on the device (the partial save is removed; earlier checkpoints are
            untouched).
    """
    root = Path(run_dir) / "checkpoints"
    tmp = root / f".step_{step:08d}.tmp"
    try:
        return _save(root, tmp, step, model, optimizer, trainer_state, info, model_config, write_extras, keep)
    except (OSError, CheckpointException) as err:
        full = _no_space(err)
        if full is None:
            raise
        if info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        done = list_checkpoints(run_dir)
        last = f"step {int(done[-1].name[5:])}" if done else "none (no checkpoint was completed)"
        raise CheckpointSaveError(
            f"no space left on the device holding {root} while saving step {step}; "
            f"the partial save was removed; the last complete checkpoint is {last}"
        ) from None


def _save(root, tmp, step, model, optimizer, trainer_state, info, model_config, write_extras, keep) -> Path:
    final = root / f"step_{step:08d}"
    if info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    barrier()
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    tensors, skeleton = split_tensors(state)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to")
        dcp.save(tensors, checkpoint_id=str(tmp / "state"), storage_writer=SafeTensorsWriter(tmp / "state"))
    (tmp / "rng" / f"rank{info.rank}.json").write_text(json.dumps(rng_state()))
    barrier()
    if info.is_main:
        (tmp / STATE_JSON).write_text(json.dumps(skeleton))
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
        for old in list_checkpoints(root.parent)[:-keep]:
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


def load_state(ckpt: Path, template: dict, *, trust_checkpoint: bool = False) -> dict:
    """Read the parts of a checkpoint's state named by ``template`` (e.g. ``{"model": ...}``); every rank calls it.

    Args:
        ckpt: the checkpoint folder.
        template: live state dicts (``get_model_state_dict`` / ``get_optimizer_state_dict``) whose tensors receive
            the stored values in place, each rank its own shards.
        trust_checkpoint: also read checkpoints in DCP's pickled format (code in them would run).

    Returns:
        ``template``'s structure holding the checkpoint's values.

    Raises:
        ValueError: a checkpoint in the pickled format without ``trust_checkpoint``, or missing entries.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to")
        if not is_safe_state(ckpt / "state"):
            if not trust_checkpoint:
                raise ValueError(f"checkpoint {ckpt} {_LEGACY_HINT}")
            dcp.load(template, checkpoint_id=str(ckpt / "state"))
            return template
        tensors, _ = split_tensors(template)
        saved = json.loads((ckpt / STATE_JSON).read_text())
        missing = [k for k in template if k not in saved]
        if missing:
            raise ValueError(f"checkpoint {ckpt} holds no {', '.join(missing)} state")
        dcp.load(tensors, checkpoint_id=str(ckpt / "state"), storage_reader=SafeTensorsReader(ckpt / "state"))
    return join_tensors({k: saved[k] for k in template}, tensors, template)


def load_checkpoint(
    ckpt: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    info: DistInfo,
    model_config: RetNetConfig,
    trust_checkpoint: bool = False,
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``); every rank calls it.

    Args:
        ckpt: the checkpoint folder.
        model: the (possibly wrapped) model.
        optimizer: its optimizer, or None for the weights only.
        info: this rank.
        model_config: the architecture the checkpoint must hold.
        trust_checkpoint: also read checkpoints in DCP's pickled format (see :func:`load_state`).

    Returns:
        The trainer state (``trainer.json``).

    Raises:
        ValueError: corrupt checkpoint, a different architecture, or a pickled checkpoint that is not trusted.
    """
    check_architecture(ckpt, model_config)
    template = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        template["optim"] = get_optimizer_state_dict(model, optimizer)
    state = load_state(ckpt, template, trust_checkpoint=trust_checkpoint)
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optim"])
    trainer_state = json.loads((ckpt / "trainer.json").read_text())
    rng_json, rng_pickle = ckpt / "rng" / f"rank{info.rank}.json", ckpt / "rng" / f"rank{info.rank}.pt"
    if trainer_state.get("world_size") != info.world_size:
        logger.info(
            "rank count changed (%s -> %d): RNG states not restored", trainer_state.get("world_size"), info.world_size
        )
    elif rng_json.is_file():
        set_rng_state(json.loads(rng_json.read_text()))
    elif rng_pickle.is_file() and trust_checkpoint:
        set_rng_state(torch.load(rng_pickle, weights_only=True))
    else:
        logger.info("checkpoint %s holds no RNG state for rank %d: not restored", ckpt, info.rank)
    return broadcast_object(trainer_state)
