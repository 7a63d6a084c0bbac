"""``retnet data/train/eval/generate`` end to end, and one-line errors with a non-zero exit for bad input."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from retnet.cli.__main__ import main

from ..training.corpus import make_corpus, to_argv

FAST = {
    "steps": 8,
    "batch_size": 4,
    "eval_batches": 2,
    "log_every": 2,
    "tensorboard": False,
    "model": {"preset": "debug"},
    "data": {"seq_len": 32},
    "checkpoint": {"every": 4},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = make_corpus(root / "corpus", docs=12)
    assert main(["data", "prepare", str(corpus), str(root / "ds"), "--val-fraction", "0.25"]) == 0
    return root


@pytest.fixture(scope="module")
def trained(prepared):
    run = prepared / "run"
    args = ["train", *to_argv(FAST), f"--run_dir={run}", f"--data.dataset={prepared / 'ds'}", "--sample_tokens=20"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return run, out.getvalue()


@pytest.fixture
def run_dir(trained):
    return trained[0]


def _one_line_error(capsys, args, message):
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"retnet {args[0]}: error: ") and message in err, err


def test_train_prints_validation_and_sample(trained):
    run_dir, out = trained
    assert "validation: loss" in out and "perplexity" in out and "bits/byte" in out and "tokens/s" in out
    assert f"run folder: {run_dir}" in out and "\nsample:\n" in out
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "step_00000008" / "checkpoint.json").is_file()


def test_eval_all_forms_agree(run_dir, prepared, capsys):
    out = {}
    for form in ("parallel", "chunkwise", "recurrent"):
        assert main(["eval", str(run_dir), "--form", form, "--max-windows", "2", "--chunk-size", "8"]) == 0
        out[form] = float(capsys.readouterr().out.split()[1])
    assert out["parallel"] == pytest.approx(out["chunkwise"], rel=1e-4)
    assert out["recurrent"] == pytest.approx(out["chunkwise"], rel=1e-4)
    assert main(["eval", str(run_dir / "model"), "--seq-len", "96", "--max-windows", "2"]) == 0  # beyond training
    assert main(["eval", str(run_dir), "--text", str(prepared / "corpus" / "doc001.txt")]) == 0
    assert "bits/byte" in capsys.readouterr().out


def test_generate_argument_stdin_and_interactive(run_dir, capsys, monkeypatch):
    assert main(["generate", str(run_dir), "the king", "--max-new-tokens", "12", "--seed", "0"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("the king")
    assert main(["generate", str(run_dir), "the king", "--max-new-tokens", "12", "--seed", "0"]) == 0
    assert capsys.readouterr().out == first  # seeded sampling is reproducible
    monkeypatch.setattr("sys.stdin", io.StringIO("sweet lord"))
    assert main(["generate", str(run_dir / "checkpoints" / "step_00000004"), "--greedy", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("sweet lord")
    monkeypatch.setattr("sys.stdin", io.StringIO("the\n\nnight\n"))
    assert main(["generate", str(run_dir), "-i", "--max-new-tokens", "4", "--top-k", "5", "--top-p", "0.9"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("the") and any(x.startswith("night") for x in lines)


def test_data_list(capsys, tmp_path):
    assert main(["data", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "shakespeare" in out and "sotu" in out and "not fetched" in out


def test_bad_input_gives_one_line_errors(run_dir, prepared, capsys, tmp_path):
    ds = f"--data.dataset={prepared / 'ds'}"
    _one_line_error(capsys, ["train", "--optim.lrr=1"], "unknown config key 'optim.lrr'")
    _one_line_error(capsys, ["train", "--optim.lr=fast"], "optim.lr='fast' is invalid")
    _one_line_error(capsys, ["train", "--form=sideways"], "form='sideways' is invalid")
    _one_line_error(capsys, ["train", "--config", str(tmp_path / "nope.yaml")], "config file not found")
    missing = ["train", f"--data.corpus={tmp_path / 'missing'}", f"--data.cache_dir={tmp_path}"]
    _one_line_error(capsys, missing, "corpus not found")
    _one_line_error(capsys, ["train", f"--data.dataset={tmp_path}"], "prepared dataset not found")
    other_arch = ["train", "--resume", str(run_dir), "--steps=12", "--model.num_hidden_layers=3", ds]
    _one_line_error(capsys, other_arch, "holds another architecture: num_hidden_layers 2 != 3")
    _one_line_error(capsys, ["train", *to_argv(FAST), f"--run_dir={run_dir}", ds], "already has checkpoints")
    _one_line_error(capsys, ["generate", str(tmp_path / "none"), "x"], "no such run")
    _one_line_error(capsys, ["eval", str(run_dir), "--text", str(tmp_path / "none.txt")], "corpus not found")
    _one_line_error(capsys, ["data", "fetch", "gutenberg", "--cache-dir", str(tmp_path)], "unknown corpus")
    with pytest.raises(SystemExit):
        main(["eval", str(run_dir), "--optim.lr=1"])  # overrides belong to train only
