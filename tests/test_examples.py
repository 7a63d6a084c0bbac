"""The scripts under examples/ run as their docstrings say, at tiny sizes: train on a folder of text and answer
a prompt or chat, then evaluate the exported model in every form."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

import pytest
import torch

from .training.corpus import make_corpus

ROOT = Path(__file__).resolve().parents[1]


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("examples")
    corpus = make_corpus(root / "my_texts", docs=6, words=120)
    run = root / "run"
    argv = [str(corpus), "--out", str(run), "--steps", "3", "--preset", "debug", "--seq-len", "32"]
    argv += ["--batch-size", "2", "--prompt", "the king", "--max-new-tokens", "8"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert load_example("train_on_your_text").main(argv) == 0
    yield corpus, run, out.getvalue()
    torch.set_num_threads(before)


def test_train_on_your_text_answers_one_prompt(trained_run):
    _, run, out = trained_run
    assert out.startswith("the king") and out.endswith("\n") and len(out.encode()) > len("the king")
    assert (run / "model" / "model.safetensors").is_file() and (run / "loss_curve.png").is_file()


def test_train_on_your_text_chats_with_a_trained_run(trained_run, monkeypatch, capsys):
    _, run, _ = trained_run
    monkeypatch.setattr("sys.stdin", io.StringIO("the\n\nqueen\n"))
    assert load_example("train_on_your_text").main(["--resume", str(run), "--max-new-tokens", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("the") and any(line.startswith("queen") for line in lines[1:])


def test_train_on_your_text_needs_a_folder_or_a_run(tmp_path, capsys):
    example = load_example("train_on_your_text")
    for argv in ([], [str(tmp_path / "missing")], [str(tmp_path), "--resume", str(tmp_path)]):
        with pytest.raises(SystemExit):
            example.main(argv)
    assert "not a folder" in capsys.readouterr().err


def test_evaluate_exported_model_reports_every_form(trained_run, capsys):
    corpus, run, _ = trained_run
    example = load_example("evaluate_exported_model")
    argv = [str(run / "model"), str(corpus), "--seq-len", "32", "--max-windows", "4"]
    assert example.main(argv) == 0
    header, rule, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["form", "loss"] and [r.split()[0] for r in rows] == [
        "parallel",
        "chunkwise",
        "recurrent",
    ]
    ppl = [float(r.split()[2]) for r in rows]
    assert max(ppl) == pytest.approx(min(ppl), rel=1e-4) and ppl[0] > 1  # the forms: one function
