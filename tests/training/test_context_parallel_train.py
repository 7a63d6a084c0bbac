"""``parallel.context``: a 2-rank context-parallel run (each sequence split over both ranks) equals a 1-rank run step
for step, with packed documents (DDP) and with plain rows (FSDP2); its checkpoint resumes on one rank; the mesh
layout and the slicing of a batch."""

from __future__ import annotations

import multiprocessing
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from retnet.data import Batch
from retnet.training import load_config, train
from retnet.training.distributed import DistInfo, ParallelLayout, parallel_layout

from .corpus import fast_overrides
from .subproc import train_losses

CONTEXT = {"parallel.context": 2, "checkpoint.every": 2}
RUNS = {
    "packed": {"parallel.strategy": "ddp"},
    "rows": {"parallel.strategy": "fsdp", "data.reset_at_boundaries": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, dataset, root, ports) -> None:
    torch.set_num_threads(1)
    for (name, extra), port in zip(RUNS.items(), ports):
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        result = train(load_config([], fast_overrides(dataset, root / name, steps=4, **CONTEXT, **extra)))
        assert result.rank == rank


@pytest.mark.distributed
def test_two_rank_context_parallel_run_matches_one_rank(dataset, tmp_path):
    # forkserver: both ranks are forked from one fresh process that imported the package once
    multiprocessing.set_forkserver_preload(["torch", "retnet.training", __name__])
    ports = [_free_port() for _ in RUNS]
    mp.start_processes(_rank_main, args=(dataset, tmp_path, ports), nprocs=2, join=True, start_method="forkserver")
    for name, extra in RUNS.items():
        single = train(load_config([], fast_overrides(dataset, tmp_path / f"one-{name}", steps=4, **extra)))
        expected = [x for _, x in single.losses]
        assert train_losses(tmp_path / name) == pytest.approx(expected, rel=1e-5, abs=1e-6), name
    # The FSDP2-sharded checkpoint of step 2 of the context-parallel run resumes on one rank without it.
    run = tmp_path / "rows"
    resumed = train(
        load_config([], fast_overrides(dataset, run, steps=4, **RUNS["rows"])),
        resume=str(run / "checkpoints" / "step_00000002"),
    )
    assert [x for _, x in resumed.losses] == pytest.approx(expected[2:], rel=1e-5, abs=1e-6)


def test_layout_needs_a_divisor_of_the_world_size():
    with pytest.raises(ValueError, match="parallel.context=2 must be >= 1 and divide the world size 3"):
        parallel_layout(DistInfo(rank=0, world_size=3), 2)
    assert parallel_layout(DistInfo(rank=2, world_size=3), 1) == ParallelLayout(dp_rank=2, dp_size=3)
    with pytest.raises(ValueError, match="parallel.context=0 is invalid"):
        load_config([], {"parallel": {"context": 0}})


def test_shard_cuts_rows_at_the_same_columns_and_a_packed_row_as_one_sequence():
    ids = torch.arange(14).view(2, 7)
    rows = Batch(ids, ids + 100, None)
    parts = [ParallelLayout(cp_rank=r, cp_size=3).shard(rows) for r in range(3)]
    assert torch.equal(torch.cat([b.input_ids for b, _ in parts], dim=1), ids)
    assert torch.equal(torch.cat([b.targets for b, _ in parts], dim=1), ids + 100)
    assert [(g.start, g.length, g.total_length) for _, g in parts] == [(0, 3, 7), (3, 2, 7), (5, 2, 7)]
    cu = torch.tensor([0, 4, 7, 14])
    packed = Batch(ids.view(1, 14), ids.view(1, 14), cu)
    local, group = ParallelLayout(cp_rank=1, cp_size=2).shard(packed)
    assert torch.equal(local.input_ids, ids.view(1, 14)[:, 7:]) and local.cu_seqlens is cu
    assert (group.start, group.length, group.total_length) == (7, 7, 14)
    assert ParallelLayout().shard(rows) == (rows, None)
