#!/usr/bin/env bash
# Quick start: create .venv if missing, install retnet (pinned CPU PyTorch), train the default small RetNet on
# Shakespeare (fetched on first use; a few minutes on 2 CPU cores), then generate a sample from it.
# Extra arguments go to `retnet train` (for example --steps=100 or --config configs/debug.yaml).
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
.venv/bin/retnet generate "$RUN" "ROMEO." --max-new-tokens 300 --temperature 0.8 --seed 0
