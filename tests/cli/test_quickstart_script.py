"""``scripts/quickstart.sh`` run against a stand-in ``retnet`` that records its arguments and thread setting."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "quickstart.sh"

FAKE_RETNET = """#!/usr/bin/env bash
echo "$1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset} ${*:2}" >> "$(dirname "$0")/calls.txt"
"""


def _run(tmp_path: Path, **env: str) -> list[str]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "quickstart.sh")
    (tmp_path / "scripts" / "setup.sh").write_text("true\n")  # the environment is "already set up"
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "retnet").write_text(FAKE_RETNET)
    (bin_dir / "retnet").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = ["bash", str(tmp_path / "scripts" / "quickstart.sh"), "--steps=5"]
    subprocess.run(cmd, check=True, env={**base, **env}, capture_output=True, timeout=30)
    return (bin_dir / "calls.txt").read_text().splitlines()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("nproc") is None, reason="needs bash and nproc")
def test_quickstart_leaves_threads_to_train_and_bounds_generate(tmp_path):
    train, generate = _run(tmp_path)
    assert train.startswith("train OMP_NUM_THREADS=unset --run_dir=runs/quickstart-") and train.endswith("--steps=5")
    bare = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # GNU nproc honours OMP_NUM_THREADS
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True, env=bare).stdout.strip()
    assert generate.startswith(f"generate OMP_NUM_THREADS={nproc} runs/quickstart-")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_quickstart_respects_an_explicit_thread_count(tmp_path):
    train, generate = _run(tmp_path, OMP_NUM_THREADS="1")
    assert train.startswith("train OMP_NUM_THREADS=1 ") and generate.startswith("generate OMP_NUM_THREADS=1 ")
