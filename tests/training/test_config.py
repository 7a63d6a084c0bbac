"""TrainConfig: YAML + overrides, clear errors on unknown keys and bad values; the LR schedule."""

from __future__ import annotations

import pytest

from retnet.training import load_config, parse_overrides
from retnet.training.config import OptimSection, TrainConfig
from retnet.training.schedule import lr_at


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("steps: 7\noptim:\n  lr: 1.0e-3\n  schedule: linear\nmodel:\n  preset: debug\n")
    cfg = load_config([path], parse_overrides(["--optim.lr=3e-4", "--data.seq_len", "128", "--compile=true"]))
    assert cfg.steps == 7 and cfg.optim.lr == 3e-4 and cfg.optim.schedule == "linear"
    assert cfg.data.seq_len == 128 and cfg.compile is True and cfg.model.preset == "debug"
    assert cfg.model.hidden_size is None
    cfg.save(tmp_path / "saved.yaml")
    assert load_config([tmp_path / "saved.yaml"]) == cfg


@pytest.mark.parametrize(
    "args, message",
    [
        (["--optim.lrr=1"], "unknown config key 'optim.lrr'; valid keys: optim.lr"),
        (["--bogus=1"], "unknown config key 'bogus'"),
        (["--optim.lr=abc"], "optim.lr='abc' is invalid; expected float"),
        (["--steps=1.5"], "steps=1.5 is invalid; expected int"),
        (["--precision=fp8"], "precision='fp8' is invalid; expected one of auto, fp32, bf16, fp16"),
        (["--optim.lr=-1"], "optim.lr=-1.0 is invalid"),
        (["--activation_memory_budget=0"], "activation_memory_budget=0.0 is invalid; it must be in (0, 1]"),
        (["--activation_memory_budget=1.5"], "activation_memory_budget=1.5 is invalid"),
        (["--model=3"], "config model must be a mapping"),
        (["--steps"], "has no value"),
        (["steps=3"], "overrides look like --key=value"),
    ],
)
def test_bad_overrides(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config([], parse_overrides(args))


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config([tmp_path / "none.yaml"])
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config([tmp_path / "list.yaml"])


def test_repo_configs_load():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")):
        assert isinstance(load_config([path]), TrainConfig), path


def test_defaults_are_the_shakespeare_config():
    from pathlib import Path

    assert load_config([Path(__file__).parents[2] / "configs" / "shakespeare.yaml"]) == TrainConfig()


def test_schedule_shapes():
    cfg = OptimSection(lr=1.0, warmup_steps=10, min_lr_ratio=0.1, schedule="cosine")
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(10, 100, cfg) == pytest.approx(1.0)
    assert lr_at(55, 100, cfg) == pytest.approx(0.55)
    assert lr_at(100, 100, cfg) == pytest.approx(0.1)
    lin = OptimSection(lr=1.0, warmup_steps=0, min_lr_ratio=0.0, schedule="linear")
    assert lr_at(50, 100, lin) == pytest.approx(0.5)
    assert lr_at(50, 100, OptimSection(lr=2.0, schedule="constant", warmup_steps=0)) == 2.0


def test_compiled_blocks_get_the_activation_memory_budget(monkeypatch):
    import torch
    from torch._functorch import config as functorch_config

    from retnet import RetNetConfig, RetNetForCausalLM
    from retnet.training.trainer import prepare_model

    monkeypatch.setattr(functorch_config, "activation_memory_budget", 1.0)
    model = RetNetForCausalLM(RetNetConfig.from_preset("debug"))
    cfg = TrainConfig(compile=True, compile_backend="aot_eager", activation_memory_budget=0.4)
    prepare_model(model, cfg, torch.device("cpu"))
    assert functorch_config.activation_memory_budget == 0.4
    prepare_model(RetNetForCausalLM(RetNetConfig.from_preset("debug")), TrainConfig(compile=False), torch.device("cpu"))
    assert functorch_config.activation_memory_budget == 0.4  # only compiling sets it
