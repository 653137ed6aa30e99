#!/usr/bin/env bash
# Separate the mixtures (wav.scp) of a data dir with a trained model, in parallel jobs.
# Usage: utils/separate.sh [options] <model> <data-dir> <exp-dir>
#   <model>    exp dir of a training run (its model.pt) or a model file
#   writes <exp-dir>/separate_<set>_<head>/ for each head (<set> = basename of <data-dir>):
#     wav/<source>/<utt>.wav, wav.scp (mixtures), <source>.scp (estimates), sources, utt2dur, log/
#   e.g. utils/separate.sh --nj 4 --cmd "$decode_cmd" --head both exp/chimera data/test_remix exp/chimera
#   A head whose dir is complete (.done marker naming the same model file, size and time, options,
#   and data: its wav.scp and the size and time of the audio files it names) is skipped; an
#   interrupted run of the same model, options and data resumes where it stopped (utterances
#   already written are kept). Anything else in that
#   dir (separated with another model, options or data, or not made by separate.sh) is never
#   removed: it is refused, and --overwrite true moves it aside to <dir>.old.<time> and redoes it.
nj=4              # parallel jobs (at most one per utterance)
cmd=utils/run.py  # job runner: utils/run.py (local) or utils/slurm.py, with options
head=both         # mi, dc, or both (every head the model has)
ngpu=0            # GPUs per job: 0 = separate on CPU, 1 = on a GPU
num_threads=1     # torch CPU threads per job
separate_opts=    # more options of sepkit.bin.separate_data, e.g. "--dtype float32 --segment-frames 200"
overwrite=false   # redo separations that are done; the old ones are moved aside to <dir>.old.<time>
. "$(dirname "$0")/parse_options.sh"
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ $# -ne 3 ]; then
  echo "Usage: $0 [--nj N] [--cmd CMD] [--head mi|dc|both] [--ngpu 0|1] [--overwrite false] <model> <data-dir> <exp-dir>" >&2
  exit 1
fi
model=$1 data=$2 expdir=$3
set_name=$(basename "$data")
utils=$(dirname "$0")
[ -f "$data/wav.scp" ] || { echo "$0: $data/wav.scp not found" >&2; exit 1; }
model_file=$model
[ -d "$model" ] && model_file=$model/model.pt
[ -f "$model_file" ] || { echo "$0: no model file $model_file (has training finished?)" >&2; exit 1; }
model_id="model=$(readlink -f "$model_file") $(stat -c '%s %Y' "$model_file")"
case "$ngpu" in
  0) device=cpu ;;
  1) device=cuda ;;
  *) echo "$0: --ngpu must be 0 or 1 for separation, got $ngpu" >&2; exit 1 ;;
esac

sepkit_python
if [ "$cmd" = utils/run.py ] && [ ! -x utils/run.py ]; then cmd="$utils/run.py"; fi
case "$head" in
  mi|dc|both) ;;
  *) echo "$0: --head must be mi, dc or both, got '$head'" >&2; exit 1 ;;
esac
# the model's heads; and a data dir asking for a source the model does not separate (another stem
# count) stops here with one line, before any separation dir is made
known=$("$python" -m sepkit.bin.separate_data --print-heads --model "$model" "$data") || exit 1
heads=$head
[ "$head" = both ] && heads=$known
n_utts=$(wc -l < "$data/wav.scp")
# the mixtures: wav.scp and the size and time of every file it names (a data dir prepared again
# from the same files is the same data; audio rewritten in place is not)
data_id=$("$python" -m sepkit.data.fingerprint data --wav-only "$data") || exit 1
[ "$nj" -le "$n_utts" ] || nj=$n_utts
for h in $heads; do
  dir=$expdir/separate_${set_name}_$h
  sig="$model_id head=$h opts=$separate_opts data=$(cd "$data" && pwd) mixtures=$data_id"
  # ours: made by this script with this model, head, options and data (interrupted or done)
  why=
  if [ ! -f "$dir/model_id" ]; then
    why="not made by separate.sh (no model_id)"
  elif [ "$(cat "$dir/model_id")" != "$sig" ]; then
    why="separated with another model file, head, --separate-opts or data (see its model_id)"
  fi
  if [ -z "$why" ] && ! $overwrite && stamp_ok "$dir/.done" "$sig"; then
    log "$dir: already separated with $model_file, skipping (--overwrite true to redo)"
    continue
  fi
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] && { [ -n "$why" ] || $overwrite; }; then
    $overwrite || refuse_overwrite "$dir" "$why"
    abs=$(readlink -f "$dir")
    move_aside "$dir"
    repoint_scps "$moved_to" "$dir" "$abs"
  elif [ -e "$dir" ] && [ ! -d "$dir" ]; then
    $overwrite || refuse_overwrite "$dir" "not a directory"
    move_aside "$dir"
  fi
  stamp_clear "$dir/.done"
  mkdir -p "$dir/log" "$dir/split$nj"
  echo "$sig" > "$dir/model_id"
  log "separating $data ($n_utts utts) with the $h head of $model_file in $nj job(s) -> $dir"
  parts=()
  for n in $(seq "$nj"); do parts+=("$dir/split$nj/wav.$n.scp"); done
  "$python" "$utils/split_scp.py" --utt2dur "$data/utt2dur" "$data/wav.scp" "${parts[@]}"
  gpu_opt=
  [ "$ngpu" -eq 0 ] || gpu_opt="--gpu $ngpu"
  # shellcheck disable=SC2086
  $cmd $gpu_opt --num-threads "$num_threads" JOB=1:"$nj" "$dir/log/separate.JOB.log" \
    "$python" -m sepkit.bin.separate_data --model "$model" --head "$h" --scp "$dir/split$nj/wav.JOB.scp" \
      --device "$device" --num-threads "$num_threads" $separate_opts "$data" "$dir" \
    || { echo "$0: separation failed, see $dir/log/separate.*.log" >&2; exit 1; }
  "$python" -m sepkit.bin.separate_data --finalize "$data" "$dir" 2> "$dir/log/finalize.log" \
    || { cat "$dir/log/finalize.log" >&2; exit 1; }
  stamp_write "$dir/.done" "$sig"
  log "$dir: done"
done
