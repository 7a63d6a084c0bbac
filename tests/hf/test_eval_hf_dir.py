"""A Hugging Face directory where retnet takes a model: ``load_trained`` (so ``retnet eval``, ``retnet generate`` and
lm-eval's ``retnet`` model) reads ``retnet convert hf`` output and ``Trainer`` checkpoints with the numbers of the
native model folder they came from."""

import json
from types import SimpleNamespace

import pytest
import torch

from retnet.cli.__main__ import main
from retnet.data.tokenizer import ByteTokenizer
from retnet.hf import RetNetHFForCausalLM, convert_to_hf, to_hf_tokenizer
from retnet.training.artifacts import load_trained

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 3
DOCS = [
    {"context": "The sky is", "choices": ["blue", "a very green thing", "loud"], "gold": 0},
    {"context": "Rain falls from", "choices": ["clouds", "stones"], "gold": 0},
    {"context": "Fire is", "choices": ["hot", "cold", "café"], "gold": 1},
]


@pytest.fixture
def dirs(tmp_path, native):
    """A native model folder (with ``tokenizer/``) and the Hugging Face directory converted from it."""
    model_dir, hf_dir = tmp_path / "model", tmp_path / "hf"
    native.save_pretrained(model_dir)
    ByteTokenizer().save(model_dir / "tokenizer")
    convert_to_hf(model_dir, hf_dir)
    return model_dir, hf_dir


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_trained_reads_a_converted_directory_and_a_trainer_checkpoint(tmp_path, dirs, native):
    _, hf_dir = dirs
    trained = load_trained(hf_dir)
    assert trained.source == hf_dir and isinstance(trained.tokenizer, ByteTokenizer)
    assert trained.model.config == native.config and _same_weights(trained.model, native)
    assert not trained.model.training
    # A Trainer checkpoint: the directory inside the output folder, whose tokenizer files sit one level up.
    out = tmp_path / "ft"
    RetNetHFForCausalLM.from_native(native).save_pretrained(out / "checkpoint-2")
    to_hf_tokenizer(ByteTokenizer()).save_pretrained(out)
    assert _same_weights(load_trained(out / "checkpoint-2").model, native)
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text((hf_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_trained(tmp_path / "bare")


def _eval_json(capsys, argv) -> dict:
    assert main(["eval", *argv, "--json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    del doc["model"]
    return doc


def test_retnet_eval_of_a_directory_equals_its_native_folder(tmp_path, capsys, dirs):
    model_dir, hf_dir = dirs
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    task = tmp_path / "copa.jsonl"
    task.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    for argv in (["--text", str(text), "--seq-len", "32", "--form", "recurrent"], ["--tasks", str(task)]):
        native_doc = _eval_json(capsys, [str(model_dir), *argv])
        assert _eval_json(capsys, [str(hf_dir), *argv]) == native_doc
    assert native_doc["tasks"]["copa"]["num_docs"] == len(DOCS)


def test_lm_eval_retnet_model_reads_a_directory(dirs):
    pytest.importorskip("lm_eval")
    from retnet.evaluation.lm_eval_adapter import RetNetLM

    model_dir, hf_dir = dirs
    requests = [SimpleNamespace(args=(d["context"], " " + c)) for d in DOCS for c in d["choices"]]
    from_native = RetNetLM(str(model_dir), batch_size=4).loglikelihood(requests, disable_tqdm=True)
    assert RetNetLM(str(hf_dir), batch_size=4).loglikelihood(requests, disable_tqdm=True) == from_native
