#!/usr/bin/env bash
# Score separations of a data dir: SI-SDRi (paper Tables 2-4) and BSS eval v3 GNSDR/GSIR/GSAR (MIREX).
# Usage: utils/score.sh [options] <data-dir> <exp-dir>
#   scores <exp-dir>/separate_<set>_<head> (utils/separate.sh) into <exp-dir>/score_<set>_<head>/:
#     result.json  {"<source>": {"si_sdri", "gnsdr", "gsir", "gsar"}, ... (each source of the data dir's
#                   sources file, e.g. vocals, accompaniment), "n_files", "seconds"}   (length-weighted means, dB)
#     per_utt.csv  per-file scores;  log/score.log
#   e.g. utils/score.sh --nj 2 --cmd "$decode_cmd" --head both data/test_remix exp/chimera
#   A head is skipped when its .done records the same options and the same inputs: the separation's
#   .done and the data dir (its scp files and the size and time of its audio); a separation or a data
#   dir made again since is scored again. --overwrite true redoes it.
nj=2              # scoring processes (BSS eval is ~0.6 s per 30 s file at 16 kHz)
cmd=utils/run.py  # job runner: utils/run.py (local) or utils/slurm.py, with options
head=both         # mi, dc, or both (every head separated in <exp-dir>)
bss=true          # also BSS eval v3 (GNSDR/GSIR/GSAR); false = SI-SDR only, much faster
sample_rate=0     # score at this rate (Hz); 0 = the references' own rate
channels=mono     # mono: mean-of-channels downmixes (paper, MIREX); each: every channel on its own, averaged
overwrite=false   # redo scores that are done
. "$(dirname "$0")/parse_options.sh"
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ $# -ne 2 ]; then
  echo "Usage: $0 [--nj N] [--cmd CMD] [--head mi|dc|both] [--bss true] [--channels mono|each] [--overwrite false] <data-dir> <exp-dir>" >&2
  exit 1
fi
data=$1 expdir=$2
set_name=$(basename "$data")
case "$head" in
  mi|dc) heads=$head ;;
  both) heads="mi dc" ;;
  *) echo "$0: --head must be mi, dc or both, got '$head'" >&2; exit 1 ;;
esac

sepkit_python
if [ "$cmd" = utils/run.py ] && [ ! -x utils/run.py ]; then cmd="$(dirname "$0")/run.py"; fi
scored=0
for h in $heads; do
  sepdir=$expdir/separate_${set_name}_$h
  dir=$expdir/score_${set_name}_$h
  if [ ! -f "$sepdir/.done" ]; then
    if [ "$head" = both ] && [ ! -d "$sepdir" ]; then
      log "no $h separation of $set_name in $expdir (the model has no $h head?), not scoring it"
      continue
    fi
    echo "$0: $sepdir is not complete (run the separation stage first)" >&2
    exit 1
  fi
  sig="bss=$bss sample_rate=$sample_rate data=$(cd "$data" && pwd)"
  [ "$channels" = mono ] || sig="$sig channels=$channels"  # mono scores of earlier versions stay done
  if ! $overwrite && [ -f "$dir/result.json" ] && stamp_ok "$dir/.done" "$sig" "$sepdir/.done" "$data"; then
    log "$dir: already scored, skipping (--overwrite true to redo)"
    scored=$((scored + 1))
    continue
  fi
  stamp_clear "$dir/.done"
  records=$(input_records "$sepdir/.done" "$data")  # what is scored, as it is before scoring
  mkdir -p "$dir/log"
  log "scoring $sepdir against $data with $nj process(es) -> $dir"
  $cmd --num-threads "$nj" "$dir/log/score.log" \
    "$python" -m sepkit.bin.score --nj "$nj" --bss "$bss" --sample-rate "$sample_rate" --channels "$channels" --overwrite \
      "$data" "$sepdir" "$dir" \
    || { echo "$0: scoring failed, see $dir/log/score.log" >&2; exit 1; }
  stamp_write "$dir/.done" "$sig" --records "$records"
  scored=$((scored + 1))
done
[ "$scored" -gt 0 ] || { echo "$0: nothing to score in $expdir for $set_name" >&2; exit 1; }
