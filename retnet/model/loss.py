"""Next-token cross-entropy from the final hidden states: plain, or fused with the LM head.

The plain path forms the logits ``(N, vocab)``, upcasts them to float32 and calls ``F.cross_entropy``. At a
32k vocabulary and 32k tokens per step that is 4 GiB of float32 logits plus their gradient, the largest
activation of a 1.3B training step. The fused path (``liger-kernel``'s fused linear cross-entropy, an optional
CUDA dependency) computes the head's matrix product and the loss chunk by chunk, writes the gradient of the
hidden states and of the head weight during the forward pass, and never holds the full logits.

Both compute the same function: the loss in float32 over log-softmax of the head's logits, ignoring targets
equal to ``IGNORE_INDEX``. The fused path is used only where it can run (CUDA tensors of a floating dtype
below float64, the package importable).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
LOSS_IMPLS = ("auto", "fused", "plain")
REDUCTIONS = ("mean", "sum")


@functools.cache
def _liger_loss():
    """liger-kernel's fused linear cross-entropy function, or None when the package is missing or broken."""
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError:
        return None
    except Exception as err:  # an installed but incompatible version: say so once, train with the plain loss
        logger.warning("liger-kernel is installed but does not import (%s); using the plain loss", err)
        return None
    return liger_fused_linear_cross_entropy


def fused_loss_available(hidden: torch.Tensor) -> bool:
    """Whether the fused path can run on ``hidden``: CUDA, not float64, liger-kernel installed."""
    return hidden.is_cuda and hidden.dtype != torch.float64 and _liger_loss() is not None


def next_token_loss(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    reduction: str = "mean",
    impl: str = "auto",
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ head_weight.T`` against ``targets`` (float32 scalar).

    Args:
        hidden: ``(N, D)`` final hidden states (after the final norm).
        head_weight: ``(vocab, D)`` LM head weight.
        targets: ``(N,)`` int64 target ids; ``IGNORE_INDEX`` positions do not count.
        reduction: ``"mean"`` over the counted targets or ``"sum"``.
        impl: ``"plain"``, ``"fused"`` (liger-kernel; raises where it cannot run) or ``"auto"`` (fused where it
            can run, else plain).
        logits: ``(N, vocab)`` the head's output when the caller has formed it anyway; the plain path then uses it
            instead of recomputing it (and ``auto`` chooses plain).

    Returns:
        The loss, a float32 scalar.

    Raises:
        ValueError: on an unknown ``impl`` or ``reduction``, mismatched shapes, or ``impl="fused"`` where the fused
            path cannot run.
    """
    if impl not in LOSS_IMPLS:
        raise ValueError(f"loss impl must be one of {LOSS_IMPLS}, got {impl!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"loss reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(
            f"hidden must be (N, D) and targets (N,), got {tuple(hidden.shape)} and {tuple(targets.shape)}"
        )
    fused = fused_loss_available(hidden)
    if impl == "fused" and not fused:
        raise ValueError("loss impl 'fused' needs CUDA tensors below float64 and the liger-kernel package")
    if impl == "plain" or not fused or (impl == "auto" and logits is not None):
        if logits is None:
            logits = F.linear(hidden, head_weight)  # (N, vocab); autocast casts as for the model's head
        return F.cross_entropy(logits.float(), targets.long(), ignore_index=IGNORE_INDEX, reduction=reduction)
    if torch.is_autocast_enabled(hidden.device.type):
        # The head weight in the autocast dtype, as F.linear would use it (fp32 master weights, bf16 compute).
        dtype = torch.get_autocast_dtype(hidden.device.type)
        hidden, head_weight = hidden.to(dtype), head_weight.to(dtype)
    loss = _liger_loss()(hidden, head_weight, targets.long(), ignore_index=IGNORE_INDEX, reduction=reduction)
    return loss.float()


def next_token_targets(
    labels: torch.Tensor | None, targets: torch.Tensor | None, shape: torch.Size
) -> torch.Tensor | None:
    """``(B, T)`` next-token targets from aligned ``labels`` (shifted here; the last position is ignored) or from
    ready ``targets``; None when neither is given.

    Raises:
        ValueError: both given, or a shape other than ``shape``.
    """
    if labels is not None and targets is not None:
        raise ValueError("give labels (aligned with input_ids) or targets (already shifted), not both")
    given, name = (labels, "labels") if labels is not None else (targets, "targets")
    if given is None:
        return None
    if given.shape != shape:
        raise ValueError(f"{name} must have the shape of input_ids {tuple(shape)}, got {tuple(given.shape)}")
    if labels is None:
        return targets
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T): position t predicts t + 1
