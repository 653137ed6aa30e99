#!/usr/bin/env bash
# Score separations with BSS eval v4 as MUSDB18 results are reported (python -m sepkit.bin.score_v4):
# images on the references' channels, 1 s windows and hops, median over frames, then over tracks.
# Usage: local/score_v4.sh [options] <data-dir> <exp-dir>
#   scores <exp-dir>/separate_<set>_<head> into <exp-dir>/score_<set>_<head>/{result_v4.json,per_track_v4.csv}
#   beside the result.json of utils/score.sh; a head whose result_v4.json is newer than its
#   separation is skipped; --overwrite true redoes it.
nj=2              # scoring processes
cmd=utils/run.py  # job runner
head=both         # mi, dc or both
overwrite=false   # redo scores that are done
. utils/parse_options.sh
set -euo pipefail
. utils/lib.sh

if [ $# -ne 2 ]; then
  echo "Usage: $0 [--nj N] [--cmd CMD] [--head mi|dc|both] [--overwrite false] <data-dir> <exp-dir>" >&2
  exit 1
fi
data=$1 expdir=$2
set_name=$(basename "$data")
case "$head" in
  mi|dc) heads=$head ;;
  both) heads="mi dc" ;;
  *) echo "$0: --head must be mi, dc or both, got '$head'" >&2; exit 1 ;;
esac
for h in $heads; do
  sepdir=$expdir/separate_${set_name}_$h
  dir=$expdir/score_${set_name}_$h
  if [ ! -f "$sepdir/.done" ]; then
    [ "$head" = both ] && [ ! -d "$sepdir" ] && { log "no $h separation of $set_name in $expdir, not scoring it"; continue; }
    echo "$0: $sepdir is not complete (run the separation stage first)" >&2
    exit 1
  fi
  if ! $overwrite && [ -f "$dir/result_v4.json" ] && [ "$dir/result_v4.json" -nt "$sepdir/.done" ]; then
    log "$dir/result_v4.json: already scored, skipping (--overwrite true to redo)"
    continue
  fi
  mkdir -p "$dir/log"
  log "BSS eval v4 of $sepdir against $data with $nj process(es) -> $dir/result_v4.json"
  $cmd --num-threads "$nj" "$dir/log/score_v4.log" \
    python -m sepkit.bin.score_v4 --nj "$nj" --overwrite "$data" "$sepdir" "$dir" \
    || { echo "$0: BSS eval v4 failed, see $dir/log/score_v4.log" >&2; exit 1; }
done
