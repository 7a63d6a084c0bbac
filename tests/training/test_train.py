"""Training in-process on CPU: loss falls, exact resume, accumulation, forms, precisions, NaN handling."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from retnet.training import NonFiniteLossError, load_config, train
from retnet.training import checkpoint as ckpt_io
from retnet.training import trainer as trainer_mod
from retnet.training.artifacts import load_trained, sample_text

from .corpus import fast_overrides


def _run(dataset, run_dir, resume=None, **extra):
    return train(load_config([], fast_overrides(dataset, run_dir, **extra)), resume=resume)


def _weights(run_dir):
    return load_trained(run_dir / "model").model.state_dict()


def test_loss_decreases_and_artifacts(dataset, tmp_path):
    res = _run(dataset, tmp_path / "run", steps=40, eval_every=20, tensorboard=True, **{"checkpoint.keep": 2})
    losses = [loss for _, loss in res.losses]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    assert res.val is not None and res.val.perplexity < math.exp(losses[0])
    assert 0 < res.val.bits_per_byte < 8 and res.val.bytes == res.val.tokens - res.val.tokens // 1000
    run = tmp_path / "run"
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["step_00000036", "step_00000040"]
    for name in ("train_config.yaml", "tokenizer/tokenizer_config.json", "metrics.jsonl", "loss_curve.png"):
        assert (run / name).is_file(), name
    if importlib.util.find_spec("tensorboard") is not None:
        assert any((run / "tensorboard").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "val"] == [20, 40]
    trained = load_trained(run)
    text = sample_text(trained, "the ", max_new_tokens=30, greedy=True, stop_at_separator=False)
    ids = trained.tokenizer.encode("the ")
    tokens = trained.model.generate(torch.tensor([ids]), max_new_tokens=30)[0, len(ids) :].tolist()
    assert text == trained.tokenizer.decode(tokens)  # the saved model and tokenizer, round trip
    sampled = [sample_text(trained, "the ", max_new_tokens=30, seed=0) for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_exact_resume(dataset, tmp_path):
    full = _run(dataset, tmp_path / "full", steps=12)
    half = _run(dataset, tmp_path / "half", steps=6, **{"optim.decay_steps": 12})
    resumed = _run(dataset, tmp_path / "half", resume=str(tmp_path / "half"), steps=12)
    assert half.losses == full.losses[:6]
    assert resumed.losses == full.losses[6:]  # bit-for-bit
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "half")
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads(x) for x in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics if r["kind"] == "train"] == list(range(1, 13))
    # the resumed run's clock starts from the time the first call had taken when it saved step 6
    saved = json.loads((tmp_path / "half" / "checkpoints" / "step_00000006" / "elapsed.json").read_text())["wall_s"]
    assert 0 < saved <= half.total_wall_s and half.total_wall_s == half.wall_s
    assert resumed.total_wall_s == pytest.approx(saved + resumed.wall_s)


def test_refuses_to_overwrite_and_checks_architecture(dataset, tmp_path):
    _run(dataset, tmp_path / "r", steps=6)
    with pytest.raises(ValueError, match="already has checkpoints; pass --resume"):
        _run(dataset, tmp_path / "r", steps=6)
    with pytest.raises(ValueError, match="holds another architecture: hidden_size 64 != 32"):
        _run(dataset, tmp_path / "r", resume=str(tmp_path / "r"), steps=8, **{"model.hidden_size": 32})


def _record_batches(monkeypatch) -> list:
    """Record every batch the trainer computes a loss on."""
    batches = []
    real = trainer_mod.lm_loss_sum

    def recording(model, batch, *args):
        batches.append(batch)
        return real(model, batch, *args)

    monkeypatch.setattr(trainer_mod, "lm_loss_sum", recording)
    return batches


def test_accumulation_and_forms_agree(dataset, tmp_path, monkeypatch):
    batches = _record_batches(monkeypatch)
    base = _run(dataset, tmp_path / "a", steps=4)
    reset_batches = list(batches)
    accum = _run(dataset, tmp_path / "b", steps=4, micro_batch_size=1)
    parallel = _run(dataset, tmp_path / "c", steps=4, form="parallel")
    ckpt = _run(dataset, tmp_path / "d", steps=4, activation_checkpointing="full")
    batches.clear()
    rows = _run(dataset, tmp_path / "e", steps=4, **{"data.reset_at_boundaries": False})
    for other in (accum, parallel, ckpt):
        assert [x for _, x in other.losses] == pytest.approx([x for _, x in base.losses], rel=1e-5)
    # Resets happen: the default run packs documents with boundaries, the other keeps B rows without any.
    # Resets happen: a window holding a separator is packed into one row whose boundaries are the 4 rows' and
    # the documents'; without resets every batch stays 4 rows with no boundaries.
    assert len(reset_batches) == len(batches) == 4
    packed = [i for i, b in enumerate(reset_batches) if b.cu_seqlens is not None and b.cu_seqlens.numel() > 5]
    assert packed, [b.cu_seqlens for b in reset_batches]
    assert all(b.cu_seqlens is None and b.input_ids.shape[0] == 4 for b in batches)
    i = packed[0]  # the runs are identical up to this step
    assert rows.losses[:i] == base.losses[:i]
    assert rows.losses[i][1] != base.losses[i][1]  # the resets change the loss ...
    assert rows.losses[i][1] == pytest.approx(base.losses[i][1], rel=1e-2)  # ... of the same data only a little


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs(dataset, tmp_path, precision):
    res = _run(dataset, tmp_path / precision, steps=6, precision=precision)
    fp32 = _run(dataset, tmp_path / "fp32", steps=1, **{"optim.decay_steps": 6})
    assert res.losses[0][1] != fp32.losses[0][1]  # the low precision is in effect ...
    assert res.losses[0][1] == pytest.approx(fp32.losses[0][1], rel=1e-2)  # ... and close to fp32 on the same data
    assert all(math.isfinite(x) for _, x in res.losses)
    assert res.losses[-1][1] < res.losses[0][1]


class _NanGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradients are not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _nan_at(monkeypatch, step, kind="loss"):
    calls = {"n": 0}
    real = trainer_mod.lm_loss_sum

    def loss_with_nan(model, batch, *args):
        calls["n"] += 1
        loss = real(model, batch, *args)
        if calls["n"] != step:
            return loss
        return loss * float("nan") if kind == "loss" else _NanGradient.apply(loss)

    monkeypatch.setattr(trainer_mod, "lm_loss_sum", loss_with_nan)


def test_nan_stops_without_corrupting_checkpoints(dataset, tmp_path, monkeypatch):
    _nan_at(monkeypatch, 8)
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan at step 8; stopped without saving"):
        _run(dataset, tmp_path / "nan", steps=12)
    ckpts = ckpt_io.list_checkpoints(tmp_path / "nan")
    assert [p.name for p in ckpts] == ["step_00000006"]
    ckpt_io.verify_checkpoint(ckpts[0])
    monkeypatch.undo()
    resumed = _run(dataset, tmp_path / "nan", resume=str(tmp_path / "nan"), steps=12)
    assert all(math.isfinite(x) for _, x in resumed.losses)


def test_nan_gradient_stops(dataset, tmp_path, monkeypatch):
    _nan_at(monkeypatch, 2, kind="grad")
    with pytest.raises(NonFiniteLossError, match="non-finite gradient norm nan at step 2"):
        _run(dataset, tmp_path / "nangrad", steps=4)
    assert ckpt_io.list_checkpoints(tmp_path / "nangrad") == []


def test_nan_skip_policy(dataset, tmp_path, monkeypatch):
    _nan_at(monkeypatch, 3)
    res = _run(dataset, tmp_path / "skip", steps=8, nan_policy="skip")
    assert res.skipped == 1 and math.isnan(res.losses[2][1])
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "skip").values())


def test_corrupt_checkpoint_falls_back(dataset, tmp_path):
    _run(dataset, tmp_path / "c", steps=12)
    newest = ckpt_io.list_checkpoints(tmp_path / "c")[-1]
    shard = next((newest / "state").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    assert ckpt_io.latest_checkpoint(tmp_path / "c").name == "step_00000006"
    with pytest.raises(ValueError, match="does not match its checksum"):
        ckpt_io.verify_checkpoint(newest)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_blocks_match_eager(dataset, tmp_path, backend):
    extra = {"steps": 3, "model.num_hidden_layers": 1, "data.reset_at_boundaries": False}
    eager = _run(dataset, tmp_path / "eager", **extra)
    compiled = _run(dataset, tmp_path / "compiled", compile=True, compile_backend=backend, **extra)
    assert [x for _, x in compiled.losses] == pytest.approx([x for _, x in eager.losses], rel=1e-4)


def test_compiled_blocks_with_packed_documents_match_eager(dataset, tmp_path):
    """Document resets (the default data layout) under the default GPU path: compiled blocks, graph breaks allowed
    only there (a whole-graph compile cannot trace the host-side grouping of documents)."""
    extra = {"steps": 2, "model.num_hidden_layers": 1, "data.reset_at_boundaries": True}
    eager = _run(dataset, tmp_path / "eager", **extra)
    compiled = _run(dataset, tmp_path / "compiled", compile=True, compile_backend="aot_eager", **extra)
    assert [x for _, x in compiled.losses] == pytest.approx([x for _, x in eager.losses], rel=1e-4)


def test_fast_path_resumes_exactly_and_matches_the_plain_path(dataset, tmp_path):
    """Compiled blocks (the CPU stand-in for inductor) with selective checkpointing: the plain path's losses, and
    a resumed run equal to an uninterrupted one bit for bit."""
    fast = {"compile": True, "compile_backend": "aot_eager", "activation_checkpointing": "selective"}
    extra = {"model.num_hidden_layers": 1, "data.reset_at_boundaries": False, "optim.decay_steps": 6}
    plain = _run(dataset, tmp_path / "plain", steps=6, **extra)
    full = _run(dataset, tmp_path / "full", steps=6, **fast, **extra)
    _run(dataset, tmp_path / "half", steps=3, **fast, **extra)
    resumed = _run(dataset, tmp_path / "half", resume=str(tmp_path / "half"), steps=6, **fast, **extra)
    assert resumed.losses == full.losses[3:]
    assert 0 < full.first_step_s < full.wall_s
    assert [x for _, x in full.losses] == pytest.approx([x for _, x in plain.losses], rel=1e-4)


def test_precision_and_parameter_dtype(dataset, tmp_path):
    assert trainer_mod.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert trainer_mod.resolve_precision("fp16", torch.device("cpu")) == "fp16"
    with pytest.raises(ValueError, match="param_dtype=bf16 needs precision bf16"):
        load_config([], {"param_dtype": "bf16", "precision": "fp32"})
    with pytest.raises(ValueError, match="param_dtype bf16 needs bf16 compute; cpu resolved to fp32"):
        _run(dataset, tmp_path / "p", steps=1, param_dtype="bf16")
    res = _run(dataset, tmp_path / "b", steps=4, param_dtype="bf16", precision="bf16")
    assert res.losses[-1][1] < res.losses[0][1]
    assert next(iter(load_trained(tmp_path / "b" / "model").model.parameters())).dtype == torch.float32


def test_the_host_reads_a_step_while_the_next_one_is_queued(dataset, tmp_path, monkeypatch):
    """Between logs, evaluations and checkpoints, step N's numbers are read only after step N + 1 was queued
    (so the GPU never waits for the host between steps); the numbers of every step still arrive, in order."""
    events = []
    real_step, real_read = trainer_mod._Trainer._train_step, trainer_mod.StepStats.read

    def train_step(self):
        events.append(("queue", self.step + 1))
        return real_step(self)

    def read(self):
        events.append(("read", self.step))
        return real_read(self)

    monkeypatch.setattr(trainer_mod._Trainer, "_train_step", train_step)
    monkeypatch.setattr(trainer_mod.StepStats, "read", read)
    res = _run(dataset, tmp_path / "lag", steps=6, log_every=100, eval_every=0, **{"checkpoint.every": 0})
    # Step 1 is read at once (its time is the first step's), step 6 at the end (evaluation, checkpoint, log).
    lagged = [e for n in range(2, 6) for e in (("queue", n + 1), ("read", n))]
    assert events == [("queue", 1), ("read", 1), ("queue", 2), *lagged, ("read", 6)]
    assert [s for s, _ in res.losses] == list(range(1, 7))


@pytest.mark.parametrize("fused", [False, True])
def test_nan_skip_policy_leaves_the_update_out(dataset, tmp_path, monkeypatch, fused):
    """The skipped step's update is left out on the device (a fused optimizer's kernel) or by the host (any other
    optimizer): of 5 steps with one non-finite, every parameter's optimizer took 4."""
    real_build, built = trainer_mod.build_optimizer, []

    def build(model, cfg):
        built.append(real_build(model, cfg, fused=fused))
        return built[-1]

    monkeypatch.setattr(trainer_mod, "build_optimizer", build)
    _nan_at(monkeypatch, 3)
    res = _run(dataset, tmp_path / "skip", steps=5, nan_policy="skip")
    assert res.skipped == 1 and math.isnan(res.losses[2][1]) and all(math.isfinite(x) for _, x in res.losses[3:])
    assert all(group["fused"] == (fused or None) for group in built[0].param_groups)
    assert {float(state["step"]) for state in built[0].state.values()} == {4.0}
