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


def test_time_variants_runs_each_under_its_tuning_skips_failures_and_restores_the_default(capsys):
    from retnet.ops.retention.triton import KernelTuning, current_tuning

    timings = {None: 3.0, 2: 1.0, 3: 2.0}

    def measure():
        seg = current_tuning().segment_chunks
        if seg == 9:
            raise RuntimeError("out of resources")
        return timings[seg]

    variants = {
        "planner": {},
        "two": {"segment_chunks": 2},
        "broken": {"segment_chunks": 9},
        "three": {"segment_chunks": 3},
    }
    fastest = ops.time_variants("sweep x", variants, measure)
    assert fastest == {
        "results": {"planner": 3.0, "two": 1.0, "broken": "n/a RuntimeError", "three": 2.0},
        "best": "two",
    }
    assert current_tuning() == KernelTuning()
    widest = ops.time_variants("sweep y", variants, measure, higher_is_better=True, show="{:.1%}")
    assert widest["best"] == "planner" and "planner:300.0%" in capsys.readouterr().out
    assert current_tuning() == KernelTuning()


def test_tables_report_the_tuning_in_effect():
    from retnet.ops.retention.triton import BLOCK_TABLE, retention_tuning

    assert ops._tables() == {"blocks": dict(BLOCK_TABLE), "keep_states": "auto"}
    with retention_tuning(keep_states="never", blocks={"dv_bwd": (64, 64, 2, 1)}):
        tables = ops._tables()
    assert tables["keep_states"] == "never" and tables["blocks"]["dv_bwd"] == (64, 64, 2, 1)
    assert tables["blocks"]["state_fwd"] == BLOCK_TABLE["state_fwd"]
