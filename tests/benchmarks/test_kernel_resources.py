"""``benchmarks/kernel_resources.py`` compiles the kernels for sm90 without a GPU and reads their resources."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]


def test_resource_report_for_two_kernels(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiling needs the real backend
    cmd = [sys.executable, str(ROOT / "benchmarks" / "kernel_resources.py"), "--cfg", "B",
           "--kernels", "decode_step", "output_fwd", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "kernel_resources.json").read_text())["rows"]
    assert sorted(r["kernel"] for r in rows) == ["decode_step", "output_fwd"]
    by = {r["kernel"]: r for r in rows}
    # The launch the GPU would get: 64-wide blocks, tensor-core dots.
    assert by["output_fwd"]["blocks"]["BK"] == 64 and by["output_fwd"]["wgmma"] > 0
    assert by["decode_step"]["wgmma"] == 0
    for r in rows:
        assert 0 < r["registers"] <= 255 and r["shared_bytes"] >= 0 and r["stack_bytes"] >= 0
    assert by["decode_step"]["sass_fingerprint"] != by["output_fwd"]["sass_fingerprint"]
