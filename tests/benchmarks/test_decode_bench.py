"""``benchmarks/decode.py`` runs end to end at tiny sizes on CPU and reports what its docstring promises."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--preset", "debug", "--device", "cpu", "--dtype", "fp32", "--contexts", "16", "48", "--batches", "1", "3",
        "--latency-contexts", "24", "--steps", "2", "--warmup", "1", "--prefill-lengths", "32", "--floor-context",
        "16", "--fit-context", "24", "--max-search-batch", "4", "--prefill-batch", "2"]  # fmt: skip


def _load():
    spec = importlib.util.spec_from_file_location("bench_decode", ROOT / "benchmarks" / "decode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decode_benchmark_smoke(tmp_path, monkeypatch):
    bench = _load()
    monkeypatch.setenv("RETNET_GIT_SHA", "abc1234")
    results = bench.main([*TINY, "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    env = saved["environment"]
    assert env["git_sha"] == "abc1234" and env["torch"] and env["copy_bandwidth_bytes_per_s"] > 0
    assert "decode.py --preset debug" in env["command"] and env["date"]
    for name in ("retnet", "transformer"):
        assert [r["context"] for r in results["context_sweep"][name]] == [16, 48]
        assert [r["B"] for r in results["batch_sweep"][name]] == [1, 3]
        assert all(r["tokens_per_s"] > 0 and r["latency_ms"] > 0 for r in results["batch_sweep"][name])
        floor = results["floor"][name]
        assert 0 < floor["fraction"] == pytest.approx(floor["tokens_per_s"] / floor["floor_tokens_per_s"])
        assert results["largest_batch"][name] == {**results["largest_batch"][name], "batch": 4, "capped": True}
        assert results["prefill"][name][0]["T"] == 32 and results["prefill"][name][0]["tokens_per_s"] > 0
        assert results["at_transformer_batch"][name]["B"] == 4
    # RetNet's state is constant in the context; the static KV cache grows with max_len.
    retnet, transformer = results["context_sweep"]["retnet"], results["context_sweep"]["transformer"]
    assert retnet[0]["state_gib"] == retnet[1]["state_gib"] > 0
    assert transformer[1]["state_gib"] > transformer[0]["state_gib"] > 0
    assert all("skipped" in r for r in results["references"].values())  # CUDA only
    at = results["summary"]["at_transformer_batch"]
    r, t = results["at_transformer_batch"]["retnet"], results["at_transformer_batch"]["transformer"]
    assert at["B"] == 4 and at["throughput_ratio"] == pytest.approx(r["tokens_per_s"] / t["tokens_per_s"])
    assert results["summary"]["flat_in_context"]["retnet"]["latency_max_over_first"] >= 1
    report = (tmp_path / "results.md").read_text()
    assert report.startswith("# Decoding, preset debug") and "| retnet | 3 | 24 |" in report
    assert (tmp_path / "figure6.png").is_file()


def test_the_batch_search_records_out_of_memory(tmp_path, monkeypatch):
    """A batch that does not fit is recorded as such; the search bisects between the last fit and the first miss."""
    bench = _load()
    real = bench.decode_row

    def row_or_oom(model, B, context, args, device, short=False):
        if B > 5:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, B, context, args, device, short=short)

    monkeypatch.setattr(bench, "decode_row", row_or_oom)
    argv = [*TINY, "--batches", "1", "8", "--max-search-batch", "64", "--models", "retnet", "--references",
            "--prefill-lengths", "--out", str(tmp_path)]  # fmt: skip
    results = bench.main(argv)
    search = results["largest_batch"]["retnet"]
    assert search["batch"] == 5 and not search["capped"]
    assert {"B": 8, "fits": False} in search["trials"] and {"B": 4, "fits": True} in search["trials"]
    assert results["batch_sweep"]["retnet"][1] == {"B": 8, "context": 24, "oom": True}
    assert "| retnet | 8 | 24 | out of memory |" in (tmp_path / "results.md").read_text()


def test_decode_benchmark_profiles_and_runs_unpacked(tmp_path):
    bench = _load()
    args = [*TINY, "--models", "retnet", "--references", "--fit-context", "0", "--prefill-lengths"]
    bench.main([*args, "--no-pack", "--profile-batch", "2", "--out", str(tmp_path)])
    table = (tmp_path / "profile-retnet-B2.txt").read_text()
    assert "steps at batch 2" in table and "aten::" in table  # the CPU ops of the step, by name
