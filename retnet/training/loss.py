"""The summed next-token loss of one batch: the single forward that training and evaluation share."""

from __future__ import annotations

import torch
from torch import nn

from ..data import Batch


def lm_loss_sum(
    model: nn.Module, batch: Batch, form: str, chunk_size: int, loss_impl: str = "auto", cp_group=None
) -> torch.Tensor:
    """Summed next-token cross-entropy of ``batch`` (float32 scalar); the logits are never returned.

    Args:
        model: the (possibly wrapped) language model.
        batch: inputs, next-token targets and document boundaries.
        form: retention form of the forward pass.
        chunk_size: chunk size of the chunkwise form.
        loss_impl: ``"auto"``, ``"fused"`` or ``"plain"`` (:func:`retnet.model.loss.next_token_loss`).
        cp_group: ``batch`` is this rank's slice of the sequences (context parallelism; see ``CausalLM.forward``).
    """
    extra = {} if cp_group is None else {"cp_group": cp_group}
    out = model(
        batch.input_ids,
        form=form,
        chunk_size=chunk_size,
        cu_seqlens=batch.cu_seqlens,
        targets=batch.targets,
        loss_reduction="sum",
        loss_impl=loss_impl,
        return_logits=False,
        **extra,
    )
    return out.loss
