"""Commands that need no model start without torch: the package's names and each command's library are imported
only when used (the start-up time itself is measured by benchmarks/startup.py, not here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run each command as ``python -m retnet`` would, in one fresh interpreter, and print which heavy modules it loaded.
PROBE = """
import runpy, sys
for words in sys.argv[1:]:
    sys.argv = ["retnet", *words.split()]
    try:
        runpy.run_module("retnet", run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    heavy = sorted(m for m in ("torch", "numpy", "triton", "transformers", "matplotlib", "tqdm") if m in sys.modules)
    print("LOADED", words, "|", ",".join(heavy), file=sys.stderr)
"""


def loaded_modules(commands: list[str], tmp_path) -> dict[str, set[str]]:
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *commands], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = {}
    for line in done.stderr.splitlines():
        if line.startswith("LOADED "):
            words, heavy = line[len("LOADED ") :].split(" | ")
            found[words] = set(filter(None, heavy.split(",")))
    assert list(found) == commands, done.stderr
    return found


def test_help_version_and_listing_do_not_import_torch(tmp_path):
    commands = ["--help", "--version", "train --help", "generate --help", "compare --help", "data prepare --help"]
    commands.append(f"data list --cache-dir {tmp_path}")
    loaded = loaded_modules(commands, tmp_path)
    # One interpreter runs them in order, so a module that one command loads shows from that command on.
    assert all(not heavy for words, heavy in loaded.items() if words != commands[-1]), loaded
    # Running a command (not only its help) loads its library (tqdm, through the corpus registry): the probe sees
    # what a command imports.
    assert loaded[commands[-1]] == {"tqdm"}, loaded
