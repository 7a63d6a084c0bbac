"""torch.distributed setup, teardown, model wrapping (DDP or FSDP2) and the context-parallel layout, from outside
the model.

This is the only module that reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by ``torchrun``, single- or
multi-node). The model code stays single-device; :func:`wrap_model` shards each block with ``fully_shard`` and
then the root, or wraps the whole model in DDP.

Context parallelism (docs/parallel.md): :func:`parallel_layout` arranges the ranks as a 2-D device mesh
``(dp, cp)``. The ``cp`` ranks of one row of the mesh share the same sequences, each holding a contiguous slice
(:meth:`ParallelLayout.shard`); the ``dp`` rows get different sequences. Gradients are still averaged over every
rank (DDP or FSDP2 over the whole world), which sums the slices' contributions as the loss scaling expects.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..data import Batch
from ..ops.retention.context_parallel import ContextParallelGroup, slice_bounds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str = "", device_type: str = "cpu") -> DistInfo:
    """Join the process group described by the launcher's environment (a no-op for a single process).

    Args:
        backend: "nccl", "gloo", ...; empty picks nccl for CUDA and gloo otherwise.
        device_type: "cuda" or "cpu" (selects the default backend and the local device).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if world_size > 1 and not dist.is_initialized():
        device_id = None
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
            device_id = torch.device("cuda", info.local_rank)
        dist.init_process_group(backend or ("nccl" if device_type == "cuda" else "gloo"), device_id=device_id)
        logger.debug("rank %d/%d joined (%s)", info.rank, world_size, dist.get_backend())
    return info


def teardown() -> None:
    """Leave the process group if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (identity for one process)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def resolve_strategy(strategy: str, info: DistInfo) -> str:
    """ "auto" means DDP with several ranks and plain single-device training otherwise."""
    if strategy == "auto":
        return "ddp" if info.distributed else "none"
    if strategy in ("ddp", "fsdp") and not info.distributed:
        return "none"
    return strategy


def wrap_model(model: nn.Module, strategy: str, info: DistInfo, device: torch.device) -> nn.Module:
    """Apply DDP or FSDP2 to ``model`` (already on ``device``); "none" returns it unchanged.

    FSDP2 shards every block of ``model.trunk.layers`` and then the root (embedding, final norm, LM head).
    """
    if strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.trunk.layers:
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"unknown parallel strategy {strategy!r}")


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying model of a DDP / compiled wrapper."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


@dataclass(frozen=True)
class ParallelLayout:
    """Where this rank sits on the ``(dp, cp)`` mesh.

    Attributes:
        dp_rank: index of this rank's data-parallel row (which sequences it gets).
        dp_size: number of rows (the global batch is divided over them).
        cp_rank: index of this rank's slice within its row.
        cp_size: ranks each sequence is split over (1: no context parallelism).
        cp_group: the process group of this rank's row (None when ``cp_size`` is 1).
    """

    dp_rank: int = 0
    dp_size: int = 1
    cp_rank: int = 0
    cp_size: int = 1
    cp_group: dist.ProcessGroup | None = None

    def shard(self, batch: Batch) -> tuple[Batch, ContextParallelGroup | None]:
        """This rank's slice of ``batch`` along the sequence, and the group to hand the model.

        Rows ``(B, T)`` are cut at the same columns (:func:`slice_bounds` of T). A packed row ``(1, B·T)`` is cut as
        one sequence: its ``cu_seqlens`` reset the state at every row start, so the result is the same function.
        ``cu_seqlens`` stays global (every rank needs the whole sequence's boundaries).

        Raises:
            ValueError: a sequence shorter than the number of slices.
        """
        if self.cp_size == 1:
            return batch, None
        total = batch.input_ids.shape[1]
        start, length = slice_bounds(total, self.cp_size, self.cp_rank)
        cols = slice(start, start + length)
        local = Batch(batch.input_ids[:, cols], batch.targets[:, cols], batch.cu_seqlens)
        return local, ContextParallelGroup(self.cp_group, start, length, total)


def parallel_layout(info: DistInfo, context: int, device_type: str = "cpu") -> ParallelLayout:
    """The ``(dp, cp)`` layout of ``info.world_size`` ranks with ``context`` ranks per sequence.

    With ``context`` > 1 this builds a 2-D ``torch.distributed.device_mesh`` (dims ``"dp"``, ``"cp"``); rank r sits
    in row r // context at column r % context, so a sequence's slices sit on neighbouring ranks (one node).

    Raises:
        ValueError: ``context`` < 1 or not a divisor of the world size.
    """
    if context < 1 or info.world_size % context:
        raise ValueError(f"parallel.context={context} must be >= 1 and divide the world size {info.world_size}")
    dp = info.world_size // context
    if context == 1:
        return ParallelLayout(dp_rank=info.rank, dp_size=dp)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device_type, (dp, context), mesh_dim_names=("dp", "cp"))
    return ParallelLayout(
        dp_rank=mesh.get_local_rank("dp"), dp_size=dp, cp_rank=mesh.get_local_rank("cp"), cp_size=context,
        cp_group=mesh.get_group("cp"),
    )  # fmt: skip
