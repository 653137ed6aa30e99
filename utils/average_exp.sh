#!/usr/bin/env bash
# Recipe step after training: average the weights of the last N checkpoints of an exp dir into a model
# that the separation and scoring stages use (python -m sepkit.bin.average_checkpoints, ESPnet-style).
# Usage: utils/average_exp.sh [--overwrite false] <N> <exp-dir> <decode-dir>
#   e.g. utils/average_exp.sh 3 exp/train_chimera_cpu exp/train_chimera_cpu_avg3
#   writes <decode-dir>/model.pt; N <= 1 does nothing. Skipped when <decode-dir>/model.pt already
#   averages the same checkpoints and is newer than them; redone otherwise (a derived file).
overwrite=false   # rewrite the average even if it is up to date
. "$(dirname "$0")/parse_options.sh"
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "Usage: $0 [--overwrite false] <N> <exp-dir> <decode-dir>" >&2
  exit 1
fi
n=$1 expdir=$2 decode_dir=$3
[[ "$n" =~ ^[0-9]+$ ]] || { echo "$0: N must be a non-negative integer, got '$n'" >&2; exit 1; }
[ "$n" -gt 1 ] || exit 0
opts=(--last "$n" --update)
$overwrite && opts+=(--overwrite)
mkdir -p "$decode_dir"
python -m sepkit.bin.average_checkpoints "${opts[@]}" "$expdir" "$decode_dir/model.pt"
