#!/usr/bin/env bash
# Create the project's virtual environment (.venv, or $VENV) from requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements.txt
# open_clip_torch is needed only for the CLIP BPE vocabulary file it ships (the offline test models' tokenizer is
# built from it). Its own dependencies (torchvision, timm) are not used, and PyPI's torchvision would replace the
# pinned torch, so it is installed without them.
"$VENV/bin/python" -m pip install -q --no-deps -r requirements-nodeps.txt
echo "environment ready: $VENV (activate with: source $VENV/bin/activate)"
