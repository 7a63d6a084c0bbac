"""The device-side update decision and the deferred read of a step's numbers (retnet/training/step_stats.py)."""

import copy

import pytest
import torch

from retnet.training.step_stats import StepStats, step_where


def _optimizer(fused: bool):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, fused=fused or None)
    for _ in range(2):  # moments and step counts that a skipped step must leave alone
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    for p in params:
        p.grad = torch.randn_like(p)
    return params, opt


@pytest.mark.parametrize("fused", [True, False])
def test_a_skipped_step_changes_nothing_and_a_taken_one_is_a_plain_step(fused):
    params, opt = _optimizer(fused)
    before = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in params]
    step_where(opt, torch.tensor(False))
    assert all(torch.equal(a, p) for a, p in zip(before[1], params))
    for key, state in opt.state_dict()["state"].items():
        assert all(torch.equal(v, before[0]["state"][key][name]) for name, v in state.items())
    assert not hasattr(opt, "found_inf")

    twin_params, twin = _optimizer(fused)
    step_where(opt, torch.tensor(True))
    twin.step()
    assert all(torch.equal(a, b) for a, b in zip(params, twin_params))
    assert [s["step"] for s in opt.state.values()] == [s["step"] for s in twin.state.values()]


def test_step_stats_carry_the_three_numbers():
    stats = StepStats.start(7, torch.tensor(2.5, dtype=torch.float64), torch.tensor(float("inf")), torch.tensor(False))
    assert stats.step == 7 and stats.read() == (2.5, float("inf"), False)
    assert StepStats.start(1, torch.tensor(1.0), torch.tensor(0.5), torch.tensor(True)).read() == (1.0, 0.5, True)


@pytest.mark.gpu
def test_step_stats_from_the_gpu_arrive_without_a_synchronisation_of_the_caller():
    loss = torch.tensor(3.0, device="cuda")
    stats = StepStats.start(1, loss, loss * 2, torch.isfinite(loss))
    assert stats.values.device.type == "cpu" and stats.values.is_pinned() and stats.ready is not None
    assert stats.read() == (3.0, 6.0, True)
