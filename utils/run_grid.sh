#!/usr/bin/env bash
# Run a grid of experiments through a recipe: every system x every seed is trained, separated and scored
# by the recipe's own run.sh (same data, same budget, same stages), then compared over seeds
# (python -m sepkit.bin.compare: means, spread, intervals, paired claims, a plot).
# Usage (in a recipe dir): utils/run_grid.sh [options] <grid> <system> [<system> ...]
#   <system> = "NAME=CONFIG [training overrides]": a conf/tuning YAML file and, optionally, options of
#              python -m sepkit.bin.train that override it, e.g.
#   utils/run_grid.sh --seeds "0 1 2" --run_opts "--stage 3" --compare_opts '--pair "CHI-MI > MI"' table2 \
#     "MI=conf/tuning/train_mi.yaml" "CHI=conf/tuning/train_chimera_cpu.yaml" \
#     "CHI_0.5=conf/tuning/train_chimera_cpu.yaml --alpha 0.5"
# Each run is ./run.sh <run_opts> --tag <grid>/<NAME>/seed<S> --train_config CONFIG
#   --train_args "<train_args> <overrides> --seed S" --head <head> --nj <nj>, so it writes exp/<grid>/<NAME>/seed<S>/
#   (and exp/<grid>/<NAME>/seed<S>_avg<N>/ with a recipe's --average_last). The seed is the training seed only
#   (initial weights, order of the training segments and their offsets, dropout); the recipe's own --seed (data
#   split, remixes) stays as run_opts says, the same for every run. --extra_sets: more data dirs (e.g. mismatched
#   test sets) that every run separates and scores with utils/separate.sh and utils/score.sh.
# Writes exp/<grid>/runs.tsv (system, seed, decode_dir, seconds, config, overrides), exp/<grid>/COMPARE.md and
# exp/<grid>/compare.png. A run is done when its marker exp/<grid>/.runs/<NAME>.seed<S>.done (written last, once
# the run is scored) says the same config (contents), overrides and options, and every output it lists (the
# models, the scores' per_utt.csv) is still there unchanged; a done run is skipped, any other run (interrupted,
# or whose folder or scores were removed or changed since) is run again (an interrupted grid goes on where it
# stopped; the recipe's stages skip their own finished work, e.g. data and features). --overwrite true moves
# every run's exp dirs aside (exp/<grid>/<NAME>/seed<S>.old.<time>: nothing is deleted) and runs it again.
seeds="0 1 2"     # training seeds of every system
run=./run.sh      # the recipe's run script
run_opts=         # options of every run (corpus paths, --stage, --average_last, ...)
train_args=       # training overrides of every system (before the system's own)
head=both         # head(s) separated and scored: mi, dc or both
nj=2              # parallel jobs of each run's stages
extra_sets=       # more data dirs separated and scored by every run, e.g. "data/musdb18_7s data/ikala_sample"
separate_opts=    # options of sepkit.bin.separate_data for --extra_sets, e.g. "--segment-frames 2000"
score_bss=true    # BSS eval v3 (GNSDR) for --extra_sets too; false = SI-SDRi only
compare_opts=     # options of python -m sepkit.bin.compare, e.g. '--metrics si_sdri,gnsdr --pair "A > B"'
overwrite=false   # move the runs' exp dirs aside (DIR.old.TIME, not deleted) and run them again (data and features are kept)
. "$(dirname "$0")/parse_options.sh"
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ $# -lt 2 ]; then
  echo "Usage: $0 [--seeds \"0 1 2\"] [--run_opts OPTS] [--compare_opts OPTS] <grid> \"NAME=CONFIG [overrides]\"..." >&2
  exit 1
