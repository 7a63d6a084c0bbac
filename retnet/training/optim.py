"""AdamW with the paper's settings (§3.1): β = (0.9, 0.98), decoupled weight decay on matrices only."""

from __future__ import annotations

import torch
from torch import nn

from .config import OptimSection


def build_optimizer(model: nn.Module, cfg: OptimSection, *, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters: weight decay on tensors of rank >= 2, none on norms and biases.

    Args:
        model: the (possibly wrapped) model.
        cfg: the optimizer section.
        fused: use the fused CUDA implementation (None: when every parameter is on CUDA).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if fused is None:
        fused = all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused or None)
