"""Activation checkpointing: every mode gives the plain gradients; each recomputes what it promises."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.training.activation_checkpointing import checkpoint_blocks


class _CountOps(TorchDispatchMode):
    """Counts the matrix products and the rsqrt calls (the norms) that run under it."""

    def __init__(self):
        super().__init__()
        self.mm = self.rsqrt = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.mm += name in ("mm", "addmm", "bmm")
        self.rsqrt += name == "rsqrt"
        return func(*args, **(kwargs or {}))


def _grads_and_backward_ops(model, ids):
    loss = model(ids, labels=ids).loss
    with _CountOps() as counts:
        loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}, counts


def test_modes_give_the_plain_gradients_and_recompute_what_they_promise():
    torch.manual_seed(0)
    base = RetNetForCausalLM(RetNetConfig.from_preset("debug", num_hidden_layers=3)).double()
    ids = torch.randint(0, 256, (2, 40))
    results = {}
    for mode in ("none", "selective", "full"):
        model = copy.deepcopy(base)
        checkpoint_blocks(model.trunk.layers, mode)
        results[mode] = _grads_and_backward_ops(model, ids)
    plain, none = results["none"]
    for mode in ("selective", "full"):
        grads, _ = results[mode]
        for name, g in plain.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-12, atol=1e-14, msg=f"{mode}: {name}")
    selective, full = results["selective"][1], results["full"][1]
    # Backward work: selective reruns the norms but no matrix product; full reruns the matrix products too.
    assert selective.mm == none.mm and selective.rsqrt > none.rsqrt, (none.__dict__, selective.__dict__)
    assert full.mm > none.mm and full.rsqrt >= selective.rsqrt, (none.__dict__, full.__dict__)
    names = [n for n, _ in base.named_parameters()]
    checkpoint_blocks(base.trunk.layers, "full")
    assert [n for n, _ in base.named_parameters()] == names


def test_unknown_mode_is_refused():
    model = RetNetForCausalLM(RetNetConfig.from_preset("debug"))
    with pytest.raises(ValueError, match="activation checkpointing must be"):
        checkpoint_blocks(model.trunk.layers, "some")
