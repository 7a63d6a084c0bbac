"""``benchmarks/train.py`` runs end to end on a tiny preset and writes the Table-4 layout it promises."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "benchmarks" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_benchmark_smoke(tmp_path):
    bench = _load()
    argv = ["--preset", "debug", "--device", "cpu", "--models", "retnet", "transformer", "--T", "16", "32", "64",
            "--tokens-per-step", "32", "--steps", "1", "--warmup", "1", "--precision", "mixed",
            "--out", str(tmp_path)]  # fmt: skip
    results = bench.main(argv)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["environment"]["command"].startswith("python benchmarks/train.py --preset debug")
    rows = saved["rows"]
    # T = 64 exceeds 32 tokens per step: skipped, not run with a batch of zero.
    assert [(r["model"], r["T"], r["batch"]) for r in rows] == [
        ("retnet", 16, 2), ("transformer", 16, 2), ("retnet", 32, 1), ("transformer", 32, 1)
    ]  # fmt: skip
    assert all(r["tokens_per_s"] > 0 and r["matmul_params"] > 0 for r in rows)
    report = (tmp_path / "results.md").read_text()
    ours, theirs = rows[0]["tokens_per_s"], rows[1]["tokens_per_s"]
    assert f"| 32 | 16 | transformer | {theirs:,.0f} |" in report and f"{ours / theirs:.2f}x |" in report
    assert (tmp_path / "train.png").is_file() and results["rows"] == rows


def test_trainer_step_clips_and_decides_the_update_every_step(tmp_path, monkeypatch):
    bench = _load()
    clips = []
    clip = bench.torch.nn.utils.clip_grad_norm_

    def counted(params, max_norm, *args, **kwargs):
        clips.append(max_norm)
        return clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(bench.torch.nn.utils, "clip_grad_norm_", counted)
    decisions = []
    step_if_finite = bench.step_if_finite

    def decided(opt, loss, norm):
        decisions.append(bool(taken := step_if_finite(opt, loss, norm)))
        return taken

    monkeypatch.setattr(bench, "step_if_finite", decided)
    common = ["--preset", "debug", "--device", "cpu", "--models", "retnet", "--T", "16", "--tokens-per-step", "16",
              "--warmup", "1"]  # fmt: skip
    bench.main([*common, "--steps", "1", "--out", str(tmp_path / "bare")])
    assert clips == []
    results = bench.main([*common, "--steps", "2", "--trainer-step", "--grad-clip", "0.5", "--out", str(tmp_path)])
    assert clips == [0.5] * 3 and decisions == [True] * 3 and results["rows"][0]["trainer_step"] is True
    assert "step: retnet train's" in (tmp_path / "results.md").read_text()
    runs = [str(tmp_path / "results.json"), str(tmp_path / "bare" / "results.json")]
    with pytest.raises(ValueError, match="steps"):
        bench.main(["--from-json", *runs, "--out", str(tmp_path / "merged")])


def test_a_failing_model_is_recorded_not_fatal(tmp_path, monkeypatch):
    bench = _load()

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this shape")

    monkeypatch.setattr(bench, "time_training", broken)
    results = bench.main(["--preset", "debug", "--device", "cpu", "--models", "retnet", "--T", "16",
                          "--tokens-per-step", "16", "--out", str(tmp_path)])  # fmt: skip
    assert results["rows"] == [
        {"model": "retnet", "T": 16, "tokens_per_step": 16, "error": "RuntimeError: no kernel for this shape"}
    ]
    assert "retnet at T = 16: RuntimeError: no kernel for this shape" in (tmp_path / "results.md").read_text()


def test_from_json_merges_runs_of_one_mode(tmp_path):
    bench = _load()
    common = ["--preset", "debug", "--device", "cpu", "--models", "retnet", "--tokens-per-step", "32", "--steps", "1",
              "--warmup", "1"]  # fmt: skip
    bench.main([*common, "--T", "16", "--out", str(tmp_path / "a")])
    bench.main([*common, "--T", "32", "--out", str(tmp_path / "b")])
    bench.main([*common, "--T", "32", "--precision", "mixed", "--out", str(tmp_path / "c")])
    merged = bench.main(["--from-json", str(tmp_path / "a" / "results.json"), str(tmp_path / "b" / "results.json"),
                         "--out", str(tmp_path / "m")])  # fmt: skip
    assert [r["T"] for r in merged["rows"]] == [16, 32] and len(merged["runs"]) == 2
    report = (tmp_path / "m" / "results.md").read_text()
    assert "| 32 | 16 | retnet |" in report and "| 32 | 32 | retnet |" in report
    with pytest.raises(ValueError, match="different precision modes"):
        bench.main(["--from-json", str(tmp_path / "a" / "results.json"), str(tmp_path / "c" / "results.json"),
                    "--out", str(tmp_path / "x")])  # fmt: skip


def test_documents_time_the_trainers_packed_layout(tmp_path, monkeypatch):
    """``--documents``: every step's batch is one packed row with document boundaries, built on the host as the
    trainer builds it; the rows say so and do not merge with rows of random ids; other models are refused."""
    bench = _load()
    windows = bench.documents(2, 64, 8, 100)
    assert windows.shape == (2, 65) and 0.05 < (windows == bench.SEPARATOR).mean() < 0.25
    batches = []
    make_batch = bench.make_batch
    monkeypatch.setattr(bench, "make_batch", lambda *a, **k: batches.append(make_batch(*a, **k)) or batches[-1])
    common = ["--preset", "debug", "--device", "cpu", "--T", "64", "--tokens-per-step", "128", "--warmup", "1"]
    results = bench.main([*common, "--models", "retnet", "--steps", "2", "--documents", "8", "--out", str(tmp_path)])
    assert len(batches) == 3 and all(b.input_ids.shape == (1, 128) and b.cu_seqlens is not None for b in batches)
    assert len(batches[0].cu_seqlens) > 3 and results["rows"][0]["documents"] == 8
    assert "data: packed documents of about 8 tokens" in (tmp_path / "results.md").read_text()
    bench.main([*common, "--models", "retnet", "--steps", "1", "--out", str(tmp_path / "rows")])
    with pytest.raises(ValueError, match="layouts"):
        bench.main(["--from-json", str(tmp_path / "results.json"), str(tmp_path / "rows" / "results.json"),
                    "--out", str(tmp_path / "merged")])  # fmt: skip
    with pytest.raises(SystemExit):
        bench.main([*common, "--models", "retnet", "fla", "--documents", "8", "--out", str(tmp_path / "no")])
