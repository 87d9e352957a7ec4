#!/usr/bin/env bash
# Create .venv with streamcl and everything its tests and demo need.
# torch is installed first and pinned: the CPU wheel 2.13.0 (an unpinned torch pulls a CUDA build).
# pip's own chatter (build-backend notices) goes to .venv/setup.log and is shown only on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
log=.venv/setup.log
: >"$log"
pip_install() {
  if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" >>"$log" 2>&1; then
    cat "$log" >&2
    echo "setup failed: pip install $*" >&2
    exit 1
  fi
}
pip_install --upgrade pip
pip_install "torch==2.13.0"
pip_install -e ".[dev,kafka,faiss]"
# matplotlib builds its font cache on first import; do it here, not in the demo's output.
.venv/bin/python -c "import matplotlib.pyplot" >>"$log" 2>&1
.venv/bin/python -c "import torch, stream, learners, memory; print('streamcl ready: torch', torch.__version__)"
