"""The ``medium`` preset's sizes and budget, and the command line's ``--ood`` corpora and ``--probes`` end to end."""

import argparse
import json
import shutil

import pytest
import torch

from retnet.cli import compare as compare_cli
from retnet.compare import ENTRIES, load_compare_config
from retnet.compare.archs import match_parameters
from retnet.compare.entries import ResultsFile
from retnet.data.corpora import CORPORA
from retnet.training.build import model_config

from .test_compare_e2e import write_corpus


def test_medium_models_match_within_two_percent_at_40m_and_the_budget():
    c = load_compare_config("medium")
    with torch.device("meta"):
        base = model_config(c.model, c.data.vocab_size)
        matched = match_parameters(ENTRIES, base, c.baseline, ffn_multiple=c.compare.ffn_multiple,
                                   small_head_factor=c.compare.small_head_factor)  # fmt: skip
    target = matched["retnet"].parameters
    assert target >= 40_000_000
    for name, m in matched.items():
        assert abs(m.parameters / target - 1) <= 0.02, f"{name}: {m.parameters:,} vs {target:,}"
    assert c.tokens >= 150_000_000 and c.data.seq_len >= 1024 and c.precision == "bf16"
    assert c.data.corpus == "linux-200mb" and len(set(c.compare.out_of_domain) - {"linux"}) >= 3
    assert len(c.sweep.lrs) >= 3 and 0 < c.sweep.fraction < 1 and c.sweep.ablations == "retnet"
    assert c.probes.passkey_corpus == "sotu"  # prose filler, one of the out-of-domain corpora
    with pytest.raises(ValueError, match="probes.passkey_corpus='pg19' is invalid"):
        load_compare_config("medium", None, ["--probes.passkey_corpus=pg19"])


# Measured on 2026-12-01: `retnet compare --preset medium --prepare-only` (BPE 16,384 trained on the preset's fixed
# 50 MB sample of linux-200mb's training files) wrote 77,286,194 training tokens (2.56 bytes a token).
LINUX_200MB_TRAIN_TOKENS = 77_286_194


def test_medium_sees_no_training_token_more_than_twice():
    c = load_compare_config("medium")
    spec = CORPORA[c.data.corpus]
    assert spec.client == "subset" and spec.package == "linux" and spec.max_bytes == 200_000_000
    assert c.compare.bpe_train_bytes == 50_000_000 and c.data.val_fraction == 0.01
    epochs = c.tokens / LINUX_200MB_TRAIN_TOKENS
    assert epochs <= 2.0 * 0.99, f"{c.tokens:,} tokens over {LINUX_200MB_TRAIN_TOKENS:,} unique: {epochs:.3f} epochs"


