"""``retnet convert torchscale``, ``retnet convert hf`` (both ways, then ``retnet generate``) and the CLI's error
handling."""

import json

import pytest
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


def test_convert_hf_both_ways_and_generate_from_hf(tmp_path, capsys):
    pytest.importorskip("transformers")
    from safetensors.torch import load_file

    from retnet import RetNetConfig
    from retnet.data.tokenizer import ByteTokenizer

    torch.manual_seed(0)
    model = RetNetForCausalLM(RetNetConfig.from_preset("debug", vocab_size=257))
    model.save_pretrained(tmp_path / "run" / "model")
    ByteTokenizer().save(tmp_path / "run" / "tokenizer")
    hf, back = str(tmp_path / "hf"), str(tmp_path / "back")
    assert main(["convert", "hf", str(tmp_path / "run"), hf]) == 0
    assert "transformers directory" in capsys.readouterr().out
    assert main(["convert", "hf", hf, back]) == 0  # a transformers directory goes back to retnet
    assert "retnet model folder" in capsys.readouterr().out
    original, returned = (
        load_file(tmp_path / "run" / "model" / "model.safetensors"),
        load_file(f"{back}/model.safetensors"),
    )
    assert original.keys() == returned.keys() and all(torch.equal(original[k], returned[k]) for k in original)
    texts = []
    for source in (str(tmp_path / "run"), hf, back):
        assert main(["generate", source, "the king", "--greedy", "--max-new-tokens", "6"]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0].startswith("the king") and texts[0] == texts[1] == texts[2]
    assert main(["convert", "hf", hf, str(tmp_path / "x"), "--to", "hf"]) == 1  # not a retnet run or model
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
