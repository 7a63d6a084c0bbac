"""Triton helpers shared by the retention kernels: capability checks, dot precision, interpreter detection.

The kernels themselves live with their op (``ops/retention/triton/``, whose ``tuning.py`` holds their launch
choices); this module holds what any Triton op needs and nothing op-specific.
"""

from __future__ import annotations

import functools
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton is an optional dependency (extra "triton").
    triton = None
    tl = None


def interpreter_active() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1`` set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def cuda_capability(device: torch.device | str) -> tuple[int, int] | None:
    """``(major, minor)`` compute capability of a CUDA ``device``; None off CUDA or without a GPU."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return _capability(device.index if device.index is not None else torch.cuda.current_device())


def triton_runtime_available(device: torch.device | str) -> bool:
    """Whether the Triton retention kernels can run on ``device``.

    True on CUDA devices of compute capability 8.0 or newer when Triton imports, and on any device when
    Triton's interpreter is active (used by the CPU test suite).

    Args:
        device: the device the inputs live on.

    Returns:
        True if ``backend="triton"`` can run there.
    """
    if triton is None:
        return False
    if interpreter_active():
        return True
    capability = cuda_capability(device)
    return capability is not None and capability >= (8, 0)  # the kernels use bf16 dots (Ampere or newer)


def dot_precision(dtype: torch.dtype) -> str:
    """Triton ``input_precision`` for dots on ``dtype`` operands.

    float32 follows PyTorch's own switch (``torch.set_float32_matmul_precision``): "highest" (PyTorch's default)
    gives exact IEEE float32 products, anything else TF32. 16-bit operands are exact in either mode.

    Args:
        dtype: dtype of the kernel's dot operands.

    Returns:
        ``"ieee"`` or ``"tf32"``.
    """
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def next_power_of_2(n: int) -> int:
    """Smallest power of two ≥ ``n`` (≥ 1)."""
    return 1 << max(0, (int(n) - 1).bit_length())


def check_cuda_or_interpreter(*tensors: torch.Tensor) -> None:
    """Raise unless the tensors can be handed to a Triton kernel (CUDA, or CPU under the interpreter).

    Raises:
        RuntimeError: on a tensor that no Triton backend here can read.
    """
    for x in tensors:
        if not (x.is_cuda or interpreter_active()):
            raise RuntimeError(f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1), got one on {x.device}")
