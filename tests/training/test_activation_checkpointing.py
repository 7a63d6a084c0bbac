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


@pytest.mark.parametrize(
    "arch",
    [
        "transformer",
        pytest.param(
            "linear_transformer",
            marks=pytest.mark.xfail(
                strict=True, reason="aot_eager's traced backward of the linear-attention block views a strided grad"
            ),
        ),
        "rwkv",
        "h3",
        "hyena",
    ],
)
def test_every_baseline_block_compiles_whole_with_checkpointing(arch):
    """The trainer's fast path (one graph per block, checkpointed) on each baseline: eager's loss and gradients."""
    from retnet.baselines import MixerLM, MixerLMConfig
    from retnet.training.config import TrainConfig
    from retnet.training.trainer import prepare_model

    cfg = MixerLMConfig(
        arch=arch, vocab_size=64, hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_heads=2, ssm_state_size=8,
        hyena_filter_size=16,
    )  # fmt: skip
    torch.manual_seed(0)
    eager = MixerLM(cfg)
    fast = copy.deepcopy(eager)
    fast_cfg = TrainConfig(compile=True, compile_backend="aot_eager", activation_checkpointing="full")
    prepare_model(fast, fast_cfg, torch.device("cpu"))
    ids = torch.randint(0, 64, (2, 16))
    losses = []
    for model in (eager, fast):
        loss = model(ids, labels=ids).loss
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0)
    for (name, a), b in zip(eager.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
