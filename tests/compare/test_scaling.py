"""The size-scaling study: the ladder, the token and seed rules, and a tiny study end to end through the runner."""

import argparse
import json
import shutil

import pytest

from retnet.cli import compare as compare_cli
from retnet.compare import load_compare_config
from retnet.compare.entries import ResultsFile, run_config, run_key
from retnet.compare.scaling import ladder, seeds_at, steps_for

from .test_compare_e2e import write_corpus


@pytest.mark.parametrize("preset, vocab", [("scaling-tiny", 256), ("scaling-gpu", 16384)])
def test_preset_ladders_span_8x_matched_within_2_percent_on_one_token_rule(preset, vocab):
    config = load_compare_config(preset)
    sizes = ladder(config, vocab)
    s = config.scaling
    assert len(sizes) >= 4 and s.archs == ["transformer", "retnet"] and s.seeds_at_smallest == 2
    counts = [z.parameters for z in sizes]
    assert counts == sorted(counts) and len(set(counts)) == len(counts) and counts[-1] / counts[0] >= 8
    tokens_per_step = config.batch_size * config.data.seq_len
    for z in sizes:
        assert z.width == s.aspect * z.depth  # width and depth grow together
        retnet, transformer = z.matched["retnet"].config, z.matched["transformer"].config
        assert retnet.head_dim == config.model.hidden_size // config.model.num_heads  # the preset's head dims
        assert z.width // transformer.num_heads == config.model.hidden_size // config.baseline.num_heads
        assert (retnet.num_hidden_layers, transformer.num_hidden_layers) == (z.depth, z.depth)
        for m in z.matched.values():
            assert abs(m.parameters / z.parameters - 1) <= 0.02, (z.label, m.name)
        # Transformer++: RMSNorm, SwiGLU FFN (rotary positions and no biases are the harness Transformer's own)
        assert (transformer.norm, transformer.ffn_glu, transformer.activation) == ("rmsnorm", True, "swish")
        assert z.tokens == z.config.steps * tokens_per_step
        assert abs(z.tokens - s.tokens_per_parameter * z.parameters) <= tokens_per_step / 2
    if preset == "scaling-gpu":  # the largest run's budget stated in the preset
        assert sizes[-1].tokens == 143_392_768 and config.data.seq_len >= 1024 and config.sweep.lrs == []


def test_token_and_seed_rules_and_bad_sections():
    assert steps_for(1000, 2.0, 256) == 8 and steps_for(1000, 2.0, 300) == 7 and steps_for(10, 0.1, 256) == 1
    config = load_compare_config("scaling-tiny")
    assert seeds_at(config, smallest=True) == [0, 1] and seeds_at(config, smallest=False) == [0]
    several = load_compare_config("scaling-tiny", None, ["--compare.seeds=[3,5]", "--scaling.seeds_at_smallest=4"])
    assert seeds_at(several, smallest=True) == [3, 5, 0, 1] and seeds_at(several, smallest=False) == [3, 5]
    for bad, match in [
        ("--scaling.sizes=[2,1]", "scaling.sizes"),
        ("--scaling.sizes=[2]", "two or more sizes"),
        ("--scaling.archs=[retnet]", "scaling.archs"),
        ("--scaling.tokens_per_parameter=0", "tokens_per_parameter"),
        ("--scaling.warmup_fraction=1", "warmup_fraction"),
    ]:
        with pytest.raises(ValueError, match=match):
            load_compare_config("scaling-tiny", None, [bad])
    with pytest.raises(ValueError, match="not a multiple of RetNet's head dim 16"):
        ladder(load_compare_config("scaling-tiny", None, ["--scaling.aspect=12"]), 256)
    with pytest.raises(ValueError, match="scaling.sizes is empty"):
        ladder(load_compare_config("tiny"), 256)


def test_the_scaling_section_is_not_part_of_a_run_key():
    from retnet.compare.archs import match_parameters
    from retnet.training.build import model_config

    def key(*extra):
        config = load_compare_config("tiny", None, list(extra))
        m = match_parameters(["retnet"], model_config(config.model, 256), config.baseline)["retnet"]
        return run_key(run_config(config, "retnet", m.config))

    assert key() == key("--scaling.sizes=[1,2,3,4]", "--scaling.tokens_per_parameter=5")


def _cli(argv):
    parser = argparse.ArgumentParser()
    compare_cli.register(parser.add_subparsers())
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    return args.func(args)


