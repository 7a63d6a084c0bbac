"""``benchmarks/ops.py`` without a GPU: merged runs (``--from-json``), the table with ratios and memory, the plot."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytest.importorskip("matplotlib")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import ops  # noqa: E402


def _row(op, ms, peak_gib, cfg="B", T=8192, backward=True):
    return {"cfg": cfg, "T": T, "B": 65536 // T, "H": 16, "K": 128, "V": 128,
            "pass": "fwd+bwd" if backward else "fwd", "op": op, "ms": ms, "floor_ms": 0.5, "peak_gib": peak_gib,
            "tflops": 1.0, "tokens_per_s": 65536 / (ms * 1e-3)}  # fmt: skip


def test_from_json_merges_runs_and_reports_ratios_and_memory(tmp_path, capsys):
    first = {"copy_bw_Bps": 4e12, "matmul_flops": 7e14,
             "chunkwise": [_row("ours", 4.0, 3.0), _row("fla", 6.0, 4.0), _row("sdpa_cudnn", 15.0, 2.5)]}  # fmt: skip
    second = {"copy_bw_Bps": 4e12, "matmul_flops": 7e14, "chunkwise": [_row("ours", 3.0, 3.0)]}  # a later rerun
    paths = []
    for i, res in enumerate((first, second)):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(res))
    out = tmp_path / "merged"
    out.mkdir()
    ops.main(["--from-json", *map(str, paths), "--out", str(out)])
    merged = json.loads((out / "results.json").read_text())
    ours = [r for r in merged["chunkwise"] if r["op"] == "ours"]
    assert [r["ms"] for r in ours] == [3.0]  # the later file's row wins
    assert (out / "retention.png").stat().st_size > 0  # one cfg and pass: the empty panels are hidden
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("B ") and "fwd+bwd" in x)
    cells = line.split()
    assert cells[3] == "3.000" and cells[9] == "2.00"  # ours ms; FLA / ours
    assert cells[-2:] == ["3.00", "4.00"]  # peak GiB of ours and of FLA
    assert "cudnn" in line and "5.00" in cells  # best SDPA backend and its ratio to ours


def test_time_variants_picks_the_best_skips_failures_and_restores_the_default(capsys):
    current = {"value": "default"}
    timings = {"a": 3.0, "b": 1.0, "c": 2.0}

    def measure():
        if current["value"] == "broken":
            raise RuntimeError("out of resources")
        return timings[current["value"]]

    apply = lambda v: current.__setitem__("value", v)  # noqa: E731
    variants = {"a": "a", "b": "b", "broken": "broken", "c": "c"}
    fastest = ops.time_variants("sweep x", variants, apply, measure, "default")
    assert fastest == {"results": {"a": 3.0, "b": 1.0, "broken": "n/a RuntimeError", "c": 2.0}, "best": "b"}
    assert current["value"] == "default"
    widest = ops.time_variants("sweep y", variants, apply, measure, "default", higher_is_better=True, show="{:.1%}")
    assert widest["best"] == "a" and "a:300.0%" in capsys.readouterr().out
