"""torch.distributed setup, teardown and model wrapping (DDP or FSDP2), applied from outside the model.

This is the only module that reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by ``torchrun``, single- or
multi-node). The model code stays single-device; :func:`wrap_model` shards each block with ``fully_shard`` and
then the root, or wraps the whole model in DDP.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

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
