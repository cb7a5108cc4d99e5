#!/usr/bin/env bash
# Create .venv and install aiprim into it.
#
# torch: if the interpreter that creates the venv already has a torch >= 2.3
# (a user's CUDA build, say), the venv sees it through system site-packages
# and keeps it. Otherwise torch==2.13.0 is installed first: on these machines
# plain pip resolves that to a local CPU build, and because it is installed
# before anything else, no later requirement pulls the multi-GB CUDA wheels.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "aiprim needs Python >= 3.11 (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c 'import torch, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if v >= (2, 3) else 1)' 2>/dev/null; then
    echo "setup: keeping the torch that $PYTHON already has"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo "setup: installing torch==2.13.0"
  "$VENV/bin/python" -m pip install -q torch==2.13.0
fi
echo "setup: installing aiprim and its pinned dependencies (constraints.txt)"
"$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[dev]'
