"""transformers.Trainer trains the wrapper (with activation checkpointing) and the loss falls."""

import dataclasses

import pytest
import torch

pytest.importorskip("accelerate")
from transformers import Trainer, TrainingArguments  # noqa: E402


def test_trainer_with_checkpointing_lowers_the_loss(tmp_path, wrapped):
    seq = torch.arange(24) % 6  # a periodic sequence: learnable in a few steps
    data = [{"input_ids": seq.roll(i), "labels": seq.roll(i)} for i in range(8)]
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, **{checkpointing: True},
    )  # fmt: skip
    trainer = Trainer(model=wrapped.train(), args=args, train_dataset=data, eval_dataset=data[:2])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and wrapped.gradient_checkpointing
    assert losses[-1] < 0.5 * losses[0]
    assert trainer.evaluate()["eval_loss"] < losses[0]  # evaluation skips the returned cache
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "modeling_retnet.py").is_file() and (tmp_path / "final" / "README.md").is_file()
