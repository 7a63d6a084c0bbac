"""Activation checkpointing per block: none, selective (recompute elementwise work) or full (recompute all).

``full`` keeps only each block's input and reruns the whole block in the backward pass: the least memory, one
extra forward. ``selective`` keeps what is expensive to recompute — the outputs of matrix products and of the
retention op — and recomputes the rest (norms, rotation, gates, activations), which costs little time because
that work is memory-bound. Parameter names do not change, so checkpoints load with or without it.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

_aten = torch.ops.aten
# Matrix products and attention: recomputing them would cost as much as the forward itself.
_SAVED_OPS = frozenset(
    {
        _aten.mm.default,
        _aten.addmm.default,
        _aten.bmm.default,
        _aten._scaled_dot_product_flash_attention.default,
        _aten._scaled_dot_product_efficient_attention.default,
        _aten._scaled_dot_product_cudnn_attention.default,
    }
)


def _keeps_output(op) -> bool:
    """True for ops whose outputs selective checkpointing saves: matrix products and retnet's own custom ops."""
    if op in _SAVED_OPS:
        return True
    namespace = getattr(op, "namespace", None)
    return namespace == "retnet"


def _selective_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if _keeps_output(op) else CheckpointPolicy.PREFER_RECOMPUTE


def _selective_context():
    return create_selective_checkpoint_contexts(_selective_policy)


def checkpoint_blocks(blocks: nn.ModuleList, mode: str) -> None:
    """Wrap each block's forward for activation checkpointing (in place; ``mode="none"`` leaves them alone).

    Args:
        blocks: the model's blocks.
        mode: ``"none"``, ``"selective"`` or ``"full"``.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in ("none", "selective", "full"):
        raise ValueError(f"activation checkpointing must be 'none', 'selective' or 'full', got {mode!r}")
    if mode == "none":
        return
    extra = {"context_fn": _selective_context} if mode == "selective" else {}
    for block in blocks:
        block.forward = _checkpointed(block.forward, extra)


def _checkpointed(fn, extra: dict):
    @functools.wraps(fn)
    def forward(*args, **kwargs):
        return checkpoint(fn, *args, use_reentrant=False, **extra, **kwargs)

    return forward