def test_ood_paths_reach_the_evaluation_and_probes_run_from_the_command_line(tmp_path):
    corpus = write_corpus(tmp_path / "speeches", 0, docs=10, words=150)
    mail, code = write_corpus(tmp_path / "mail", 1, docs=3, words=120), write_corpus(tmp_path / "code", 2, code=True)
    single = tmp_path / "notes.txt"
    single.write_text("a single file of notes, of some length. " * 40)
    parser = argparse.ArgumentParser()
    compare_cli.register(parser.add_subparsers())
    run = tmp_path / "run"
    argv = [
        "compare", "--preset", "tiny", "--archs", "retnet", "--out", str(run), "--ood", mail, str(single),
        "--probes", "mqar,passkey,extrapolation",
        f"--data.corpus={corpus}", f"--compare.out_of_domain=[{code}]", "--data.fetch=false",
        "--compare.eval_tokens=256", "--model.hidden_size=32", "--model.num_hidden_layers=1", "--model.value_dim=64",
        "--model.ffn_dim=64", "--data.seq_len=32", "--batch_size=2", "--steps=3", "--log_every=1",
        "--probes.mqar_vocab_size=17", "--probes.mqar_seq_lens=[16]", "--probes.mqar_pairs=[2,4]",
        "--probes.mqar_steps=3", "--probes.mqar_batch_size=4", "--probes.mqar_examples=4",
        "--probes.task_hidden_size=16", "--probes.task_layers=1", "--probes.task_heads=2",
        "--probes.task_lrs=[1e-3,3e-3]",
        "--probes.passkey_train_length=200", "--probes.passkey_steps=2", "--probes.passkey_batch_size=2",
        "--probes.passkey_lengths=[200,300]", "--probes.passkey_depths=[0.0,1.0]", "--probes.passkey_trials=1",
        "--probes.extrapolation_factor=2", "--probes.extrapolation_windows=1",
        "--sweep.lrs=[1e-3,2e-3,4e-3]", "--sweep.fraction=0.34",
    ]  # fmt: skip
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    assert args.func(args) == 0
    doc = json.loads((run / "results.json").read_text())
    assert doc["meta"]["out_of_domain"] == ["code", "mail", "notes_txt"]
    ood = doc["results"]["retnet"]["eval"]["out_of_domain"]
    assert set(ood) == {"code", "mail", "notes_txt"} and all(v["perplexity"] > 1 for v in ood.values())
    sweep = doc["meta"]["sweep"]["results"]["retnet"]
    assert set(map(float, sweep["losses"])) == {1e-3, 2e-3, 4e-3} and doc["meta"]["sweep"]["steps"] == 1
    assert doc["results"]["retnet"]["lr"] == sweep["chosen"] == float(min(sweep["losses"], key=sweep["losses"].get))
    for lr in ("0.001", "0.002", "0.004"):  # sweep runs keep their score, not their weights
        train_dir = run / "retnet" / "sweep" / f"lr-{lr}" / "train"
        assert (train_dir / "metrics.jsonl").is_file() and not (train_dir / "checkpoints").exists()
    assert "## Learning-rate sweep" in (run / "results.md").read_text()
    probes = run / "probes"
    mqar = json.loads((probes / "mqar.json").read_text())["retnet"]
    assert [(r["seq_len"], r["num_pairs"]) for r in mqar["accuracy"]] == [(16, 2), (16, 4)]
    assert [s["lr"] for s in mqar["sweep"]] == [1e-3, 3e-3] and mqar["lr"] in (1e-3, 3e-3)
    passkey = json.loads((probes / "passkey.json").read_text())["retnet"]
    assert [(r["length"], r["depth"]) for r in passkey["accuracy"]] == [(200, 0.0), (200, 1.0), (300, 0.0), (300, 1.0)]
    assert passkey["train"]["steps"] == 2 and len(passkey["sweep"]) == 2
    extra = json.loads((probes / "extrapolation.json").read_text())["retnet"]
    assert extra["eval_len"] == 64 and extra["train_len"] == 32
    assert "| 16 |" in (probes / "mqar.md").read_text()
    assert all((probes / f"{p}.png").stat().st_size > 0 for p in ("mqar", "passkey", "extrapolation"))

    # the probes' results live in the results file too: one record per task model and rate, one per extrapolated
    # model. A command on another machine (a fresh folder, the same results file) trains seed 1, extrapolates its
    # model (seed 0's is not in that folder), and reports both commands'
    records = ResultsFile(run / "entries.json").records(role="probe")
    assert sorted(r["probe"] for r in records) == ["extrapolation", "mqar", "mqar", "passkey", "passkey"]
    seed0 = next(r for r in records if r["probe"] == "extrapolation")["run_key"]
    assert ResultsFile(run / "entries.json").get(seed0)["seed"] == 0
    elsewhere = tmp_path / "elsewhere"
    shared = f"--compare.results_file={run / 'entries.json'}"
    args, overrides = parser.parse_known_args([*argv[:6], str(elsewhere), *argv[7:10], "--probes", "extrapolation",
                                               "--seeds", "1", *argv[12:], shared])  # fmt: skip
    args.overrides = overrides
    assert args.func(args) == 0
    extrapolated = [r for r in ResultsFile(run / "entries.json").records(role="probe") if r["probe"] == "extrapolation"]
    probed = [ResultsFile(run / "entries.json").get(r["run_key"]) for r in extrapolated]
    assert sorted((m["seed"], m["role"]) for m in probed) == [(0, "main"), (1, "main")]
    for probe in ("mqar", "passkey"):  # the earlier command's task models, reported without training again
        assert json.loads((elsewhere / "probes" / f"{probe}.json").read_text()).keys() == {"retnet"}
    assert not (elsewhere / "probes" / "mqar").exists()

    # task models trained two at a time in worker processes compute what one after another in this process did
    parallel = tmp_path / "parallel"
    args, overrides = parser.parse_known_args([*argv[:6], str(parallel), *argv[7:10], "--probes", "mqar,passkey",
                                               *argv[12:], "--probes.workers=2"])  # fmt: skip
    args.overrides = overrides
    assert args.func(args) == 0
    for probe, serial in (("mqar", mqar), ("passkey", passkey)):
        again = json.loads((parallel / "probes" / f"{probe}.json").read_text())["retnet"]
        assert again["accuracy"] == serial["accuracy"] and again["lr"] == serial["lr"]
        assert [s["validation"] for s in again["sweep"]] == [s["validation"] for s in serial["sweep"]]
        curve = [p["loss"] for p in serial["train"]["loss_curve"]]
        assert [p["loss"] for p in again["train"]["loss_curve"]] == pytest.approx(curve, rel=1e-4)

    # and the report alone, from the results file, rewrites every probe's report
    shutil.rmtree(probes)
    args, overrides = parser.parse_known_args([*argv[:10], "--report-only", *argv[12:]])
    args.overrides = overrides
    assert args.func(args) == 0
    assert json.loads((probes / "passkey.json").read_text())["retnet"] == passkey
    assert (probes / "extrapolation.png").is_file() and "| 16 |" in (probes / "mqar.md").read_text()

    args, overrides = parser.parse_known_args([*argv[:7], "--ood", str(tmp_path / "missing"), *argv[10:]])
    args.overrides = overrides
    with pytest.raises(FileNotFoundError, match="--ood: no such file or folder"):
        args.func(args)
