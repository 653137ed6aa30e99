#!/usr/bin/env bash
# Build tools/venv with every dependency of sepkit (idempotent; quick when already built).
#
#   TORCH_SPEC   torch requirement to install (default: torch==2.13.0, the CPU wheel).
#                GPU users: TORCH_SPEC="torch==2.5.1" tools/install.sh (or any CUDA build).
#   PYTHON       interpreter used to create the venv (default: python3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
venv="$here/venv"
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}
stamp="$venv/.sepkit-installed"
want="$TORCH_SPEC|$(cat "$root/setup.py" | md5sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "tools/install.sh: $venv is up to date"
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "tools/install.sh: creating $venv"
  "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$venv/bin/python" -m pip install -q "$TORCH_SPEC"
"$venv/bin/python" -m pip install -q -e "$root[dev,musdb,onnx]"
echo "$want" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "tools/install.sh: done ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
