"""The last rough inputs: each gives one clear error (or a warning), never a traceback or a silent wrong answer."""

from __future__ import annotations

import json

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.cli.__main__ import main
from retnet.model.torchscale import config_to_torchscale, state_dict_to_torchscale
from retnet.ops import RetentionState, log_decay_schedule, retention
from tests.model.test_model import make_model
from tests.training.subproc import run_cli


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_malformed_yaml_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 10\n  optim: [unclosed\n")
    assert main(["train", "--config", str(bad)]) == 1
    line = _one_error_line(capsys)
    assert line.startswith(f"retnet train: error: config file {bad} is not valid YAML:") and "line 2" in line


def test_resume_of_a_missing_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nonexistent" / "run")]) == 1
    line = _one_error_line(capsys)
    assert f"--resume {tmp_path / 'nonexistent' / 'run'}: no such run or checkpoint folder" in line
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 1
    assert "no train_config.yaml there" in _one_error_line(capsys)


def test_convert_without_vocab_size_or_embedding(tmp_path, capsys):
    model = make_model(torch.float32, activation="swish", scale_embedding=False)
    official = config_to_torchscale(model.config)
    official.pop("vocab_size", None)
    state = {k: v for k, v in state_dict_to_torchscale(model).items() if "embed_tokens" not in k}
    torch.save({"model": state}, tmp_path / "ckpt.pt")
    (tmp_path / "args.json").write_text(json.dumps(official))
    argv = [
        "convert",
        "torchscale",
        str(tmp_path / "ckpt.pt"),
        str(tmp_path / "o"),
        "--config",
        str(tmp_path / "args.json"),
    ]
    assert main(argv) == 1
    assert "no vocab_size" in _one_error_line(capsys)


def test_ctrl_c_ends_without_traceback():
    prelude = (
        "import os, signal, retnet.cli.demo as d\n"
        # Python leaves SIGINT ignored when it starts ignored (a background job of a non-interactive shell)
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "def interrupted(args):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "d.run = interrupted\n"
    )
    proc = run_cli(["demo"], prelude=prelude)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    assert out.strip().splitlines()[-1] == "retnet demo: interrupted"


@pytest.mark.parametrize(
    "field, value",
    [
        ("use_gate", "no"),
        ("tie_word_embeddings", "yes"),
        ("ffn_glu", 3),
        ("scale_embedding", 1),
        ("norm_eps", float("inf")),
        ("group_norm_eps", float("nan")),
        ("norm_eps", True),
        ("dropout", True),
        ("eos_token_id", 1.5),
    ],
)
def test_config_fields_are_typed_strictly(field, value):
    with pytest.raises(ValueError, match=field):
        RetNetConfig.from_preset("debug", **{field: value})


def _op_inputs():
    q = torch.randn(2, 5, 2, 4)
    return q, q, torch.randn(2, 5, 2, 6), log_decay_schedule(2, "torchscale")


def test_offset_and_state_types():
    q, k, v, lg = _op_inputs()
    with pytest.raises(TypeError, match="offset must be an int"):
        retention(q, k, v, lg, offset=1.5)
    with pytest.raises(TypeError, match="offset must be an int"):
        retention(q, k, v, lg, offset=True)
    with pytest.raises(ValueError, match="offset 9223372036854775808 is out of range"):
        retention(q, k, v, lg, offset=2**63)
    with pytest.raises(ValueError, match="out of range"):
        retention(q, k, v, lg, offset=2**63 - 3)  # the last positions would overflow
    state = RetentionState.zeros(2, 2, 4, 6)
    with pytest.raises(TypeError, match="initial_state must be a RetentionState .* got dict"):
        retention(q, k, v, lg, initial_state=state._asdict())
    o, _ = retention(q, k, v, lg, offset=torch.tensor(3).item())  # a plain int is fine
    assert o.shape == v.shape


def test_generation_arguments_are_checked_at_call_time():
    torch.manual_seed(0)
    model = RetNetForCausalLM(RetNetConfig.from_preset("debug")).eval()
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.stream_generate(ids, max_new_tokens=-1)  # raises here, without iterating
    with pytest.raises(ValueError, match="eos_token_id must be ids in \\[0, 256\\)"):
        model.stream_generate(ids, eos_token_id=256)
    with pytest.raises(ValueError, match="eos_token_id"):
        model.generate(ids, max_new_tokens=2, eos_token_id=[3, -1])
    with pytest.raises(TypeError, match="prompt ids must be integers"):
        model.generate([[1.7, 2.2]], max_new_tokens=2)
    with pytest.raises(TypeError, match="prompt ids must be integers"):
        model.generate(torch.tensor([[1.7, 2.2]]), max_new_tokens=2)
    stream = model.stream_generate(ids, max_new_tokens=3)
    assert len([t for t in stream]) == 3  # the priming step yields nothing to the caller
    assert model.generate([[1, 2], [3]], max_new_tokens=2, pad_token_id=0).shape == (2, 4)
