"""Launch tuning of the Triton retention kernels: the one place that picks blocks, warps, stages, scan segments,
whether the forward keeps its per-chunk states, and the decode step's launch.

None of these choices changes the function computed (docs/spec.md §3); they trade speed against memory. Each is a
value, never module state patched at run time:

* :class:`KernelTuning` holds overrides of the measured table and rules below (none by default). It is scoped with
  :func:`retention_tuning`, a context manager over a ``contextvars.ContextVar`` (threads and asyncio tasks see only
  their own), and read with :func:`current_tuning`.
* :func:`chunk_plan` turns the tuning, a call's head dims and dtype into a frozen :class:`ChunkPlan` (the launches of
  every chunkwise kernel). The tuning is read once, at the forward call (``op.chunk_retention``), and travels to the
  custom ops as ints (:meth:`KernelTuning.to_ints`); each op computes its plan from it, so the backward pass
  launches what the forward planned even when it runs after the ``with`` block has exited, or on another thread
  (autograd runs CUDA backward passes on its own threads, which do not see the caller's context variables).
* :func:`step_launch` gives the decode kernel's (BV, num_warps); :func:`plan_segments` splits a state scan that
  has too few programs to fill the GPU.

``torch.compile`` cannot trace a context variable: callers read the tuning through :func:`tuning_ints`, which it
runs while tracing and whose result the compiled graph keeps (like any Python constant it closes over); compile
again to change the tuning of a compiled function. Shapes never enter that read, so dynamic shapes still trace.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
import triton

from ...triton_utils import interpreter_active, next_power_of_2
from .tiles import WIDE_FROM

MAX_K = 256
"""Largest key dim the kernels are tested for (the paper's head size); larger K runs the PyTorch reference."""
MIN_BLOCK = 64
"""Smallest K or V block on the GPU. On sm90 (Triton 3.6) dots with an operand loaded transposed miscompiled
(illegal shared-memory reads, wrong sums) at 32-wide blocks, so smaller head dims are padded up to 64. (128-wide
blocks failed in an earlier, fused design; these kernels pass every GPU test with the 128-wide blocks of
``BLOCK_TABLE``.)"""

KERNELS = ("state_fwd", "output_fwd", "state_bwd", "dqk_bwd", "dv_bwd")
"""The chunkwise kernels with a row in ``BLOCK_TABLE`` (the segment pre-passes launch like their scans)."""

# Per kernel: (BK, BV, num_warps, num_stages), measured on an H200 (bf16, T = 8192): `benchmarks/ops.py --sweep`
# over 5-8 variants per kernel at H 8, K 256, V 512 and H 16, K = V = 128; each entry is the fastest or within
# 3.5 % of it at both geometries (docs/benchmarks/h200-2026-11-28c/sweep-T8192.json). Blocks wider than a head
# dim are cut to it (``block_size``).
BLOCK_TABLE: Mapping[str, tuple[int, int, int, int]] = MappingProxyType(
    {
        "state_fwd": (64, 128, 4, 2),
        "output_fwd": (64, 128, 4, 2),
        "state_bwd": (64, 128, 4, 3),
        "dqk_bwd": (128, 64, 8, 3),
        "dv_bwd": (64, 128, 4, 3),
    }
)
FP32_BLOCK = (64, 64, 8, 2)
"""Every kernel's (BK, BV, num_warps, num_stages) for float32 inputs, whose tiles are twice as large: the wide
16-bit entries above would overflow shared memory or spill kilobytes per thread (kernel_resources.py; float32
is the exactness path and is not timed)."""

CHUNK = 64
"""Longest chunk of the kernels (16-bit and float32 alike). Longer chunks store fewer per-chunk states (the
kernels' main memory traffic at large head dims) but make the intra-chunk tiles quadratically larger."""

MIN_SEGMENT_CHUNKS = 8
"""Shortest segment worth its pre-pass; below it, a (K block, V block, batch·head) scans the whole sequence."""
SEGMENT_PROGRAMS_PER_SM = 4
"""Programs per multiprocessor a split scan aims at (``plan_segments``)."""

KEEP_STATES_POLICIES = ("auto", "always", "never")


def _is_power_of_2(n: object) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1 and n & (n - 1) == 0


def _check_launch(name: str, value: object) -> tuple[int, int, int, int]:
    ok = isinstance(value, (tuple, list)) and len(value) == 4
    if ok:
        bk, bv, warps, stages = value
        ok = _is_power_of_2(bk) and _is_power_of_2(bv) and min(bk, bv) >= 16 and _is_power_of_2(warps)
        ok = ok and isinstance(stages, int) and not isinstance(stages, bool) and stages >= 1
    if not ok:
        raise ValueError(
            f"blocks[{name!r}] must be (BK, BV, num_warps, num_stages) with BK, BV powers of two >= 16, num_warps "
            f"a power of two and num_stages >= 1, got {value!r}"
        )
    return tuple(value)


@dataclass(frozen=True)
class KernelTuning:
    """Overrides of the kernels' measured launch choices; the defaults override nothing.

    Attributes:
        keep_states: whether the forward pass keeps its per-chunk states for the backward pass instead of the
            backward recomputing them: ``"always"``, ``"never"``, or ``"auto"`` (keep them when they take no more
            memory than k and v, as with K = V = 128; at K = 256, V = 512 they take 2.7 times as much, so they
            are recomputed).
        segment_chunks: fix the state scans' segment length in chunks (both directions); None lets
            :func:`plan_segments` choose.
        step_launch: fix the decode kernel's ``(BV, num_warps)``; None lets :func:`step_launch` choose.
        blocks: ``(kernel, (BK, BV, num_warps, num_stages))`` pairs replacing rows of ``BLOCK_TABLE`` (for every
            dtype); a mapping is accepted and stored as pairs sorted by kernel name.
        wide_from: element count from which the kernels use int64 offsets (``tiles.WIDE_FROM``; 0 forces them).

    Raises:
        ValueError: on a value the kernels cannot launch with, naming the field.
    """

    keep_states: str = "auto"
    segment_chunks: int | None = None
    step_launch: tuple[int, int] | None = None
    blocks: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()
    wide_from: int = WIDE_FROM

    def __post_init__(self) -> None:
        if self.keep_states not in KEEP_STATES_POLICIES:
            raise ValueError(f"keep_states must be 'auto', 'always' or 'never', got {self.keep_states!r}")
        seg = self.segment_chunks
        if seg is not None and (not isinstance(seg, int) or isinstance(seg, bool) or seg < 1):
            raise ValueError(f"segment_chunks must be None or an int >= 1, got {seg!r}")
        step = self.step_launch
        if step is not None:
            if not (isinstance(step, (tuple, list)) and len(step) == 2 and _is_power_of_2(step[0]) and step[0] >= 16):
                raise ValueError(f"step_launch must be None or (BV, num_warps), BV a power of two >= 16, got {step!r}")
            if not _is_power_of_2(step[1]):
                raise ValueError(f"step_launch's num_warps must be a power of two, got {step[1]!r}")
            object.__setattr__(self, "step_launch", tuple(step))
        pairs = self.blocks.items() if isinstance(self.blocks, Mapping) else self.blocks
        checked = {}
        for name, value in pairs:
            if name not in KERNELS:
                raise ValueError(f"blocks: unknown kernel {name!r}; expected one of {KERNELS}")
            checked[name] = _check_launch(name, value)
        object.__setattr__(self, "blocks", tuple(sorted(checked.items())))
        wide = self.wide_from
        if not isinstance(wide, int) or isinstance(wide, bool) or wide < 0:
            raise ValueError(f"wide_from must be an int >= 0, got {wide!r}")

    def block_row(self, kernel: str, dtype: torch.dtype) -> tuple[int, int, int, int]:
        """(BK, BV, num_warps, num_stages) of ``kernel`` for inputs of ``dtype``, before cutting to the head dims."""
        override = dict(self.blocks).get(kernel)
        if override is not None:
            return override
        return FP32_BLOCK if dtype == torch.float32 else BLOCK_TABLE[kernel]

    def to_ints(self) -> list[int]:
        """The tuning as a flat list of ints, the argument form a custom op's schema takes (``from_ints`` inverts
        it): keep-states policy index, segment chunks, step BV and warps (0: not set), ``wide_from``, then
        (BK, BV, num_warps, num_stages) per name of ``KERNELS`` (zeros: not overridden)."""
        rows = dict(self.blocks)
        step = self.step_launch or (0, 0)
        head = [KEEP_STATES_POLICIES.index(self.keep_states), self.segment_chunks or 0, *step, self.wide_from]
        return head + [x for name in KERNELS for x in rows.get(name, (0, 0, 0, 0))]

    @classmethod
    def from_ints(cls, ints: Sequence[int]) -> KernelTuning:
        """Rebuild a tuning from :meth:`to_ints`.

        Raises:
            ValueError: on a list of the wrong length or with values the kernels cannot launch with.
        """
        if len(ints) != 5 + 4 * len(KERNELS):
            raise ValueError(f"a KernelTuning has {5 + 4 * len(KERNELS)} ints, got {len(ints)}")
        policy, seg, step_bv, step_warps, wide_from = ints[:5]
        rows = {name: tuple(ints[5 + 4 * i : 9 + 4 * i]) for i, name in enumerate(KERNELS)}
        return cls(
            keep_states=KEEP_STATES_POLICIES[policy],
            segment_chunks=seg or None,
            step_launch=(step_bv, step_warps) if step_bv else None,
            blocks={name: row for name, row in rows.items() if any(row)},
            wide_from=wide_from,
        )


DEFAULT_TUNING = KernelTuning()
"""No overrides: the measured table and rules."""
_TUNING = contextvars.ContextVar("retnet_retention_tuning", default=DEFAULT_TUNING)


def current_tuning() -> KernelTuning:
    """The :class:`KernelTuning` in effect in this thread or task (set by :func:`retention_tuning`)."""
    return _TUNING.get()


@torch.compiler.assume_constant_result
def tuning_ints() -> list[int]:
    """:meth:`KernelTuning.to_ints` of :func:`current_tuning`; under ``torch.compile`` run once while tracing."""
    return _TUNING.get().to_ints()


@contextlib.contextmanager
def retention_tuning(tuning: KernelTuning | None = None, /, **overrides) -> Iterator[KernelTuning]:
    """Scope kernel-tuning overrides: ``with retention_tuning(keep_states="always", segment_chunks=4): ...``.

    Calls made inside the block (their forward pass; the backward pass reuses the forward's plan) use the
    tuning; it is restored on exit. Nested blocks override the enclosing one field by field, and ``blocks``
    rows merge with the enclosing rows.

    Args:
        tuning: the tuning to start from (default: the one in effect).
        **overrides: fields of :class:`KernelTuning` to replace.

    Yields:
        The tuning in effect inside the block.

    Raises:
        TypeError: on an unknown field name.
        ValueError: on a value the kernels cannot launch with.
    """
    base = current_tuning() if tuning is None else tuning
    if "blocks" in overrides:
        new_rows = overrides["blocks"]
        new_rows = new_rows.items() if isinstance(new_rows, Mapping) else new_rows
        overrides["blocks"] = {**dict(base.blocks), **dict(new_rows)}
    token = _TUNING.set(dataclasses.replace(base, **overrides))
    try:
        yield _TUNING.get()
    finally:
        _TUNING.reset(token)


# ---------------------------------------------------------------------------------------------------------
# The chunkwise kernels' plan
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """One kernel's launch: its block widths over K and V (``BK``, ``BV`` constexprs), warps and stages."""

    BK: int
    BV: int
    num_warps: int
    num_stages: int

    @property
    def options(self) -> dict[str, int]:
        """The launch keywords Triton takes: ``num_warps`` and ``num_stages``."""
        return {"num_warps": self.num_warps, "num_stages": self.num_stages}


@dataclass(frozen=True)
class ChunkPlan:
    """How one chunkwise call launches its kernels (from the table, the tuning and the head dims).

    Attributes:
        launches: one :class:`Launch` per name of ``KERNELS``, in that order.
        segment_chunks: the state scans' segment length in chunks, or None for :func:`plan_segments`' choice.
        wide_from: element count from which offsets are int64.
        keep_states: the forward keeps its per-chunk states for the backward.
    """

    launches: tuple[Launch, ...]
    segment_chunks: int | None
    wide_from: int
    keep_states: bool

    def launch(self, kernel: str) -> Launch:
        """The :class:`Launch` of ``kernel`` (a name of ``KERNELS``)."""
        return self.launches[KERNELS.index(kernel)]


def chunk_len(T: int, cap: int | None = None) -> int:
    """Chunk length of the kernels for a sequence of T tokens, at most ``cap`` (default ``CHUNK``); the result
    does not depend on it."""
    return min(CHUNK if cap is None else cap, max(16, next_power_of_2(T)))


def block_size(dim: int, cap: int) -> int:
    """Block width over a head dim: its next power of two, at most ``cap`` and at least ``MIN_BLOCK`` on the GPU.

    Under Triton's interpreter, which pays per program rather than per element, the widest block up to 128.
    """
    if interpreter_active():
        return min(128, max(16, next_power_of_2(dim)))
    return max(MIN_BLOCK, min(cap, next_power_of_2(dim)))


def state_bytes(T: int, K: int, V: int, itemsize: int) -> int:
    """Bytes of the per-chunk states ``h`` of one (batch, head) row of T tokens."""
    return triton.cdiv(T, chunk_len(T)) * K * V * itemsize


def keeps_states(policy: str, T: int, K: int, V: int, k_size: int, v_size: int) -> bool:
    """Whether a forward pass keeps its per-chunk states under ``policy`` (``KernelTuning.keep_states``).

    ``"auto"`` keeps them when they take no more memory than k and v (of element sizes ``k_size``, ``v_size``).
    """
    if policy not in KEEP_STATES_POLICIES:
        raise ValueError(f"keep_states must be 'auto', 'always' or 'never', got {policy!r}")
    if policy != "auto":
        return policy == "always"
    return state_bytes(T, K, V, k_size) <= T * (K * k_size + V * v_size)


def chunk_plan(
    K: int, V: int, dtype: torch.dtype, tuning: KernelTuning | None = None, *, keep_states: bool = False
) -> ChunkPlan:
    """The :class:`ChunkPlan` of a chunkwise call with head dims K and V on inputs of ``dtype``.

    Args:
        K: head dim of q and k.
        V: head dim of v.
        dtype: dtype of q, k and v.
        tuning: overrides (default: :func:`current_tuning`).
        keep_states: the forward keeps its per-chunk states (decided by :func:`keeps_states`).

    Returns:
        The frozen plan: blocks from ``BLOCK_TABLE`` (``FP32_BLOCK`` for float32) or the tuning, cut to the head
        dims by :func:`block_size`.
    """
    tuning = current_tuning() if tuning is None else tuning
    launches = []
    for name in KERNELS:
        bk, bv, warps, stages = tuning.block_row(name, dtype)
        launches.append(Launch(block_size(K, bk), block_size(V, bv), warps, stages))
    return ChunkPlan(tuple(launches), tuning.segment_chunks, tuning.wide_from, keep_states)


@functools.lru_cache(maxsize=256)
def plan_from_ints(K: int, V: int, dtype: torch.dtype, tuning: tuple[int, ...], keep_states: bool) -> ChunkPlan:
    """:func:`chunk_plan` for a tuning in its :meth:`KernelTuning.to_ints` form (as a tuple), cached: the custom
    ops' way to their plan (one validation per distinct call shape, not per call)."""
    return chunk_plan(K, V, dtype, KernelTuning.from_ints(tuning), keep_states=keep_states)


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _multiprocessors(device: torch.device) -> int:
    if interpreter_active() or device.type != "cuda":
        return 1
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def plan_segments(
    NT: int,
    programs_per_segment: int,
    device: torch.device,
    segment_chunks: int | None = None,
    *,
    final_state_only: bool = False,
) -> tuple[int, int]:
    """(chunks per segment, number of segments) of a state scan over NT chunks.

    A scan with fewer programs than half the multiprocessors is split into about four programs per
    multiprocessor; otherwise it is not split. On an H200 (132 multiprocessors; ``benchmarks/ops.py
    --sweep-segments``, 1 to 16 segments): scans of 256 programs (H 16, K = V = 128, T = 8192; H 8, K 256,
    V 512, T = 32,768) were fastest unsplit and one of 128 (H 8, K 256, V 512, T = 65,536) within 2 %;
    a 64-program scan (H 16, K = V = 128, T = 32,768) was fastest in 8 segments (forward+backward 3.52 ms
    unsplit, 3.28 in 5, 3.01 in 8) and a 32-program one (T = 65,536) in 16 (5.05 unsplit, 3.31 in 9, 3.03 in 16).

    Args:
        NT: chunks in the sequence.
        programs_per_segment: programs of one segment's scan ((K blocks)·(V blocks)·batch·heads).
        device: where the scan runs (its multiprocessor count).
        segment_chunks: a fixed segment length in chunks (``KernelTuning.segment_chunks``), or None to choose.
        final_state_only: the scan writes no per-chunk states (a context-parallel slice summary): every segment but
            the last then runs in the parallel pre-pass, so it is split at any program count (a rule by
            construction, not yet timed on a GPU; ``benchmarks/context_parallel.py`` times the summary).
    """
    if segment_chunks is not None:
        seg_nt = max(1, min(segment_chunks, NT))
        return seg_nt, triton.cdiv(NT, seg_nt)
    sms = _multiprocessors(device)
    if 2 * programs_per_segment > sms and not final_state_only:
        return NT, 1
    nseg = max(1, min(SEGMENT_PROGRAMS_PER_SM * sms // programs_per_segment, NT // MIN_SEGMENT_CHUNKS))
    seg_nt = triton.cdiv(NT, nseg)
    return seg_nt, triton.cdiv(NT, seg_nt)


# ---------------------------------------------------------------------------------------------------------
# The decode step's launch
# ---------------------------------------------------------------------------------------------------------


def step_launch(B: int, H: int, K: int, V: int, tuning: KernelTuning | None = None) -> tuple[int, int]:
    """(BV, num_warps) of the decode kernel: narrow slices to cover the GPU when there are few (batch, head) rows,
    wide ones (fewer programs, longer contiguous rows of S) otherwise. At K = 256, V = 512 on the H200
    (``ops.py --sweep-decode``, 16 steps per CUDA graph): BV 16 is best at B·H = 8 (42.6 % of copy bandwidth
    against 37.1 % for 32); BV 64 at B·H = 128 (82.5 % against 77.0 % for 16) and 1,024 (96.4 % against 93.9 %
    for 32). A one-token kernel that updates the slice 32 to 128 rows at a time was slower at every batch
    (best 81.1 % at B·H = 128). ``KernelTuning.step_launch`` replaces the rule (default: :func:`current_tuning`).
    """
    tuning = current_tuning() if tuning is None else tuning
    if tuning.step_launch is not None:
        bv, warps = tuning.step_launch
    elif K > 128:
        bv, warps = (16 if B * H < 64 else 64), 4
    else:
        bv, warps = (32 if B * H < 512 else 64), 4
    return min(bv, max(16, next_power_of_2(V))), warps


@functools.lru_cache(maxsize=256)
def step_launch_from_ints(B: int, H: int, K: int, V: int, tuning: tuple[int, ...]) -> tuple[int, int, int]:
    """``(BV, num_warps, wide_from)`` of a decode step for a tuning in its :meth:`KernelTuning.to_ints` form (as a
    tuple), cached: the step op's way to its launch."""
    tuned = KernelTuning.from_ints(tuning)
    return (*step_launch(B, H, K, V, tuned), tuned.wide_from)
