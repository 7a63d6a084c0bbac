"""Start-up time of the ``retnet`` command: wall seconds from launch to exit, and whether torch was loaded.

Every command that does not need torch yet (help, version, listing corpora) should finish well under 2 s: the
package's names are imported on first use (``retnet/utils/lazy.py``) and each subcommand imports the library inside
the function that runs it (docs/architecture.md). ``import torch`` alone is timed as the reference of what a
command pays once it needs the model.

    python benchmarks/startup.py                       # table on stdout, startup.json in the current folder
    python benchmarks/startup.py --repeats 10 --out bench_startup
    python benchmarks/startup.py -- --help "data list"   # only these ("--" before commands that start with -)

Each command runs ``--repeats`` times in a fresh interpreter (``python -m retnet ...``, OMP_NUM_THREADS=1); the
table gives the median and the fastest run. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = ["--help", "--version", "train --help", "generate --help", "eval --help", "compare --help", "data list"]

# Run one command in this interpreter the way ``python -m retnet`` does, then report whether torch got loaded.
PROBE = """
import runpy, sys
sys.argv = ["retnet", *sys.argv[1:]]
try:
    runpy.run_module("retnet", run_name="__main__")
except SystemExit:
    pass
sys.stderr.write("\\nTORCH_LOADED=%d\\n" % ("torch" in sys.modules))
"""


def time_command(args: list[str], repeats: int, env: dict[str, str]) -> dict:
    """Wall seconds of ``repeats`` fresh runs of ``retnet ARGS``.

    Args:
        args: the command's words after ``retnet`` (an empty list times ``import torch`` instead).
        repeats: runs to time (≥ 1).
        env: the environment of the runs.

    Returns:
        ``{"command", "median_s", "min_s", "runs_s", "torch_loaded", "exit_code"}``.

    Raises:
        ValueError: ``repeats`` below 1.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    argv = [sys.executable, "-c", PROBE, *args] if args else [sys.executable, "-c", "import torch"]
    runs, loaded, code = [], True, 0
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        runs.append(time.perf_counter() - start)
        code = done.returncode
        if args:
            loaded = "TORCH_LOADED=1" in done.stderr
    return {
        "command": "retnet " + " ".join(args) if args else "python -c 'import torch'",
        "median_s": statistics.median(runs),
        "min_s": min(runs),
        "runs_s": runs,
        "torch_loaded": loaded,
        "exit_code": code,
    }


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table."""
    sys.path.insert(0, str(ROOT))
    from retnet.utils.table import format_table as table

    return table(
        ["command", "median (s)", "fastest (s)", "torch loaded", "exit code"],
        [
            [
                r["command"],
                f"{r['median_s']:.2f}",
                f"{r['min_s']:.2f}",
                "yes" if r["torch_loaded"] else "no",
                r["exit_code"],
            ]
            for r in rows
        ],  # fmt: skip
        align="lrrll",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("commands", nargs="*", default=COMMANDS, help="commands to time, one quoted string each")
    ap.add_argument("--repeats", type=int, default=5, help="fresh runs per command (default 5)")
    ap.add_argument("--out", default=".", help="folder for startup.json (default: the current folder)")
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as cache:
        # ``data list`` reads only this empty cache folder, not the user's.
        commands = [
            c.split() + (["--cache-dir", cache] if c.split()[:2] == ["data", "list"] else []) for c in args.commands
        ]
        rows = [time_command(c, args.repeats, env) for c in commands]
        rows.append(time_command([], args.repeats, env))
    for r in rows:
        r["command"] = r["command"].replace(f" --cache-dir {cache}", "")
    print(format_table(rows))
    from retnet.utils.environment import environment_stamp

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"environment": environment_stamp("cpu"), "repeats": args.repeats, "rows": rows}
    (out / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'startup.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
