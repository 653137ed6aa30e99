#!/usr/bin/env bash
# One check of sepkit's GPU path (docs/distributed.md, "Checking a GPU machine"): recipe training with
# --ngpu 1 (float32 and bf16 autocast), 2-process DDP on one GPU, separation of a 3-minute file with
# both heads against the CPU float32 path, and timings beside a bare nn.LSTM model. Writes
# OUTDIR/gpu_check.json, OUTDIR/gpu_check.md and OUTDIR/gpu_check.log; exits 1 when a check fails.
#
# Usage: tools/gpu_check.sh [options] OUTDIR [options of tools/gpu_check.py, e.g. --only timing]
#   tools/gpu_check.sh --wheels .whl out/          on a GPU machine without network (a few minutes)
#   tools/gpu_check.sh --device cpu out/           the same script, tiny sizes, on the CPU (tests)
# The machine needs python with torch (a CUDA build for --device cuda), numpy, scipy, scikit-learn,
# tensorboard, PyYAML and numba; sepkit's other dependencies come from --wheels (fetched beforehand
# with the pip download command of docs/distributed.md) or must be installed already. Nothing is
# installed outside the scratch folder: sepkit runs from this tree (PYTHONPATH).
device=cuda        # cuda: full sizes on the GPU; cpu: tiny sizes on the CPU
wheels=            # folder of wheels: the missing dependencies are installed from it, without network
python=            # interpreter (default: tools/venv/bin/python when it exists, else python3)
workdir=           # scratch folder for corpus, features and models (default: a new temporary folder, removed)
. "$(dirname "$0")/../utils/parse_options.sh"
set -euo pipefail

die() { echo "${0##*/}: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: $0 [--device cuda|cpu] [--wheels DIR] [--python PY] [--workdir DIR] OUTDIR [check options]"
outdir=$1
shift
case "$device" in cuda|cpu) ;; *) die "--device must be cuda or cpu, got '$device'" ;; esac
[ -z "$wheels" ] || [ -d "$wheels" ] || die "--wheels $wheels: no such folder"
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$python" ]; then
  if [ -x "$root/tools/venv/bin/python" ]; then python=$root/tools/venv/bin/python; else python=python3; fi
fi
command -v "$python" >/dev/null || die "no python '$python'"
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
log=$outdir/gpu_check.log
: > "$log"
made_workdir=false
if [ -z "$workdir" ]; then
  workdir=$(mktemp -d "${TMPDIR:-/tmp}/sepkit_gpu_check.XXXXXX")
  made_workdir=true
fi
cleanup() { if $made_workdir; then rm -rf "$workdir"; fi; }
trap cleanup EXIT
mkdir -p "$workdir"

if [ -n "$wheels" ]; then
  # Only the wheels of distributions not installed yet, into $workdir/site, without resolving: pip's
  # resolver would re-check the pins of every installed package against an index it cannot reach.
  mapfile -t want < <("$python" - "$wheels" <<'PY'
import importlib.metadata as md
import sys
from pathlib import Path

for whl in sorted(Path(sys.argv[1]).glob("*.whl")):
    try:
        md.version(whl.name.split("-")[0])
    except md.PackageNotFoundError:
        print(whl)
PY
  )
  echo "${0##*/}: ${#want[@]} wheels of $wheels to install: ${want[*]##*/}" | tee -a "$log" >&2
  if [ ${#want[@]} -gt 0 ] && ! "$python" -m pip install --no-index --no-deps --no-compile --no-cache-dir \
      --disable-pip-version-check --target "$workdir/site" "${want[@]}" >> "$log" 2>&1; then
    grep -E "ERROR|error:" "$log" | tail -n 5 >&2 || true
    die "pip could not install the wheels of $wheels (see $log)"
  fi
  export PYTHONPATH=$workdir/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}  # sepkit from this tree
missing=$("$python" - <<'PY'
import importlib.util

mods = ["torch", "numpy", "scipy", "sklearn", "yaml", "tensorboard", "numba", "librosa", "soxr", "soundfile",
        "kaldiio", "configargparse", "mir_eval", "tqdm", "pooch", "audioread"]
print(" ".join(m for m in mods if importlib.util.find_spec(m) is None))
PY
)
[ -z "$missing" ] || die "$python lacks: $missing (give --wheels DIR, see docs/distributed.md)"

rc=0
PYTHONUNBUFFERED=1 "$python" "$root/tools/gpu_check.py" --device "$device" --workdir "$workdir" "$outdir" "$@" \
  2>&1 | tee -a "$log" || rc=$?
exit "$rc"
