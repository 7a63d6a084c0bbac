"""SIGKILL at any moment, during training or in the middle of a checkpoint save, then resume: nothing lost."""

from __future__ import annotations

import random
import signal
import time

import pytest

from retnet.training import checkpoint as ckpt_io
from retnet.training import load_config, train

from .corpus import fast_overrides, to_argv
from .subproc import run_cli, train_losses

STEPS = 18


def _reference(dataset, run_dir, **extra):
    train(load_config([], fast_overrides(dataset, run_dir, **{"steps": STEPS, **extra})))
    return train_losses(run_dir)


def _resume(dataset, run_dir, **extra):
    train(load_config([], fast_overrides(dataset, run_dir, **{"steps": STEPS, **extra})), resume=str(run_dir))
    return train_losses(run_dir)


def test_sigkill_during_training_then_resume(dataset, tmp_path):
    extra = {"checkpoint.every": 3, "steps": 48}  # long enough to be still running when the kill comes
    expected = _reference(dataset, tmp_path / "ref", **extra)
    run = tmp_path / "killed"
    proc = run_cli(["train", *to_argv(fast_overrides(dataset, run, **extra))])
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step_00000003").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(random.Random(0).uniform(0.0, 0.2))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert ckpt_io.latest_checkpoint(run) is not None
    assert _resume(dataset, run, **extra) == expected


KILLERS = {
    # after the sharded model/optimizer state is written, before the RNG files and the manifest
    "after-state": "import torch.distributed.checkpoint as m; name = 'save'",
    # while the manifest's checksums are being computed (all data files written, not yet renamed)
    "during-manifest": "import retnet.training.checkpoint as m; name = 'sha256_file'",
}


@pytest.mark.parametrize("where", sorted(KILLERS))
def test_sigkill_during_checkpoint_save_then_resume(dataset, tmp_path, where):
    expected = _reference(dataset, tmp_path / "ref")
    run = tmp_path / "killed"
    # the second checkpoint (step 12) dies part-way through; the first (step 6) must survive intact
    prelude = (
        f"import os, signal\n{KILLERS[where]}\nreal = getattr(m, name)\ncalls = []\n"
        "def killer(*a, **k):\n"
        "    out = real(*a, **k)\n"
        "    calls.append(1)\n"
        "    if os.path.isdir(os.path.join(" + repr(str(run)) + ", 'checkpoints', '.step_00000012.tmp')):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return out\n"
        "setattr(m, name, killer)\n"
    )
    proc = run_cli(["train", *to_argv(fast_overrides(dataset, run, steps=STEPS))], prelude=prelude)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGKILL, out
    assert (run / "checkpoints" / ".step_00000012.tmp").is_dir()
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["step_00000006"]
    assert ckpt_io.latest_checkpoint(run).name == "step_00000006"
    assert _resume(dataset, run) == expected
    assert not (run / "checkpoints" / ".step_00000012.tmp").exists()
