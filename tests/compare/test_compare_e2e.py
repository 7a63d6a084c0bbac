"""``retnet compare`` end to end on the tiny preset with small local corpora (no network)."""

import argparse
import json
import random

import pytest

from retnet.cli import compare as compare_cli
from retnet.compare import ENTRIES, load_compare_config, run_comparison

WORDS = "the a of to and state nation people year law we our shall be king lord def return import class".split()


def write_corpus(folder, seed, docs=12, words=400, code=False):
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(docs):
        if code:
            text = "\n".join(f"def f{j}(x):\n    return x + {rng.randint(0, 9)}" for j in range(words // 8))
        else:
            text = " ".join(rng.choice(WORDS) for _ in range(words)) + ".\n"
        (folder / f"doc{i:03d}.txt").write_text(text)
    return str(folder)


@pytest.fixture
def corpora(tmp_path):
    return {
        "in": write_corpus(tmp_path / "speeches", 0, docs=30),
        "ood": [write_corpus(tmp_path / "plays", 1), write_corpus(tmp_path / "code", 2, code=True),
                write_corpus(tmp_path / "docs", 3, docs=5, words=200)],
    }  # fmt: skip


def tiny_overrides(tmp_path, corpora, archs):
    return [
        f"--compare.out_dir={tmp_path / 'run'}",
        f"--compare.archs=[{','.join(archs)}]",
        f"--data.corpus={corpora['in']}",
        f"--compare.out_of_domain=[{','.join(corpora['ood'])}]",
        "--data.fetch=false",
        "--compare.eval_tokens=512",
        "--model.hidden_size=32",
        "--model.num_hidden_layers=1",
        "--model.value_dim=64",
        "--model.ffn_dim=64",
        "--baseline.num_heads=2",
        "--baseline.ssm_state_size=8",
        "--data.seq_len=32",
        "--batch_size=4",
        "--steps=10",
        "--log_every=2",
        "--checkpoint.every=5",
    ]


def test_compare_end_to_end_and_resume(tmp_path, corpora, monkeypatch):
    from retnet.training import trainer

    config = load_compare_config("tiny", None, tiny_overrides(tmp_path, corpora, ENTRIES))
    run = tmp_path / "run"
    # interrupt the first architecture after 6 of its 10 steps (its last checkpoint is at step 5)
    original = trainer._Trainer._train_step

    def interrupted(self):
        if self.step == 6:
            raise KeyboardInterrupt("simulated interruption")
        return original(self)

    monkeypatch.setattr(trainer._Trainer, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_comparison(config, command="test")
    assert not (run / ENTRIES[0] / "result.json").exists()
    monkeypatch.setattr(trainer._Trainer, "_train_step", original)
    doc = run_comparison(config, command="test")
    results = doc["results"]
    assert set(results) == set(ENTRIES)
    for name, r in results.items():
        assert r["train"]["tokens"] == 1280 and r["train"]["steps"] == 10
        assert [p["step"] for p in r["train"]["loss_curve"]] == [2, 4, 6, 8, 10], name
        assert abs(r["parameters"] / r["target_parameters"] - 1) <= 0.02
        ev = r["eval"]
        assert ev["in_domain"]["perplexity"] > 1 and len(ev["out_of_domain"]) == 3
        curve = r["train"]["loss_curve"]
        assert curve[-1]["loss"] < curve[0]["loss"], f"{name}: {curve}"
    for f in ("results.json", "results.md", "loss_curves.png", "perplexity.png", "models.json"):
        assert (run / f).is_file(), f
    table = (run / "results.md").read_text()
    assert "| RetNet |" in table and "| Hyena |" in table and "− Swish gate" in table

    # a finished entry is skipped; one without its result is evaluated again from its final checkpoint
    (run / "hyena" / "result.json").unlink()
    mtime = (run / "retnet" / "result.json").stat().st_mtime
    doc2 = run_comparison(config, command="test")
    assert (run / "retnet" / "result.json").stat().st_mtime == mtime
    assert doc2["results"]["hyena"]["eval"] == results["hyena"]["eval"]


def test_cli_and_changed_config_rejected(tmp_path, corpora, capsys):
    parser = argparse.ArgumentParser()
    compare_cli.register(parser.add_subparsers())
    common = [*tiny_overrides(tmp_path, corpora, ENTRIES)[2:], "--out", str(tmp_path / "run")]
    args, overrides = parser.parse_known_args(["compare", "--preset", "tiny", "--archs", "transformer,retnet", *common])
    args.overrides = overrides
    assert args.func(args) == 0
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(data["results"]) == {"transformer", "retnet"}
    from retnet.cli.__main__ import main

    assert main(["compare", "--archs", "retnet", *common, "--optim.lr=0.1"]) == 1  # the top-level entry point
    assert "different config" in capsys.readouterr().err


def test_bad_overrides():
    with pytest.raises(ValueError, match="unknown compare preset 'huge'; valid presets: tiny, small, 200m"):
        load_compare_config("huge")
    with pytest.raises(ValueError, match="unknown architecture"):
        load_compare_config("tiny", None, ["--compare.archs=[mamba]"])
    with pytest.raises(ValueError, match="overrides look like --key=value"):
        load_compare_config("tiny", None, ["train.lr=1"])  # the old section.field=value syntax
    with pytest.raises(ValueError, match="unknown config key 'compare.in_domain'; valid keys: compare.preset"):
        load_compare_config("tiny", None, ["--compare.in_domain=sotu"])
    with pytest.raises(ValueError, match="unknown config key 'baseline.hidden_size'; valid keys: baseline.num_heads"):
        load_compare_config("tiny", None, ["--baseline.hidden_size=64"])  # taken from the RetNet row
    with pytest.raises(ValueError, match="precision='fp16' is invalid for a comparison"):
        load_compare_config("tiny", None, ["--precision=fp16"])
    with pytest.raises(ValueError, match="reset_at_boundaries=True is invalid for a comparison"):
        load_compare_config("tiny", None, ["--data.reset_at_boundaries=true"])
    with pytest.raises(ValueError, match="set per entry"):
        load_compare_config("tiny", None, ["--data.dataset=/tmp/x"])
    with pytest.raises(ValueError, match="config baseline.num_heads='two' is invalid; expected int"):
        load_compare_config("tiny", None, ["--baseline.num_heads=two"])
