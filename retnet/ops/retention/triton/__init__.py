"""Retention on Triton kernels, files by role (docs/spec.md §3 for the arithmetic, docs/architecture.md for layers).

* ``forward.py``: the chunkwise forward kernels (state scan, segment pre-pass, output pass) and their launchers.
* ``backward.py``: the chunkwise backward kernels (reverse scan, dQ/dK, dV) and their launcher.
* ``op.py``: the differentiable op (``torch.library`` custom ops with autograd, traced whole by ``torch.compile``).
* ``step.py``: the fused decode step (recurrent form, in place, CUDA-graph safe).
* ``summary.py``: context parallelism's slice summary (a final-state-only scan and its chunk-parallel gradient).
* ``tuning.py``: every launch choice (block table, segment planning, keep-states policy, decode launch) as values,
  with overrides scoped by :func:`retention_tuning`.
* ``tiles.py``: device helpers the kernels share (block pointers, decays, masks, the normaliser).
* ``dispatch.py``: the backend :func:`retnet.ops.retention.retention` calls (a form to a kernel).

Importing this package imports Triton (an optional dependency); :mod:`retnet.ops.retention` imports it only when
the Triton backend is picked.
"""

from .dispatch import RECURRENT_MAX_T, triton_limitation, triton_retention
from .op import chunk_retention
from .step import retention_step
from .tiles import WIDE_FROM, wide_offsets
from .tuning import (
    BLOCK_TABLE,
    CHUNK,
    FP32_BLOCK,
    KERNELS,
    MAX_K,
    MIN_SEGMENT_CHUNKS,
    ChunkPlan,
    KernelTuning,
    Launch,
    chunk_len,
    chunk_plan,
    current_tuning,
    keeps_states,
    plan_from_ints,
    plan_segments,
    retention_tuning,
    step_launch,
    tuning_ints,
)

__all__ = [
    "BLOCK_TABLE",
    "CHUNK",
    "FP32_BLOCK",
    "KERNELS",
    "MAX_K",
    "MIN_SEGMENT_CHUNKS",
    "RECURRENT_MAX_T",
    "WIDE_FROM",
    "ChunkPlan",
    "KernelTuning",
    "Launch",
    "chunk_len",
    "chunk_plan",
    "chunk_retention",
    "current_tuning",
    "keeps_states",
    "plan_from_ints",
    "plan_segments",
    "retention_step",
    "retention_tuning",
    "step_launch",
    "triton_limitation",
    "triton_retention",
    "tuning_ints",
    "wide_offsets",
]
