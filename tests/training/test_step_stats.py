"""The device-side update decision and the deferred read of a step's numbers (retnet/training/step_stats.py)."""

import copy

import pytest
import torch

from retnet.training.step_stats import StepStats, step_if_finite, step_where


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


_FSDP_CHECK = """
import os, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from retnet.training.step_stats import step_where
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"])
dist.init_process_group("gloo", rank=0, world_size=1)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
fully_shard(model)
opt = torch.optim.AdamW(model.parameters(), fused=True)
model(torch.randn(4, 8)).sum().backward()
before = [p.full_tensor().clone() for p in model.parameters()]
step_where(opt, torch.tensor(False))
assert all(torch.equal(a, p.full_tensor()) for a, p in zip(before, model.parameters()))
step_where(opt, torch.tensor(True))
assert not any(torch.equal(a, p.full_tensor()) for a, p in zip(before, model.parameters()))
dist.destroy_process_group()
"""


def test_step_where_takes_sharded_parameters():
    """FSDP2's DTensor parameters: the fused kernel takes the plain 0-d decision beside them (a child process with
    its own one-rank process group)."""
    import socket
    import subprocess
    import sys

    from .subproc import child_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**child_env(), "PORT": str(port)}
    done = subprocess.run([sys.executable, "-c", _FSDP_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("loss", "norm", "taken"), [(1.0, 2.0, True), (float("nan"), 2.0, False), (1.0, float("inf"), False)]
)
def test_step_if_finite_takes_only_finite_steps(loss, norm, taken):
    params, opt = _optimizer(fused=True)
    before = [p.detach().clone() for p in params]
    got = step_if_finite(opt, torch.tensor(loss), torch.tensor(norm))
    assert bool(got) == taken and any(not torch.equal(a, p) for a, p in zip(before, params)) == taken
