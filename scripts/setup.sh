#!/usr/bin/env bash
# Create .venv with streamcl and everything its tests and demo need.
# torch is installed first and pinned: the CPU wheel 2.13.0 (an unpinned torch pulls a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install --quiet "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install --quiet -e ".[dev,kafka,faiss]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, stream, learners, memory; print('streamcl ready: torch', torch.__version__)"