fi
grid=$1
shift
utils=$(dirname "$0")
die() { echo "${0##*/}: $*" >&2; exit 1; }
[[ "$grid" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "grid name '$grid': use letters, digits, '_', '.', '-'"
[ -x "$run" ] || die "no executable $run here ($(pwd)): run the grid from a recipe dir, or pass --run"
for s in $seeds; do [[ "$s" =~ ^[0-9]+$ ]] || die "--seeds: '$s' is not a non-negative integer"; done
[ -n "${seeds// /}" ] || die "--seeds is empty"
names=() configs=() overrides=()
for spec in "$@"; do
  read -r first rest <<< "$spec"
  name=${first%%=*} config=${first#*=}
  [[ "$first" == *=* && "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.+-]*$ ]] \
    || die "system '$spec': expected NAME=CONFIG [overrides], NAME of letters, digits, '_', '.', '+', '-'"
  [ -f "$config" ] || die "system $name: training config $config not found"
  for n in ${names[@]+"${names[@]}"}; do [ "$n" != "$name" ] || die "system $name is given twice"; done
  names+=("$name") configs+=("$config") overrides+=("$rest")
done
[ -f ./cmd.sh ] && . ./cmd.sh
decode_cmd=${decode_cmd:-utils/run.py}
griddir=exp/$grid
mkdir -p "$griddir/.runs"

run_dirs() {  # the exp dirs of run <tag>: exp/<tag> and its averaged models exp/<tag>_avg<N> (not <dir>.old.<time>)
  local d
  for d in "exp/$1" "exp/$1_avg"*; do
    [[ "$d" == "exp/$1" || "$d" =~ _avg[0-9]+$ ]] && [ -d "$d" ] && echo "$d"
  done
  return 0
}

decode_dir_of() {  # the dir run.sh separated with: exp/<tag>_avg<N> when it averaged checkpoints, else exp/<tag>
  local tag=$1 found=() d
  while IFS= read -r d; do
    [ "$d" != "exp/$tag" ] && [ -f "$d/model.pt" ] && found+=("$d")
  done < <(run_dirs "$tag")
  [ ${#found[@]} -le 1 ] || die "exp/$tag has several averaged models (${found[*]}): remove the stale one"
  if [ ${#found[@]} -eq 1 ]; then echo "${found[0]}"; else echo "exp/$tag"; fi
}

run_outputs() {  # run_outputs TAG DECODE_DIR: "output <md5>  <file>" of a scored run's models and scores
  md5sum "exp/$1/model.pt" "$2/model.pt" "$2"/score_*/per_utt.csv | sort -u -k2 | sed 's/^/output /'
}

changed_output() {  # changed_output MARKER: the first output listed in MARKER that is missing or changed, or nothing
  { sed -n 's/^output //p' "$1" | md5sum -c 2>/dev/null || true; } | sed -n 's/: FAILED.*$//p' | sed -n 1p
}

manifest=$(mktemp "$griddir/runs.tsv.XXXXXX")
trap 'rm -f "$manifest"' EXIT
chmod "$(printf '%04o' $(( 0666 & ~0$(umask) )))" "$manifest"  # mktemp makes it 0600; the table follows the umask
printf 'system\tseed\tdecode_dir\tseconds\tconfig\toverrides\n' > "$manifest"
total=$(( ${#names[@]} * $(wc -w <<< "$seeds") )) k=0
for i in "${!names[@]}"; do
  name=${names[$i]} config=${configs[$i]} over=${overrides[$i]}
  for seed in $seeds; do
    k=$((k + 1))
    tag=$grid/$name/seed$seed
    marker=$griddir/.runs/$name.seed$seed.done
    sig="config=$(md5sum < "$config" | cut -d' ' -f1) over=$over train_args=$train_args run_opts=$run_opts head=$head extra=$extra_sets separate_opts=$separate_opts bss=$score_bss"
    done=false
    if ! $overwrite && stamp_ok "$marker" "$sig" "$config"; then
      changed=$(changed_output "$marker")
      if ! grep -q '^output ' "$marker"; then
        log "run $k/$total: $name seed $seed: $marker lists no outputs (an older grid): running it again"
      elif [ -n "$changed" ]; then
        log "run $k/$total: $name seed $seed: $changed is missing or changed since the run was done: running it again"
      else
        done=true
      fi
    fi
    if $done; then
      log "run $k/$total: $name seed $seed already done ($marker), skipping (--overwrite true to redo)"
    else
      stamp_clear "$marker"
      if $overwrite; then
        while IFS= read -r d; do
          move_aside "$d"  # training, separations, scores: kept, not deleted
          for sep in "$moved_to"/separate_*/; do
            [ -d "$sep" ] && repoint_scps "$sep" "$d/$(basename "$sep")"  # the moved separations stay readable
          done
        done < <(run_dirs "$tag")
      fi
      log "run $k/$total: $name seed $seed: $run --tag $tag --train_config $config --train_args \"$train_args $over --seed $seed\""
      start=$(date +%s)
      # shellcheck disable=SC2086
      "$run" $run_opts --tag "$tag" --train_config "$config" --train_args "$train_args $over --seed $seed" \
        --head "$head" --nj "$nj" \
        || die "run $name seed $seed failed (./run.sh ... --tag $tag); fix it and run the grid again (done runs are kept)"
      ddir=$(decode_dir_of "$tag")
      for data in $extra_sets; do
        "$utils/separate.sh" --nj "$nj" --cmd "$decode_cmd" --head "$head" --separate-opts "$separate_opts" \
          "$ddir" "$data" "$ddir"
        "$utils/score.sh" --nj "$nj" --cmd "$decode_cmd" --head "$head" --bss "$score_bss" "$data" "$ddir"
      done
      ls "$ddir"/score_*/per_utt.csv > /dev/null 2>&1 || die "run $name seed $seed made no scores in $ddir"
      [ -f "exp/$tag/model.pt" ] && [ -f "$ddir/model.pt" ] || die "run $name seed $seed made no model in exp/$tag"
      # the marker, written last (whole, then renamed): the run's options, its time and its outputs' checksums
      stamp_write "$marker.new" "$sig"
      { echo "seconds=$(( $(date +%s) - start )) decode_dir=$ddir"; run_outputs "$tag" "$ddir"; } >> "$marker.new"
      mv -f "$marker.new" "$marker"
    fi
    ddir=$(sed -n 's/^seconds=[0-9]* decode_dir=//p' "$marker")
    secs=$(sed -n 's/^seconds=\([0-9]*\) .*/\1/p' "$marker")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$seed" "${ddir#"$griddir"/}" "$secs" "$config" "$over" >> "$manifest"
  done
done
mv -f "$manifest" "$griddir/runs.tsv"
trap - EXIT
log "grid $grid: $total runs done; exp/$grid/runs.tsv; comparing"
sepkit_python
eval "copts=($compare_opts)" || die "--compare_opts: not valid shell words: $compare_opts"
"$python" -m sepkit.bin.compare --title "Grid $grid: ${names[*]} x seeds $seeds" --out "$griddir/COMPARE.md" \
  --plot "$griddir/compare.png" ${copts[@]+"${copts[@]}"} "$griddir"
log "wrote $griddir/COMPARE.md and $griddir/compare.png"
