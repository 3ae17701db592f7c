#!/usr/bin/env bash
# Create .venv and install modalign, the miniature-world lab (lab/, its own distribution) and the
# test tools. CPU torch comes from the pinned wheel (never let pip resolve a bare "torch": that
# would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]" -e ./lab
