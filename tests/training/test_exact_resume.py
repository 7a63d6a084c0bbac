"""Exact resume where the restored state matters: dropout draws from the RNG, and fp16 loss scaling changes.

Each test trains 12 steps without a break and 6 + 6 with a resume from the step-6 checkpoint; the losses, the
weights and the saved loop state must be bit-identical. With dropout 0 in fp32 (the basic resume test) neither
the RNG state nor the grad scaler's scale influences anything, so restoring them is only tested here.
"""

from __future__ import annotations

import json

import torch

from retnet.training import checkpoint as ckpt_io
from retnet.training import load_config, train
from retnet.training import trainer as trainer_mod
from retnet.training.artifacts import load_trained

from .corpus import fast_overrides


def _run(dataset, run_dir, resume=None, **extra):
    return train(load_config([], fast_overrides(dataset, run_dir, **extra)), resume=resume)


def _final_state(run_dir) -> tuple[dict, dict]:
    """The last checkpoint's trainer state (step, scaler, ...) and the saved model's weights."""
    last = ckpt_io.list_checkpoints(run_dir)[-1]
    trainer_state = json.loads((last / "trainer.json").read_text())
    return trainer_state, load_trained(run_dir / "model").model.state_dict()


def _assert_same_run(full_dir, resumed_dir):
    (state_a, weights_a), (state_b, weights_b) = _final_state(full_dir), _final_state(resumed_dir)
    assert state_a == state_b
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


def _resume_pair(dataset, tmp_path, **extra):
    full = _run(dataset, tmp_path / "full", steps=12, **extra)
    half = _run(dataset, tmp_path / "half", steps=6, **{"optim.decay_steps": 12}, **extra)
    resumed = _run(dataset, tmp_path / "half", resume=str(tmp_path / "half"), steps=12, **extra)
    assert half.losses == full.losses[:6]
    return full, resumed


def test_exact_resume_with_dropout(dataset, tmp_path):
    """Dropout masks come from the torch RNG: a resume that does not restore it draws other masks."""
    full, resumed = _resume_pair(dataset, tmp_path, **{"model.dropout": 0.2})
    no_dropout = _run(dataset, tmp_path / "plain", steps=2)
    assert full.losses[:2] != no_dropout.losses  # the dropout is active
    assert resumed.losses == full.losses[6:]  # bit for bit
    _assert_same_run(tmp_path / "full", tmp_path / "half")


class _InfGradient(torch.autograd.Function):
    """Identity forward, inf backward: a finite loss whose fp16-scaled gradients overflow."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def _overflow_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th loss of the next run overflow in the backward (counted per run)."""
    calls = {"n": 0}
    real = trainer_mod.lm_loss_sum

    def loss_with_overflow(model, batch, *args):
        calls["n"] += 1
        loss = real(model, batch, *args)
        return _InfGradient.apply(loss) if calls["n"] == call else loss

    monkeypatch.setattr(trainer_mod, "lm_loss_sum", loss_with_overflow)


def test_exact_resume_after_the_loss_scale_changed(dataset, tmp_path, monkeypatch):
    """An fp16 step overflows before the checkpoint, so the grad scaler skips it and halves its scale; the
    resumed run must continue with the halved scale exactly as the unbroken run."""
    extra = {"precision": "fp16"}
    _overflow_at(monkeypatch, 3)
    full = _run(dataset, tmp_path / "full", steps=12, **extra)
    _overflow_at(monkeypatch, 3)
    half = _run(dataset, tmp_path / "half", steps=6, **{"optim.decay_steps": 12}, **extra)
    monkeypatch.undo()
    resumed = _run(dataset, tmp_path / "half", resume=str(tmp_path / "half"), steps=12, **extra)
    assert half.losses == full.losses[:6]
    saved = json.loads((ckpt_io.list_checkpoints(tmp_path / "half")[0] / "trainer.json").read_text())
    assert saved["step"] == 6
    assert saved["scaler"]["scale"] == 2.0**15  # the default 2^16, halved once by the overflow at step 3
    assert resumed.losses == full.losses[6:]  # bit for bit
    _assert_same_run(tmp_path / "full", tmp_path / "half")
