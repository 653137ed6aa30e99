#!/usr/bin/env bash
# Recipe stage "training": train a model into an exp dir through the job runner, once.
# Usage: utils/train_exp.sh [options] <train-config.yaml> <train-dump> <valid-dump> <exp-dir>
#   e.g. utils/train_exp.sh --ngpu 2 --cmd "$cuda_cmd" conf/tuning/train_dc.yaml \
#            dump/feats/train_remix dump/feats/valid_remix exp/train_dc
#   Runs utils/train.sh (python -m sepkit.bin.train, torchrun with --ngpu > 1) as one job of
#   $cmd with its log in <exp-dir>/log/train.log (the trainer's own log is <exp-dir>/train.log).
#   Writes <exp-dir>/{config.yaml, model.pt, checkpoints/, tensorboard/, train.log}.
#   Skipped when <exp-dir>/.done says this config (same contents), dumps and options were
#   trained and model.pt exists; an interrupted run continues from its newest checkpoint;
#   --init_model fine-tunes a parent network (python -m sepkit.bin.train --init_model): a local parent
#   file (<dir>/model.pt for a folder) is an input of the stage like the dumps; a run whose checkpoints were
#   made from another version of it is refused (a hub id is recorded by name only);
#   --overwrite true moves <exp-dir> aside (<exp-dir>.old.<time>, with whatever else is in it: nothing is
#   deleted) and trains from scratch.
ngpu=0            # GPUs; 0 = CPU, N > 1 = N DDP processes (torchrun)
num_nodes=1       # machines; > 1 inside a SLURM job of that many nodes (e.g. SEPKIT_SLURM_OPTS="--nodes 2"):
                  # utils/train.sh starts one torchrun per node with srun
cmd=utils/run.py  # job runner: utils/run.py (local) or utils/slurm.py, with options
train_args=       # more options of python -m sepkit.bin.train (override the config), e.g. "--epochs 5"
valid_data=       # validation data dir (mixture audio for the TensorBoard examples); empty = none
init_model=       # fine-tuning: parent model (file, exp dir, checkpoint or hub id owner/name) to start from; empty = none
overwrite=false   # train again from scratch even if done (the old exp dir is moved aside to DIR.old.TIME, not deleted)
. "$(dirname "$0")/parse_options.sh"
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ $# -ne 4 ]; then
  echo "Usage: $0 [--ngpu N] [--num_nodes N] [--cmd CMD] [--train-args ARGS] [--overwrite false] <config> <train-dump> <valid-dump> <exp-dir>" >&2
  exit 1
fi
config=$1 train_dump=$2 valid_dump=$3 expdir=$4
utils=$(dirname "$0")
[ -f "$config" ] || { echo "$0: training config $config not found" >&2; exit 1; }
for d in "$train_dump" "$valid_dump"; do
  [ -f "$d/mix.scp" ] || { echo "$0: $d/mix.scp not found (run the feature stage first)" >&2; exit 1; }
done
[ -f "$train_dump/cmvn.ark" ] || { echo "$0: $train_dump/cmvn.ark not found (run the feature stage first)" >&2; exit 1; }

sig="config=$(md5sum < "$config" | cut -d' ' -f1) args=$train_args train=$(cd "$train_dump" && pwd) valid=$(cd "$valid_dump" && pwd)"
inputs=("$train_dump" "$valid_dump" "$train_dump/cmvn.ark")  # the dumps by fingerprint (lib.sh input_records)
parent=
if [ -n "$init_model" ]; then
  sig="$sig init_model=$init_model"
  parent=$init_model
  [ ! -d "$parent" ] || parent=$parent/model.pt
  if [ -e "$parent" ]; then
    inputs+=("$parent")
  elif [ -e "$init_model" ] || [[ "$init_model" == */*/* || "$init_model" != */* || "$init_model" == [./]* || "$init_model" == *.pt ]]; then
    echo "$0: --init_model $init_model: no such model file (or no model.pt in that folder)" >&2; exit 1
  else
    parent=  # a hub id (owner/name[@revision]): the library resolves and checks it
  fi
fi
if ! $overwrite && [ -f "$expdir/model.pt" ] && stamp_ok "$expdir/.done" "$sig" "${inputs[@]}"; then
  log "$expdir: training already finished ($expdir/model.pt), skipping (--overwrite true to retrain)"
  exit 0
fi
stamp_clear "$expdir/.done"
records=$(input_records "${inputs[@]}") || exit 1  # taken before training: a dump changed meanwhile stays stale
if ! $overwrite && [ -n "$init_model" ] && compgen -G "$expdir/checkpoints/ckpt-epoch*.pt" > /dev/null; then
  # a run that continues: it must have started from this parent, as it is now
  now=$( [ -z "$parent" ] || input_records "$parent")
  if [ ! -f "$expdir/init_model.record" ] || [ "$(cat "$expdir/init_model.record")" != "init_model=$init_model $now" ]; then
    echo "$0: $expdir: its checkpoints were not fine-tuned from $init_model as it is now ($expdir/init_model.record: $(head -c 200 "$expdir/init_model.record" 2>/dev/null || echo none)); retrain with --overwrite true, or use another --tag" >&2
    exit 1
  fi
fi
if $overwrite && { [ -e "$expdir" ] || [ -L "$expdir" ]; }; then
  move_aside "$expdir"  # its training, and separations or scores of its model: kept, not deleted
  for sep in "$moved_to"/separate_*/; do
    [ -d "$sep" ] && repoint_scps "$sep" "${expdir%/}/$(basename "$sep")"  # the moved separations stay readable
  done
fi
mkdir -p "$expdir/log"
init_args=()
if [ -n "$init_model" ]; then
  init_args=(--init_model "$init_model")
  compgen -G "$expdir/checkpoints/ckpt-epoch*.pt" > /dev/null ||  # a fresh start: which parent, as it is now
    printf 'init_model=%s %s\n' "$init_model" "$( [ -z "$parent" ] || input_records "$parent")" > "$expdir/init_model.record"
fi
if [ "$cmd" = utils/run.py ] && [ ! -x utils/run.py ]; then cmd="$utils/run.py"; fi
gpu_opt=
[ "$ngpu" -eq 0 ] || gpu_opt="--gpu $ngpu"
extra=()
[ -z "$valid_data" ] || extra=(--valid-data "$valid_data")
log "training $config on $ngpu GPU(s), log in $expdir/log/train.log (progress: tail -f $expdir/train.log)"
# shellcheck disable=SC2086
if ! $cmd $gpu_opt "$expdir/log/train.log" \
    bash "$utils/train.sh" --ngpu "$ngpu" --num_nodes "$num_nodes" -- --config "$config" --train-dump "$train_dump" \
      --valid-dump "$valid_dump" --outdir "$expdir" ${extra[@]+"${extra[@]}"} ${init_args[@]+"${init_args[@]}"} $train_args; then
  grep -h "ERROR" "$expdir/log/train.log" 2>/dev/null | tail -n 3 >&2 || true
  if grep -q "differ from this configuration" "$expdir/log/train.log" 2>/dev/null; then
    echo "$0: $expdir was trained with other settings: retrain it with --overwrite true, or use another --tag" >&2
  fi
  echo "$0: training failed, see $expdir/log/train.log" >&2
  exit 1
fi
[ -f "$expdir/model.pt" ] || { echo "$0: training ended without $expdir/model.pt, see $expdir/log/train.log" >&2; exit 1; }
stamp_write "$expdir/.done" "$sig" --records "$records"
log "$expdir: training finished: $(grep -h "training finished\|already finished" "$expdir/log/train.log" | tail -n 1 | sed 's/.*INFO: //')"
