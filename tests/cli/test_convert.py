"""``retnet convert torchscale`` and the CLI's error handling."""

import json

import torch

from retnet import RetNetForCausalLM
from retnet.cli.__main__ import main
from retnet.model.torchscale import config_to_torchscale, state_dict_to_torchscale
from tests.model.test_model import make_model


def test_convert_torchscale_checkpoint(tmp_path, capsys):
    model = make_model(torch.float32, activation="swish", scale_embedding=False)
    official = config_to_torchscale(model.config)
    torch.save({"model": state_dict_to_torchscale(model)}, tmp_path / "ckpt.pt")
    (tmp_path / "args.json").write_text(json.dumps(official))
    rc = main(["convert", "torchscale", str(tmp_path / "ckpt.pt"), str(tmp_path / "out"), "--config",
               str(tmp_path / "args.json")])  # fmt: skip
    assert rc == 0 and "converted" in capsys.readouterr().out
    loaded = RetNetForCausalLM.from_pretrained(tmp_path / "out")
    ids = torch.randint(0, 256, (1, 9))
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_convert_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", "torchscale", str(tmp_path / "missing.pt"), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and len(err.strip().splitlines()) == 1
    torch.save({"embed_tokens.weight": torch.zeros(3, 4)}, tmp_path / "bare.pt")
    assert main(["convert", "torchscale", str(tmp_path / "bare.pt"), str(tmp_path / "o")]) == 1
    assert "no model config" in capsys.readouterr().err


def test_demo_runs(capsys):
    assert main(["demo", "--preset", "debug", "--length", "20"]) == 0
    out = capsys.readouterr().out
    assert "recurrent" in out and "continuation" in out
