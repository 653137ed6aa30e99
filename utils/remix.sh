#!/usr/bin/env bash
# Build remixed sets (DSD100-remix, paper section 3.1) from a prepared data dir, validate them, mark them done.
# Usage: utils/remix.sh [options] <src-data-dir> <data-root> <set> [<set> ...]
#   e.g. utils/remix.sh --mode train --remix-opts "--hours 15 --valid-hours 0.5" \
#            data/dsd100_dev data train_remix valid_remix
#        utils/remix.sh --mode test data/dsd100_test data test_remix
#   Runs `python -m sepkit.bin.remix --mode <mode> <remix-opts> <src-data-dir> <data-root>`; the
#   <set>s are the data dirs it is expected to write (named by --train-name/--valid-name/--test-name
#   in remix-opts, default train_remix, valid_remix, test_remix). Skipped when its marker
#   <data-root>/.remix_<mode>_<src>.done has the same source and options and records the same
#   <src-data-dir> (its scp files and the size and time of its audio); --overwrite true redoes it.
mode=train        # train (training + validation sets) or test (one piece per song)
remix_opts=       # options of sepkit.bin.remix (see python -m sepkit.bin.remix -h)
overwrite=false   # redo even if done
. "$(dirname "$0")/parse_options.sh"
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ $# -lt 3 ]; then
  echo "Usage: $0 [--mode train|test] [--remix-opts OPTS] [--overwrite false] <src-data-dir> <data-root> <set>..." >&2
  exit 1
fi
src=$1 data=$2
shift 2
sets=("$@")
utils=$(dirname "$0")

[ -f "$src/wav.scp" ] || { echo "$0: $src/wav.scp not found (run the data preparation stage first)" >&2; exit 1; }
sig="mode=$mode src=$(cd "$src" && pwd) opts=$remix_opts"
marker=$data/.remix_${mode}_$(basename "$src").done
complete=true
for x in "${sets[@]}"; do
  [ -f "$data/$x/wav.scp" ] || complete=false
done
if ! $overwrite && $complete && stamp_ok "$marker" "$sig" "$src"; then
  log "$data/{$(IFS=,; echo "${sets[*]}")} already made from $src, skipping (--overwrite true to redo)"
  exit 0
fi
if [ -e "$marker" ] && ! $overwrite; then
  log "options or $src changed since $marker was written: remaking $(IFS=' '; echo "${sets[*]}")"
fi

sepkit_python
stamp_clear "$marker"
records=$(input_records "$src")  # what the remix reads, as it is before
# --overwrite is safe here: sepkit.bin.remix builds each set aside and swaps it in when complete.
# shellcheck disable=SC2086
$python -m sepkit.bin.remix --mode "$mode" $remix_opts --overwrite "$src" "$data"
for x in "${sets[@]}"; do
  [ -d "$data/$x" ] || { echo "$0: sepkit.bin.remix did not make $data/$x (check --*-name options)" >&2; exit 1; }
  "$utils/validate_data_dir.sh" "$data/$x"
done
stamp_write "$marker" "$sig" --records "$records"
