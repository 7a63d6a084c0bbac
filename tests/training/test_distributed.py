"""Two processes with gloo (DDP and FSDP2) agree with one process; sharded checkpoints resume on one rank."""

from __future__ import annotations

import pytest
import torch

from retnet.training import load_config, train

from .corpus import fast_overrides, to_argv
from .subproc import run_cli, train_losses

pytestmark = pytest.mark.distributed


def _two_ranks(dataset, run_dir, tmp_path, **extra):
    proc = run_cli(["train", *to_argv(fast_overrides(dataset, run_dir, **extra))], nproc=2, script_dir=tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return train_losses(run_dir)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(dataset, tmp_path, strategy):
    extra = {"steps": 8, "parallel.strategy": strategy, "checkpoint.every": 4}
    single = train(load_config([], fast_overrides(dataset, tmp_path / "one", steps=8)))
    two = _two_ranks(dataset, tmp_path / strategy, tmp_path, **extra)
    assert two == pytest.approx([x for _, x in single.losses], rel=1e-5, abs=1e-6)
    if strategy == "fsdp":
        # the sharded checkpoint of step 4 resumes on a single process and continues the same run
        run = tmp_path / strategy
        resumed = train(
            load_config([], fast_overrides(dataset, run, steps=8)), resume=str(run / "checkpoints" / "step_00000004")
        )
        assert [x for _, x in resumed.losses] == pytest.approx([x for _, x in single.losses][4:], rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gpus_with_nccl_match_one(dataset, tmp_path, strategy):
    extra = {"steps": 8, "device": "cuda", "parallel.backend": "nccl"}
    single = train(load_config([], fast_overrides(dataset, tmp_path / "one", **extra)))
    two = _two_ranks(dataset, tmp_path / strategy, tmp_path, **extra, **{"parallel.strategy": strategy})
    assert two == pytest.approx([x for _, x in single.losses], rel=1e-3, abs=1e-4)
