"""``benchmarks/model.py`` runs end to end on a tiny preset and reports what its docstring promises."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("bench_model", ROOT / "benchmarks" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_benchmark_smoke(tmp_path):
    bench = _load()
    argv = ["--preset", "debug", "--device", "cpu", "--dtype", "fp32", "--train-T", "16", "32",
            "--tokens-per-step", "64", "--steps", "1", "--decode-B", "2", "--decode-context", "8", "32",
            "--decode-steps", "2", "--out", str(tmp_path)]  # fmt: skip
    results = bench.main(argv)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["environment"]["torch"] and set(saved["training"]) == {"retnet", "transformer"}
    for rows in results["training"].values():
        assert [r["T"] for r in rows] == [16, 32] and all(r["tokens_per_s"] > 0 for r in rows)
    retnet, transformer = results["decoding"]["retnet"], results["decoding"]["transformer"]
    # RetNet's state does not grow with the context; the KV cache does.
    assert retnet[0]["state_gib_per_sequence"] == retnet[1]["state_gib_per_sequence"] > 0
    assert transformer[1]["state_gib_per_sequence"] > transformer[0]["state_gib_per_sequence"] > 0
    report = (tmp_path / "results.md").read_text()
    assert report.startswith("## Training")
    peak = results["training"]["retnet"][0]["peak_gib"]
    assert f"| {peak:.1f} |" in report if peak is not None else "| – | – |" in report  # GiB to one decimal
    assert (tmp_path / "decode.png").is_file()


def test_configurations_that_do_not_fit_are_recorded(tmp_path, monkeypatch):
    bench = _load()
    real = bench.bench_decoding

    def decode_or_oom(model, B, context, *args):
        if context > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, B, context, *args)

    monkeypatch.setattr(bench, "bench_decoding", decode_or_oom)
    argv = ["--preset", "debug", "--device", "cpu", "--dtype", "fp32", "--train-T", "16", "--tokens-per-step", "32",
            "--steps", "1", "--decode-B", "2", "--decode-context", "8", "32", "--decode-steps", "1",
            "--out", str(tmp_path)]  # fmt: skip
    results = bench.main(argv)
    for rows in results["decoding"].values():
        assert "oom" not in rows[0] and rows[1] == {"B": 2, "context": 32, "oom": True}
    table = (tmp_path / "results.md").read_text()
    assert "| 2 | 32 | out of memory | out of memory | – |" in table


def test_rows_are_saved_as_they_are_measured(tmp_path, monkeypatch):
    """A run stopped midway (here: an error in its first decoding row) keeps the rows measured before it."""
    bench = _load()

    def broken(*args):
        raise RuntimeError("stopped")

    monkeypatch.setattr(bench, "bench_decoding", broken)
    monkeypatch.setenv("RETNET_GIT_SHA", "abc1234")
    argv = ["--preset", "debug", "--device", "cpu", "--dtype", "fp32", "--train-T", "16", "32", "--tokens-per-step",
            "32", "--steps", "1", "--decode-B", "2", "--decode-context", "8", "--out", str(tmp_path)]  # fmt: skip
    with pytest.raises(RuntimeError, match="stopped"):
        bench.main(argv)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["T"] for r in saved["training"]["retnet"]] == [16, 32] and not saved["decoding"].get("retnet")
    assert saved["environment"]["git_sha"] == "abc1234"
