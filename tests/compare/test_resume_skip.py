"""Resume-and-skip of a comparison (runs keyed by their config, a results file shared between run folders,
``--only`` and ``--seeds``) and the learning-rate sweep's rule, with the training replaced by a fast fake."""

import json
import math

import pytest

from retnet.compare import load_compare_config, report, run_comparison
from retnet.compare.entries import ResultsFile, run_config, run_key, seed_summary, seed_table
from retnet.compare.runner import _Entries
from retnet.compare.sweep import SweepSection, next_rate, pick_learning_rate, sweep_config

from .test_compare_e2e import write_corpus


@pytest.fixture
def corpora(tmp_path):
    return {"in": write_corpus(tmp_path / "speeches", 0, docs=8, words=100),
            "ood": write_corpus(tmp_path / "plays", 1, docs=4, words=100)}  # fmt: skip


def overrides(tmp_path, corpora, out="run", archs=("retnet", "transformer"), extra=()):
    return [
        f"--compare.out_dir={tmp_path / out}", f"--compare.archs=[{','.join(archs)}]",
        f"--data.corpus={corpora['in']}", f"--compare.out_of_domain=[{corpora['ood']}]", "--data.fetch=false",
        "--model.hidden_size=32", "--model.num_hidden_layers=1", "--model.value_dim=64", "--model.ffn_dim=64",
        "--baseline.num_heads=2", "--data.seq_len=16", "--batch_size=2", "--steps=40", "--optim.warmup_steps=10",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def fake_training(monkeypatch):
    """Replace training by a function of (entry, seed, lr, steps); record what was trained."""
    calls = []

    def fake(self, cfg, name, role, entry_dir):
        calls.append((name, role, cfg.seed, cfg.optim.lr, cfg.steps))
        if role == "sweep":
            loss = None if cfg.optim.lr > 5e-3 else (math.log10(cfg.optim.lr) + 3) ** 2 + (name == "retnet")
            return {"name": name, "train": {"steps": cfg.steps}, "val_loss": loss, "wall_time_s": 0.0}
        ppl = 10.0 + cfg.seed + (name == "retnet")
        ev = {"perplexity": ppl, "loss": math.log(ppl), "bits_per_byte": 1.0, "tokens": 1}
        return {"name": name, "label": name, "parameters": 100, "total_parameters": 200, "target_parameters": 100,
                "config": {}, "eval": {"in_domain": ev, "out_of_domain": {"plays": ev}}, "wall_time_s": 0.0,
                "train": {"tokens": cfg.tokens, "wall_time_s": 0.0, "loss_curve": [], "steps": cfg.steps}}  # fmt: skip

    monkeypatch.setattr(_Entries, "_train", fake)
    for plot in ("plot_loss_curves", "plot_perplexity"):  # the report's plots are tested end to end elsewhere
        monkeypatch.setattr(report, plot, lambda *args, **kwargs: None)
    return calls


def test_finished_runs_are_skipped_by_key_also_from_another_folder(tmp_path, corpora, fake_training):
    calls = fake_training
    config = load_compare_config("tiny", None, overrides(tmp_path, corpora, extra=["--compare.seeds=[0,1]"]))
    doc = run_comparison(config)
    assert sorted(c[:3] for c in calls) == [("retnet", "main", 0), ("retnet", "main", 1), ("transformer", "main", 0),
                                           ("transformer", "main", 1)]  # fmt: skip
    assert (tmp_path / "run" / "retnet" / "result.json").is_file()
    assert (tmp_path / "run" / "retnet" / "seed-1" / "result.json").is_file()
    summary = doc["meta"]["seeds"]["summary"]["retnet"]
    assert summary["seeds"] == [0, 1] and summary["in_domain"] == pytest.approx((11.5, math.sqrt(0.5)))
    assert "| RetNet | 0, 1 | 11.50 ± 0.71 | 11.50 ± 0.71 |" in (tmp_path / "run" / "results.md").read_text()

    calls.clear()
    run_comparison(config)  # everything is done
    assert calls == []
    # --only and --seeds pick a part: one more seed of one architecture
    config3 = load_compare_config("tiny", None, overrides(tmp_path, corpora, extra=["--compare.seeds=[0,1,2]"]))
    run_comparison(config3, only=["transformer"])
    assert [c[:3] for c in calls] == [("transformer", "main", 2)]
    with pytest.raises(ValueError, match="--only names \\['h3'\\]"):
        run_comparison(config3, only=["h3"])

    # another machine, another folder: the results file carries the finished runs, and their numbers reach the report
    calls.clear()
    shared = str(tmp_path / "run" / "entries.json")
    elsewhere = load_compare_config("tiny", None, overrides(tmp_path, corpora, out="other", extra=[
        "--compare.seeds=[0,1,2]", f"--compare.results_file={shared}", "--checkpoint.every=7"]))  # fmt: skip
    doc = run_comparison(elsewhere)
    assert [c[:3] for c in calls] == [("retnet", "main", 2)]
    assert set(doc["results"]) == {"retnet", "transformer"}
    assert doc["results"]["transformer"]["eval"]["in_domain"]["perplexity"] == 10.0
    assert len(ResultsFile(shared).entries) == 6

    # a changed recipe is another run: its key differs, so it trains (in a folder of its own)
    calls.clear()
    changed = load_compare_config("tiny", None, overrides(tmp_path, corpora, out="lr", extra=[
        f"--compare.results_file={shared}", "--optim.lr=1e-3"]))  # fmt: skip
    run_comparison(changed)
    assert sorted(c[:4] for c in calls) == [("retnet", "main", 0, 1e-3), ("transformer", "main", 0, 1e-3)]
    with pytest.raises(ValueError, match="different config"):
        run_comparison(load_compare_config("tiny", None, overrides(tmp_path, corpora, extra=["--optim.lr=1e-3"])))


def test_the_key_covers_what_a_run_computes_and_nothing_about_where(tmp_path):
    from retnet.compare.archs import match_parameters
    from retnet.training.build import model_config

    def key(*extra, name="retnet"):
        config = load_compare_config("tiny", None, list(extra))
        m = match_parameters([name], model_config(config.model, 256), config.baseline)[name]
        return run_key(run_config(config, name, m.config))

    base = key()
    assert base == key("--compare.out_dir=/elsewhere", "--data.cache_dir=/c", "--data.workers=4", "--threads=2",
                       "--checkpoint.every=7", "--compare.seeds=[0,3]", "--probes.run=[mqar]",
                       "--sweep.lrs=[1e-3,2e-3,3e-3]", "--compile=true")  # fmt: skip
    for changed in ("--seed=1", "--optim.lr=1e-3", "--steps=10", "--data.seq_len=128", "--compare.eval_tokens=99",
                    "--model.ffn_dim=128", "--baseline.num_heads=4", "--compare.bpe_train_bytes=1000"):  # fmt: skip
        assert key(changed) != base, changed
    assert key(name="transformer") != base and len(base) == 16
    # one architecture's own setting is part of that architecture's key only
    for name, own in (("h3", "--baseline.h3_head_dim=1"), ("hyena", "--baseline.hyena_order=3")):
        assert key(own, name=name) != key(name=name)
        assert key(own) == base and key(own, name="transformer") == key(name="transformer")


def test_sweep_rule_on_fake_losses():
    assert pick_learning_rate({1e-3: 2.5, 3e-3: 2.1, 1e-2: 2.4}) == 3e-3
    assert pick_learning_rate({1e-3: 2.0, 3e-3: 2.0, 1e-2: math.nan}) == 1e-3  # tie: the smaller rate
    assert pick_learning_rate({1e-3: math.inf, 3e-3: 3.0, 1e-2: math.nan}) == 3e-3  # diverged runs lose
    with pytest.raises(ValueError, match="every sweep run diverged"):
        pick_learning_rate({1e-3: math.nan, 3e-3: math.inf})
    with pytest.raises(ValueError, match="at least three distinct"):
        SweepSection(lrs=[1e-3, 2e-3]).validate()
    with pytest.raises(ValueError, match="sweep.fraction"):
        SweepSection(lrs=[1e-3, 2e-3, 3e-3], fraction=0).validate()
    with pytest.raises(ValueError, match="sweep.lrs"):
        load_compare_config("tiny", None, ["--sweep.lrs=[1e-3,1e-3,2e-3]"])
    short = sweep_config(load_compare_config("tiny", None, ["--sweep.fraction=0.2"]), 5e-4)
    assert (short.steps, short.optim.warmup_steps, short.optim.lr) == (50, 4, 5e-4)  # tiny: 250 steps, warm-up 20


def test_sweep_picks_per_architecture_with_one_rule_and_is_recorded(tmp_path, corpora, fake_training):
    calls = fake_training
    sweep = ["--sweep.lrs=[1e-4,1e-3,1e-2]", "--sweep.fraction=0.25"]
    config = load_compare_config("tiny", None, overrides(tmp_path, corpora, extra=sweep))
    run_comparison(config, sweep_only=True)  # a study split into commands: the sweeps first
    assert len(calls) == 6 and {c[1] for c in calls} == {"sweep"}
    doc = run_comparison(config)
    sweeps = [c for c in calls if c[1] == "sweep"]
    assert sorted(sweeps) == sorted((n, "sweep", 0, lr, 10) for n in ("retnet", "transformer")
                                    for lr in (1e-4, 1e-3, 1e-2))  # fmt: skip
    # fake loss (log10 lr + 3)^2 is lowest at 1e-3; 1e-2 "diverged"; the full runs use the chosen rate
    assert sorted(c[:4] for c in calls if c[1] == "main") == [("retnet", "main", 0, 1e-3),
                                                              ("transformer", "main", 0, 1e-3)]  # fmt: skip
    record = doc["meta"]["sweep"]
    assert record["results"]["retnet"] == {"losses": {1e-4: 2.0, 1e-3: 1.0, 1e-2: None}, "chosen": 1e-3}
    assert record["steps"] == 10 and record["rule"].startswith("lowest in-domain validation loss")
    text = (tmp_path / "run" / "results.md").read_text()
    assert "| RetNet | 2.0000 | **1.0000** | diverged | 0.001 |" in text
    saved = json.loads((tmp_path / "run" / "results.json").read_text())  # standard JSON: a diverged run is null
    assert (
        saved["results"]["retnet"]["lr"] == 1e-3
        and saved["meta"]["sweep"]["results"]["retnet"]["losses"]["0.01"] is None
    )
    calls.clear()
    run_comparison(config)
    assert calls == []


def test_seed_summary_of_one_seed_has_no_spread():
    ev = {"in_domain": {"perplexity": 5.0}, "out_of_domain": {"a": {"perplexity": 7.0}}}
    s = seed_summary([{"name": "h3", "seed": 0, "result": {"eval": ev}}])
    assert s["h3"] == {"seeds": [0], "in_domain": (5.0, 0.0), "out_of_domain": {"a": (7.0, 0.0)}}
    two = seed_summary([{"name": "rwkv", "seed": k, "result": {"eval": ev}} for k in (0, 1)])
    table = seed_table(s | two, ["h3", "rwkv"], ["a"]).splitlines()
    assert table[2] == "| H3 | 0 | 5.00 | 7.00 |" and table[3] == "| RWKV | 0, 1 | 5.00 ± 0.00 | 7.00 ± 0.00 |"


def test_report_only_rebuilds_the_report_from_the_results_file_alone(tmp_path, corpora, fake_training):
    """Runs finished by several commands (here one per architecture, and one of another recipe) are reported
    together from the results file, without data or training; the run-level facts come from the folder's
    results.json."""
    from retnet.compare import rebuild_report

    calls = fake_training
    shared = f"--compare.results_file={tmp_path / 'entries.json'}"
    extra = ["--sweep.lrs=[1e-4,1e-3,3e-3]", "--sweep.fraction=0.25", "--compare.seeds=[0,1]", shared]
    config = load_compare_config("tiny", None, overrides(tmp_path, corpora, extra=extra))
    for name in ("retnet", "transformer"):
        expected = run_comparison(config, only=[name])
    longer = load_compare_config("tiny", None, overrides(tmp_path, corpora, out="longer", extra=[*extra, "--steps=80"]))
    run_comparison(longer, only=["retnet"])
    assert len(ResultsFile(tmp_path / "entries.json").entries) == 15
    calls.clear()

    rebuilt_dir = tmp_path / "rebuilt"
    rebuilt_dir.mkdir()
    (rebuilt_dir / "results.json").write_text((tmp_path / "run" / "results.json").read_text())
    data_dir = tmp_path / "run" / "data"
    data_dir.rename(tmp_path / "moved")  # no data is read
    rebuilt = load_compare_config("tiny", None, overrides(tmp_path, corpora, out="rebuilt", extra=extra))
    doc = rebuild_report(rebuilt, command="retnet compare --report-only")
    assert calls == []
    assert doc["meta"]["report_command"] == "retnet compare --report-only"
    assert doc["meta"]["environment"] == expected["meta"]["environment"]
    assert doc["meta"]["sweep"] == expected["meta"]["sweep"] and doc["meta"]["seeds"] == expected["meta"]["seeds"]
    assert {n: r["train"]["steps"] for n, r in doc["results"].items()} == {"retnet": 40, "transformer": 40}
    assert (rebuilt_dir / "results.md").read_text() == (tmp_path / "run" / "results.md").read_text()
    with pytest.raises(ValueError, match="holds no run of h3"):
        rebuild_report(load_compare_config("tiny", None, overrides(tmp_path, corpora, archs=("h3",), extra=extra)))

    # the command line: retnet compare --report-only
    import argparse

    from retnet.cli import compare as compare_cli

    parser = argparse.ArgumentParser()
    compare_cli.register(parser.add_subparsers())
    args, rest = parser.parse_known_args(["compare", "--preset", "tiny", "--report-only", "--out", str(rebuilt_dir)])
    args.overrides = [o for o in overrides(tmp_path, corpora, out="rebuilt", extra=extra) if "out_dir" not in o] + rest
    (rebuilt_dir / "results.md").unlink()
    assert args.func(args) == 0 and calls == []
    assert (rebuilt_dir / "results.md").read_text() == (tmp_path / "run" / "results.md").read_text()


def test_merge_adds_missing_runs_and_keeps_held_ones(tmp_path, corpora, fake_training, capsys):
    """Runs finished on two machines, each with its own results file, end up in one; a key both hold keeps the
    record already held (and is reported), and the report rebuilt from the merged file lists both machines' runs."""
    import argparse

    from retnet.cli import compare as compare_cli

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    for name, path in (("retnet", first), ("transformer", second)):
        cfg = load_compare_config("tiny", None, overrides(tmp_path, corpora, out=f"run-{name}",
                                                          extra=[f"--compare.results_file={path}"]))  # fmt: skip
        run_comparison(cfg, only=[name])
    held = ResultsFile(first)
    (key,) = held.entries
    changed = ResultsFile(tmp_path / "c.json")
    changed.add(key, {**held.entries[key], "seed": 7})  # the same run trained again, another time

    added, differing = held.merge(ResultsFile(second))
    assert len(added) == 1 and differing == [] and len(ResultsFile(first).entries) == 2
    assert held.merge(ResultsFile(second)) == ([], [])
    assert held.merge(changed) == ([], [key])
    assert ResultsFile(first).entries[key]["seed"] == 0

    parser = argparse.ArgumentParser()
    compare_cli.register(parser.add_subparsers())
    target = tmp_path / "merged.json"
    argv = ["compare", "--preset", "tiny", "--report-only", "--merge", str(first), str(second),
            "--out", str(tmp_path / "run-retnet")]  # fmt: skip
    args, rest = parser.parse_known_args(argv)
    merged = f"--compare.results_file={target}"
    args.overrides = [o for o in overrides(tmp_path, corpora) if "out_dir" not in o] + [merged, *rest]
    assert args.func(args) == 0
    assert f"{first}: 2 runs added" in capsys.readouterr().out
    assert len(ResultsFile(target).entries) == 2
    report = (tmp_path / "run-retnet" / "results.md").read_text()
    assert "| Transformer |" in report and "| RetNet |" in report
    args.merge = [str(tmp_path / "missing.json")]
    with pytest.raises(FileNotFoundError, match="--merge: no such results file"):
        args.func(args)


def test_ablations_can_take_retnets_swept_rate_and_sweep_nothing_themselves(tmp_path, corpora, fake_training):
    calls = fake_training
    archs = ("retnet", "retnet-no-swish", "transformer")
    extra = ["--sweep.lrs=[1e-3,3e-3,1e-2]", "--sweep.ablations=retnet"]
    # the ablation alone first: RetNet's sweep runs for it, then its full run at RetNet's choice (1e-3 by the fake)
    doc = run_comparison(load_compare_config("tiny", None, overrides(tmp_path, corpora, archs=archs, extra=extra)),
                         only=["retnet-no-swish"])  # fmt: skip
    assert sorted((c[0], c[1], c[3]) for c in calls) == [
        ("retnet", "sweep", 1e-3), ("retnet", "sweep", 3e-3), ("retnet", "sweep", 1e-2),
        ("retnet-no-swish", "main", 1e-3),
    ]  # fmt: skip
    assert doc["results"]["retnet-no-swish"]["lr"] == 1e-3
    assert "retnet-no-swish" not in doc["meta"]["sweep"]["results"]
    assert doc["meta"]["sweep"]["ablations"] == "retnet"
    calls.clear()
    doc = run_comparison(load_compare_config("tiny", None, overrides(tmp_path, corpora, archs=archs, extra=extra)))
    assert sorted((c[0], c[1]) for c in calls) == [("retnet", "main"), ("transformer", "main")] + [
        ("transformer", "sweep")] * 3  # fmt: skip
    assert "The Table-6 ablations train at RetNet's rate." in (tmp_path / "run" / "results.md").read_text()
    # each sweeps its own under the default
    calls.clear()
    run_comparison(load_compare_config("tiny", None, overrides(tmp_path, corpora, out="own", archs=archs[:2],
                                                               extra=extra[:1])))  # fmt: skip
    assert sorted({c[0] for c in calls if c[1] == "sweep"}) == ["retnet", "retnet-no-swish"]
    with pytest.raises(ValueError, match="compare.archs does not hold retnet"):
        alone = overrides(tmp_path, corpora, out="alone", archs=("retnet-no-swish",), extra=extra)
        run_comparison(load_compare_config("tiny", None, alone))
    with pytest.raises(ValueError, match="sweep.ablations='mine'"):
        load_compare_config("tiny", None, ["--sweep.ablations=mine"])


def test_next_rate_steps_past_the_end_where_the_best_lies():
    assert next_rate({5e-4: 3.0, 1e-3: 2.9, 2e-3: 2.8, 4e-3: 2.7}) == 8e-3  # best at the top: double it
    assert next_rate({1e-3: 2.0, 3e-3: 2.5, 1e-2: 2.9}) == 3.33e-4  # best at the bottom: the grid's ratio down
    assert next_rate({1e-3: 2.5, 2e-3: 2.0, 4e-3: 2.4}) is None  # inside
    assert next_rate({1e-3: 2.5, 2e-3: 2.4, 4e-3: math.inf}) is None  # the top diverged: the best is inside
    assert next_rate({1e-3: math.nan, 2e-3: math.inf}) is None  # nothing trained
    with pytest.raises(ValueError, match="sweep.extend"):
        load_compare_config("tiny", None, ["--sweep.lrs=[1e-3,2e-3,4e-3]", "--sweep.extend=-1"])


def test_a_sweep_whose_best_is_an_end_extends_it_and_a_rerun_repeats_nothing(tmp_path, corpora, fake_training):
    """The fake loss (log10 lr + 3)^2 is lowest at 1e-3: from [1e-5, 3e-5, 1e-4] (best at the top) the sweep adds
    3.33e-4, then 1.11e-3, where the limit of two extensions stops it."""
    calls = fake_training
    shared = f"--compare.results_file={tmp_path / 'entries.json'}"
    sweep = ["--sweep.lrs=[1e-5,3e-5,1e-4]", "--sweep.fraction=0.25", shared, "--sweep.extend=2"]
    config = load_compare_config("tiny", None, overrides(tmp_path, corpora, archs=("retnet",), extra=sweep))
    doc = run_comparison(config)
    assert [c[3] for c in calls if c[1] == "sweep"] == [1e-5, 3e-5, 1e-4, 3.33e-4, 1.11e-3]
    record = doc["meta"]["sweep"]
    assert record["extend"] == 2 and record["results"]["retnet"]["chosen"] == 1.11e-3
    assert [c[3] for c in calls if c[1] == "main"] == [1.11e-3]
    assert "up to 2 more rates were tried" in (tmp_path / "run" / "results.md").read_text()
    calls.clear()
    run_comparison(config)
    assert calls == []  # the extended rates are found in the results file like the grid's
    narrow = load_compare_config("tiny", None, overrides(tmp_path, corpora, out="narrow", archs=("retnet",),
                                                         extra=[*sweep[:3], "--sweep.extend=1"]))  # fmt: skip
    assert run_comparison(narrow)["meta"]["sweep"]["results"]["retnet"]["chosen"] == 3.33e-4
    assert [c[1] for c in calls] == ["main"]  # its sweep was held; only the full run at the new rate trains
