#!/usr/bin/env bash
# Quick start: create .venv if missing, install retnet (pinned CPU PyTorch), train the default small RetNet on
# Shakespeare (fetched on first use), then generate a sample from it.
# Threads: `retnet train` uses --threads=N if given, else OMP_NUM_THREADS if set, else the CPUs this process may
# run on that other work leaves free (one thread on two CPUs while another job keeps one busy), and after about 10
# steps it logs "about N min for the run at this speed".
# Extra arguments go to `retnet train` (for example --steps=100, --threads=1 or --config configs/debug.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -f scripts/setup.sh ]]; then
  bash scripts/setup.sh
else
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e '.[dev]'
fi
RUN="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
.venv/bin/retnet train --run_dir="$RUN" "$@"
echo
echo "--- sample from $RUN ---"
# PyTorch's default is one thread per physical core of the host, which can exceed the CPUs this job may use.
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" \
  .venv/bin/retnet generate "$RUN" "ROMEO." --max-new-tokens 300 --temperature 0.8 --seed 0
