"""Hugging Face directories: tokenizers for AutoTokenizer, conversion both ways bit for bit, the model card, and the
trust_remote_code route in a process that never imports retnet itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

import retnet
from retnet import RetNetForCausalLM
from retnet.data.tokenizer import BPETokenizer, ByteTokenizer
from retnet.hf import (
    convert_from_hf,
    convert_to_hf,
    from_hf_tokenizer,
    is_hf_directory,
    load_hf_trained,
    to_hf_tokenizer,
)
from retnet.hf.export import training_summary
from retnet.training.config import TrainConfig

TEXT = "héllo wörld\n\tthe king <|endoftext|> 日本\x00"


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_tokenizers_round_trip_through_auto_tokenizer(tmp_path, kind):
    tok = ByteTokenizer() if kind == "byte" else BPETokenizer.train(["the king and the queen " * 20, TEXT], 300)
    to_hf_tokenizer(tok).save_pretrained(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    ids = tok.encode(TEXT)
    assert hf(TEXT)["input_ids"] == ids and len(hf) == tok.vocab_size
    assert hf.decode(ids + [tok.sep_id] + ids[:3], skip_special_tokens=True) == tok.decode(ids + [tok.sep_id] + ids[:3])
    assert hf.eos_token_id == hf.pad_token_id == tok.sep_id and hf.padding_side == "left"
    back = from_hf_tokenizer(hf)
    assert type(back) is type(tok) and back.fingerprint() == tok.fingerprint()


@pytest.fixture
def run_dir(tmp_path, native):
    """A run folder as ``retnet train`` leaves it (exported model, tokenizer, config, metrics)."""
    run = tmp_path / "run"
    native.save_pretrained(run / "model")
    ByteTokenizer().save(run / "tokenizer")
    cfg = TrainConfig()
    cfg.data.corpus = "tiny-corpus"
    cfg.save(run / "train_config.yaml")
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "val", "step": 20, "loss": 1.25, "bpb": 1.8}) + "\n")
    return run


def test_conversion_round_trip_is_bit_exact(tmp_path, run_dir, native):
    hf_dir, back_dir = tmp_path / "hf", tmp_path / "back"
    convert_to_hf(run_dir, hf_dir)
    assert is_hf_directory(hf_dir) and not is_hf_directory(run_dir / "model")
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_retnet.RetNetHFForCausalLM"
    assert json.loads((hf_dir / "generation_config.json").read_text())["eos_token_id"] == 256
    card = (hf_dir / "README.md").read_text()
    assert "tiny-corpus" in card and "| validation loss (step 20) | 1.25 |" in card
    assert f"| parameters | {native.num_parameters():,} |" in card
    weights = load_file(hf_dir / "model.safetensors")
    assert all(torch.equal(weights[f"retnet.{k}"], v) for k, v in native.state_dict().items())
    convert_from_hf(hf_dir, back_dir)
    loaded = RetNetForCausalLM.from_pretrained(back_dir)
    assert loaded.config == native.config
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in native.state_dict().items())
    trained = load_hf_trained(hf_dir)
    assert isinstance(trained.tokenizer, ByteTokenizer) and trained.model.config == native.config
    assert (back_dir / "tokenizer" / "tokenizer_config.json").is_file()


def test_training_summary_of_a_checkpoint_and_of_an_export(tmp_path):
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_00000020"
    ckpt.mkdir(parents=True)
    (run / "model").mkdir()
    cfg = TrainConfig()
    cfg.data.corpus = "tiny-corpus"
    cfg.save(ckpt / "train_config.yaml")
    (ckpt / "trainer.json").write_text(json.dumps({"step": 20, "tokens_seen": 5120}))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "val", "step": 20, "loss": 1.5}) + "\n")
    expected = {"data": "tiny-corpus", "tokenizer": "byte", "steps": 20, "tokens": 5120}
    assert training_summary(ckpt) == {**expected, "evaluation": {"validation loss (step 20)": 1.5}}
    cfg.save(run / "train_config.yaml")
    assert training_summary(run / "model") == {**expected, "evaluation": {"validation loss (step 20)": 1.5}}
    assert training_summary(tmp_path / "elsewhere") == {}


def test_trust_remote_code_loads_without_importing_retnet(tmp_path, run_dir, native):
    hf_dir = tmp_path / "hf"
    convert_to_hf(run_dir, hf_dir)
    script = (
        "import json, sys\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "before = 'retnet' in sys.modules\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(hf_dir)!r}, trust_remote_code=True)\n"
        f"tok = AutoTokenizer.from_pretrained({str(hf_dir)!r}, trust_remote_code=True)\n"
        "ids = tok(['the king'], return_tensors='pt').input_ids\n"
        "out = model.generate(ids, max_new_tokens=6, do_sample=False)\n"
        "print(json.dumps({'before': before, 'class': type(model).__name__, 'ids': out[0].tolist()}))\n"
    )
    root = str(Path(retnet.__file__).resolve().parents[1])
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1",
    )  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    prompt = torch.tensor([ByteTokenizer().encode("the king")])
    assert not result["before"] and result["class"] == "RetNetHFForCausalLM"
    assert result["ids"] == native.generate(prompt, max_new_tokens=6, eos_token_id=256)[0].tolist()
