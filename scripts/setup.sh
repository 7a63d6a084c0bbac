#!/usr/bin/env bash
# Create .venv (if missing) and install retnet with its development tools.
# CPU machines get the pinned CPU build of PyTorch; set RETNET_TORCH_SPEC to choose another
# (for example RETNET_TORCH_SPEC="torch" on a CUDA machine, or skip it with RETNET_TORCH_SPEC="").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
TORCH_SPEC=${RETNET_TORCH_SPEC-torch==2.13.0}
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [[ -n "$TORCH_SPEC" ]]; then
  .venv/bin/python -m pip install -q "$TORCH_SPEC"
fi
if [[ "$TORCH_SPEC" == "torch==2.13.0" ]]; then
  .venv/bin/python -m pip install -q "triton==3.7.1"  # the Triton whose CPU interpreter the tests use
fi
.venv/bin/python -m pip install -q -e '.[dev,train,triton]'
