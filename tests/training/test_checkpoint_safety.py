"""Checkpoints from an untrusted source: nothing unpickled, every file verified, a full disk, one writer per run."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import time

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_model_state_dict

from retnet.training import checkpoint as ckpt_io
from retnet.training import load_config, safe_storage, train
from retnet.training.artifacts import load_trained
from retnet.training.run_lock import RunDirLockedError, RunLock
from retnet.utils.files import sha256_file

from .corpus import fast_overrides, to_argv
from .subproc import run_cli


class _Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _run(dataset, run_dir, resume=None, **extra):
    return train(load_config([], fast_overrides(dataset, run_dir, **extra)), resume=resume)


def _plant(ckpt, rel, data: bytes) -> None:
    """Write ``rel`` into ``ckpt`` and list it in the manifest with a matching checksum (a tampered folder)."""
    (ckpt / rel).parent.mkdir(parents=True, exist_ok=True)
    (ckpt / rel).write_bytes(data)
    manifest = json.loads((ckpt / ckpt_io.MANIFEST).read_text())
    manifest["files"][rel] = sha256_file(ckpt / rel)
    (ckpt / ckpt_io.MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def trained_run(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("safety") / "run"
    _run(dataset, run, steps=12)
    return run


def test_checkpoint_holds_no_pickle(trained_run):
    ckpt = ckpt_io.latest_checkpoint(trained_run)
    files = [p for p in ckpt.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pt", ".distcp", ".pkl") or p.name == ".metadata"]
    assert sorted(p.name for p in (ckpt / "state").iterdir()) == ["__0.safetensors", "metadata.json"]


def test_planted_pickles_never_run(dataset, trained_run, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    ckpt = ckpt_io.latest_checkpoint(trained_run)
    for rel in ("state/.metadata", "rng/rank0.pt", "state/__0_0.distcp"):
        _plant(ckpt, rel, payload)
    ckpt_io.verify_checkpoint(ckpt)  # the checksums match: they detect accidents, not tampering
    trained = load_trained(trained_run)  # what `retnet generate/eval RUN` do
    assert trained.source == ckpt
    _run(dataset, trained_run, resume=str(trained_run), steps=13)  # `retnet train --resume RUN`
    assert not marker.exists()


def test_pickled_dcp_checkpoint_is_refused_unless_trusted(trained_run, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = ckpt_io.list_checkpoints(trained_run)[0]
    (ckpt / "state" / safe_storage.METADATA_NAME).unlink()  # an older folder: DCP's own pickled metadata
    manifest = json.loads((ckpt / ckpt_io.MANIFEST).read_text())
    del manifest["files"]["state/" + safe_storage.METADATA_NAME]
    (ckpt / ckpt_io.MANIFEST).write_text(json.dumps(manifest))
    _plant(ckpt, "state/.metadata", pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="metadata is a pickle.*--trust-checkpoint"):
        load_trained(ckpt)
    assert not marker.exists()
    with pytest.raises(CheckpointException):  # trusted: the pickle is read and runs (it is no real metadata)
        load_trained(ckpt, trust_checkpoint=True)
    assert marker.exists()


def test_trusted_pickled_checkpoint_still_loads(trained_run, tmp_path):
    """Checkpoints of DCP's own format (older runs) load with trust_checkpoint: the opt-in is not a dead end."""
    ckpt = tmp_path / "old"
    shutil.copytree(ckpt_io.latest_checkpoint(trained_run), ckpt)
    expected = load_trained(ckpt).model
    shutil.rmtree(ckpt / "state")
    (ckpt / ckpt_io.STATE_JSON).unlink()
    dcp.save({"model": get_model_state_dict(expected)}, checkpoint_id=str(ckpt / "state"))  # the pickled format
    files = {
        str(p.relative_to(ckpt)): sha256_file(p) for p in ckpt.rglob("*") if p.is_file() and p.name != "checkpoint.json"
    }
    (ckpt / ckpt_io.MANIFEST).write_text(json.dumps({"files": files}))
    with pytest.raises(ValueError, match="--trust-checkpoint"):
        load_trained(ckpt)
    loaded = load_trained(ckpt, trust_checkpoint=True).model
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), expected.state_dict().values()))


