#!/usr/bin/env bash
# Set up flywheel in ./.venv on a fresh machine (idempotent). Installs the CPU build of torch
# first: an unpinned torch would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[train,dev]"
echo "flywheel installed in .venv: run .venv/bin/flywheel --help"
