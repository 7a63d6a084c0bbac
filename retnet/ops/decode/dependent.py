"""Programmatic dependent launch of the fused decode kernels (Hopper and later; docs/inference.md).

A kernel launched as a programmatic dependent may start while the kernel before it in the stream runs its last
wave, instead of after it has finished. At batch 1 every kernel of the step is a short stream of weights, so the
ramp at its start and the ragged end of its last wave are a large part of its time; a dependent launch overlaps
them with its neighbours'. Each fused decode kernel therefore

1. loads what no kernel of the step writes (the first block of its weight rows; the retention step its state,
   which only that layer's step of the previous token wrote);
2. calls :func:`await_previous`: it waits until the previous kernel has finished and its writes are visible,
   then lets the next kernel start;
3. only then reads activations and writes anything.

Because each kernel lets the next one start only after its own wait, a kernel that starts finds every kernel before
the previous one finished: so the early loads of step 1 read settled memory, and the writes of step 3 never race a
reader. Outside a dependent launch the wait returns at once, so the kernels compute the same either way.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from ..triton_utils import cuda_capability, interpreter_active


@triton.jit
def await_previous(DEPENDENT: tl.constexpr):
    """Wait for the previous kernel's results, then let the next kernel start (nothing unless ``DEPENDENT``)."""
    if DEPENDENT:
        gdc_wait()
        gdc_launch_dependents()


def dependent_launch_available(device: torch.device) -> bool:
    """Whether kernels on ``device`` can be launched as programmatic dependents (CUDA, compute capability ≥ 9.0,
    not under the Triton interpreter)."""
    if interpreter_active():
        return False
    capability = cuda_capability(device)
    return capability is not None and capability >= (9, 0)


def launch_options(dependent: bool, device: torch.device) -> dict:
    """The launch keyword arguments of a kernel launched as a programmatic dependent or not.

    Raises:
        ValueError: ``dependent`` where :func:`dependent_launch_available` is false.
    """
    if not dependent:
        return {}
    if not dependent_launch_available(device):
        raise ValueError(f"programmatic dependent launch needs a CUDA GPU of compute capability ≥ 9.0, not {device}")
    return {"launch_pdl": True}
