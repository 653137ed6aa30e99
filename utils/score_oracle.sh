#!/usr/bin/env bash
# Reference rows of a results table: oracle mel masks (IBM = the DC target, Wiener-like = the mMSA
# target) and the unprocessed mixture, scored exactly like a separation (python -m sepkit.bin.oracle).
# Usage: utils/score_oracle.sh [options] <feat-conf> <data-dir> <exp-dir>
#   e.g. utils/score_oracle.sh --nj 2 conf/feats.yaml data/test_remix exp/oracle_feats
#   writes <exp-dir>/score_<set>_{ibm,wlm,mix}/{result.json, per_utt.csv}, log in <exp-dir>/log/;
#   skipped when done for the same feature settings and data (its scp files and the size and time of
#   its audio, as recorded in <exp-dir>/.done_oracle_<set>); --overwrite true redoes it.
nj=2              # scoring processes
cmd=utils/run.py  # job runner: utils/run.py (local) or utils/slurm.py, with options
masks=ibm,wlm,mix # oracle estimates: ibm, wlm (Wiener-like), mix (the mixture itself)
bss=true          # also BSS eval v3 (GNSDR/GSIR/GSAR); false = SI-SDR only
overwrite=false   # redo even if done
. "$(dirname "$0")/parse_options.sh"
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ $# -ne 3 ]; then
  echo "Usage: $0 [--nj N] [--cmd CMD] [--masks ibm,wlm,mix] [--bss true] [--overwrite false] <feat-conf> <data-dir> <exp-dir>" >&2
  exit 1
fi
feat_conf=$1 data=$2 expdir=$3
set_name=$(basename "$data")
[ -f "$feat_conf" ] || { echo "$0: feature config $feat_conf not found" >&2; exit 1; }
[ -f "$data/wav.scp" ] || { echo "$0: $data/wav.scp not found" >&2; exit 1; }
marker=$expdir/.done_oracle_$set_name
sig="feats=$(md5sum < "$feat_conf" | cut -d' ' -f1) masks=$masks bss=$bss data=$(cd "$data" && pwd)"
if ! $overwrite && stamp_ok "$marker" "$sig" "$data"; then
  log "$expdir: oracle masks ($masks) of $set_name already scored, skipping (--overwrite true to redo)"
  exit 0
fi
sepkit_python
if [ "$cmd" = utils/run.py ] && [ ! -x utils/run.py ]; then cmd="$(dirname "$0")/run.py"; fi
stamp_clear "$marker"
records=$(input_records "$data")  # what is scored, as it is before scoring
mkdir -p "$expdir/log"
log "scoring oracle masks ($masks, $(basename "$feat_conf" .yaml) features) of $data -> $expdir/score_${set_name}_*"
$cmd --num-threads "$nj" "$expdir/log/oracle_$set_name.log" \
  "$python" -m sepkit.bin.oracle --feat-conf "$feat_conf" --masks "$masks" --nj "$nj" --bss "$bss" --overwrite \
    "$data" "$expdir" \
  || { echo "$0: oracle scoring failed, see $expdir/log/oracle_$set_name.log" >&2; exit 1; }
stamp_write "$marker" "$sig" --records "$records"