def test_missing_manifest_or_checksum_is_an_error(dataset, tmp_path):
    run = tmp_path / "run"
    _run(dataset, run, steps=6)
    ckpt = ckpt_io.list_checkpoints(run)[-1]
    manifest = json.loads((ckpt / ckpt_io.MANIFEST).read_text())
    del manifest["files"]["state/__0.safetensors"]
    (ckpt / ckpt_io.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no checksum for state/__0.safetensors"):
        ckpt_io.verify_checkpoint(ckpt)
    (ckpt / ckpt_io.MANIFEST).unlink()
    with pytest.raises(ValueError, match="no checkpoint.json.*--allow-unverified to eval or generate"):
        load_trained(ckpt)
    assert load_trained(ckpt, allow_unverified=True).source == ckpt
    (run / "model" / "checksums.json").unlink()
    with pytest.raises(ValueError, match="no checksum.*--allow-unverified"):
        load_trained(run / "model")
    load_trained(run / "model", allow_unverified=True)


def test_every_checkpoint_corrupt_falls_back_to_the_exported_model(dataset, tmp_path, caplog):
    run = tmp_path / "run"
    _run(dataset, run, steps=6)
    for ckpt in ckpt_io.list_checkpoints(run):
        shard = ckpt / "state" / "__0.safetensors"
        shard.write_bytes(shard.read_bytes()[:-4] + b"oops")
    with caplog.at_level("WARNING"):
        trained = load_trained(run)
    assert trained.source == run / "model"
    assert "every checkpoint" in caplog.text and "corrupt" in caplog.text


def test_disk_full_during_save(dataset, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real = safe_storage.write_safetensors

    def full_at_step_12(tensors, path, metadata=None):
        if ".step_00000012.tmp" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, metadata)

    monkeypatch.setattr(safe_storage, "write_safetensors", full_at_step_12)
    with pytest.raises(ckpt_io.CheckpointSaveError) as info:
        _run(dataset, run, steps=12)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no space left on the device holding ")
    assert "while saving step 12" in message and "the last complete checkpoint is step 6" in message
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000006"]
    ckpt_io.verify_checkpoint(run / "checkpoints" / "step_00000006")
    # through the command line: one line on stderr, no traceback
    from retnet.cli.__main__ import main

    argv = ["train", *to_argv(fast_overrides(dataset, tmp_path / "cli", steps=12))]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "no space left" in lines[0] and "step 6" in lines[0], err


def test_second_writer_is_refused_and_sigkill_leaves_no_stale_lock(dataset, tmp_path):
    run = tmp_path / "run"
    args = ["train", *to_argv(fast_overrides(dataset, run, steps=5000, **{"checkpoint.every": 0}))]
    first = run_cli(args)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").is_file():
            assert first.poll() is None, first.stdout.read()
            assert time.time() < deadline
            time.sleep(0.05)
        second = run_cli(args)
        out, _ = second.communicate(timeout=240)
        assert second.returncode == 1, out
        lines = [line for line in out.splitlines() if "error" in line]
        assert lines == [
            f"retnet train: error: run folder {run} is in use by process {first.pid} (lock {run / '.lock'}); "
            "wait for it to finish or pick another run folder"
        ], out
        assert first.poll() is None  # the first run is untouched
    finally:
        first.send_signal(signal.SIGKILL)  # the holder dies without releasing anything itself
        first.wait()
    RunLock(run).release()  # the kernel released the dead process's lock: nothing stale


def test_lock_is_exclusive_and_released(tmp_path):
    lock = RunLock(tmp_path)
    with pytest.raises(RunDirLockedError, match=f"in use by process {os.getpid()}"):
        RunLock(tmp_path)
    lock.release()
    lock.release()
    RunLock(tmp_path).release()
