"""When input *values* (not just shapes) may be inspected.

Value checks (ids in range, finite decays) read tensors back to the host. That is impossible while
``torch.compile`` traces and while a CUDA graph is being captured, so those checks are skipped there; shape,
dtype and device checks always run.
"""

from __future__ import annotations

import torch


def values_checkable() -> bool:
    """False while tracing with ``torch.compile`` or capturing a CUDA graph, else True."""
    if torch.compiler.is_compiling():
        return False
    return not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())
