"""Running ``retnet`` in child processes (plain or under torchrun) for kill and distributed tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child_env() -> dict:
    """The environment of a child: this interpreter's import path and one thread per process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = "1"
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def run_cli(args: list[str], *, nproc: int = 1, prelude: str = "", timeout: float = 240, **popen) -> subprocess.Popen:
    """Start ``retnet ARGS`` (under torchrun when ``nproc`` > 1); ``prelude`` is Python run first."""
    code = f"{prelude}\nimport sys\nfrom retnet.cli.__main__ import main\nsys.exit(main({args!r}))\n"
    if nproc > 1:
        script = Path(popen.pop("script_dir")) / "entry.py"
        script.write_text(code)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    else:
        cmd = [sys.executable, "-c", code]
    return subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def train_losses(run_dir: Path) -> list[float]:
    """Training losses by step from a run's metrics file (last record per step)."""
    by_step = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == "train":
            by_step[rec["step"]] = rec["loss"]
    return [by_step[s] for s in sorted(by_step)]