def test_tiny_scaling_study_end_to_end_resumable_and_partial(tmp_path, monkeypatch):
    from retnet.compare import harness

    trained = []
    original = harness.train_entry

    def counting(model, config, dataset_dir, run_dir):
        trained.append((config.model.num_hidden_layers, type(model).__name__, config.seed))
        return original(model, config, dataset_dir, run_dir)

    monkeypatch.setattr(harness, "train_entry", counting)
    corpus = write_corpus(tmp_path / "speeches", 0, docs=12, words=200)
    plays = write_corpus(tmp_path / "plays", 1, docs=4, words=150)
    run = tmp_path / "run"
    argv = [
        "compare", "--preset", "scaling-tiny", "--scaling", "--out", str(run),
        f"--data.corpus={corpus}", f"--compare.out_of_domain=[{plays}]", "--data.fetch=false",
        "--compare.eval_tokens=128", "--data.seq_len=32", "--batch_size=2", "--log_every=1",
        "--scaling.tokens_per_parameter=0.002", "--scaling.mc_draws=50",
    ]  # fmt: skip
    assert _cli([*argv, "--only", "transformer", "--sizes", "1,3"]) == 0  # a part of the study
    assert sorted(trained) == [(1, "MixerLM", 0), (1, "MixerLM", 1), (3, "MixerLM", 0)]
    assert _cli([*argv, "--only", "transformer"]) == 0  # the rest of one architecture
    assert sorted(trained) == [(1, "MixerLM", 0), (1, "MixerLM", 1), (2, "MixerLM", 0), (3, "MixerLM", 0),
                               (4, "MixerLM", 0)]  # fmt: skip
    partial = json.loads((run / "scaling.json").read_text())
    assert set(partial["fits"]) == {"transformer"} and partial["crossing"] == {}
    text = (run / "scaling.md").read_text()
    assert "RetNet: finished runs at 0 size(s); no fit (two needed)" in text and "not trained yet" in text

    trained.clear()
    assert _cli(argv) == 0  # the rest: RetNet's runs only, the Transformer's are skipped by key
    assert sorted(trained) == [(1, "RetNetForCausalLM", 0), (1, "RetNetForCausalLM", 1), (2, "RetNetForCausalLM", 0),
                               (3, "RetNetForCausalLM", 0), (4, "RetNetForCausalLM", 0)]  # fmt: skip
    doc = json.loads((run / "scaling.json").read_text())
    assert len(doc["runs"]) == 10 and all(r["result"] is not None for r in doc["runs"])
    assert [r["size"] for r in doc["runs"][:3]] == ["L1-d16"] * 3  # transformer seeds 0, 1 then RetNet's
    assert set(doc["fits"]) == {"transformer", "retnet"} and doc["fits"]["retnet"]["parameters"]["sizes"] == 4
    assert doc["noise"]["sigma_log_loss"] is not None and doc["noise"]["sizes"] == ["L1-d16"]
    assert doc["crossing"]["parameters"]["kind"] in ("crossing", "no crossing", "parallel")
    assert doc["uncertainty"]["parameters"]["draws"] == 50
    records = ResultsFile(run / "entries.json").records(role="scaling")
    assert len(records) == 10 and {r["name"] for r in records} == {"transformer", "retnet"}
    text = (run / "scaling.md").read_text()
    assert "## Fits: L = a · X^(−α)" in text and "Monte Carlo (50 draws, seed 0" in text
    assert "| L4-d64 | RetNet | 0 |" in text and (run / "scaling.png").stat().st_size > 0
    assert (run / "scaling" / "L1-d16" / "retnet" / "seed-1" / "result.json").is_file()

    trained.clear()
    (run / "scaling.md").unlink()
    shutil.rmtree(run / "data")  # the report reads no data: a results file copied from elsewhere is enough
    assert _cli([*argv, "--report-only"]) == 0  # rebuilt from the results file, nothing trained
    assert trained == [] and (run / "scaling.md").read_text() == text
    meta = json.loads((run / "scaling.json").read_text())["meta"]
    assert meta["environment"] == doc["meta"]["environment"] and "report_command" in meta
    assert not (run / "data").exists()
    with pytest.raises(ValueError, match="--only names \\['h3'\\]"):
        _cli([*argv, "--only", "h3"])
    with pytest.raises(ValueError, match="--sizes names depths \\[5\\]"):
        _cli([*argv, "--sizes", "5"])
    with pytest.raises(ValueError, match="--sizes needs --scaling"):
        _cli([a for a in argv if a != "--scaling"] + ["--sizes", "1"])


def test_a_ladder_compiled_in_one_process_stays_within_the_recompilation_limit(tmp_path):
    # Every size compiles its blocks anew (new shapes, the same functions); without the cache cleared between sizes
    # the graphs of all sizes add up against the limit, which a fullgraph compile turns into an error.
    import torch

    corpus = write_corpus(tmp_path / "speeches", 0, docs=12, words=200)
    plays = write_corpus(tmp_path / "plays", 1, docs=4, words=150)
    argv = [
        "compare", "--preset", "scaling-tiny", "--scaling", "--out", str(tmp_path / "run"), "--only", "retnet",
        "--sizes", "1,2,3", f"--data.corpus={corpus}", f"--compare.out_of_domain=[{plays}]", "--data.fetch=false",
        "--compare.eval_tokens=128", "--data.seq_len=32", "--batch_size=2", "--scaling.tokens_per_parameter=0.002",
        "--scaling.mc_draws=10", "--compile=true", "--compile_backend=eager",
    ]  # fmt: skip
    with torch._dynamo.config.patch(recompile_limit=2):
        assert _cli(argv) == 0
    runs = json.loads((tmp_path / "run" / "scaling.json").read_text())["runs"]
    assert sum(r["result"] is not None for r in runs) == 4  # RetNet: two seeds at the smallest size, one at the others
