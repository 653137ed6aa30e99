#!/usr/bin/env bash
# Prepare the data dirs of a corpus in its official layout, validate them, and mark them done.
# Usage: utils/prepare_data.sh [options] <corpus-root> <data-root> <set> [<set> ...]
#   e.g. utils/prepare_data.sh --corpus dsd100 /db/DSD100 data dsd100_dev dsd100_test
#   Runs `python -m sepkit.bin.prepare_data --corpus <corpus> <corpus-root> <data-root>` and checks
#   that it made every <data-root>/<set> (a valid data dir, utils/validate_data_dir.sh).
#   Skipped when <data-root>/.prepare_<corpus><marker-suffix>.done says the same corpus root and options
#   were prepared and the sets are still valid; --overwrite true redoes it. Two settings whose sets
#   differ (egs/musdb18/chimera --stems 2 and 4) keep a marker each with --marker-suffix.
corpus=           # corpus layout: dsd100, folder, ikala, mir1k, musdb18 (see python -m sepkit.bin.prepare_data -h)
prepare_opts=     # extra options of sepkit.bin.prepare_data (e.g. "--valid-fraction 0.1")
marker_suffix=    # appended to the marker's name (e.g. _4stems): one marker per setting that makes other sets
overwrite=false   # redo even if done
. "$(dirname "$0")/parse_options.sh"
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ $# -lt 3 ]; then
  echo "Usage: $0 [--corpus NAME] [--prepare-opts OPTS] [--overwrite false] <corpus-root> <data-root> <set>..." >&2
  exit 1
fi
[ -n "$corpus" ] || { echo "$0: --corpus is required" >&2; exit 1; }
root=$1 data=$2
shift 2
sets=("$@")
utils=$(dirname "$0")

if [ ! -d "$root" ]; then
  echo "$0: corpus root '$root' is not a directory (give the $corpus corpus in its official layout)" >&2
  exit 1
fi
sig="corpus=$corpus root=$(cd "$root" && pwd) opts=$prepare_opts"
case "$marker_suffix" in */*) echo "$0: --marker-suffix '$marker_suffix' holds a /" >&2; exit 1 ;; esac
marker=$data/.prepare_${corpus}${marker_suffix}.done

valid=true
for x in "${sets[@]}"; do
  [ -f "$data/$x/wav.scp" ] || valid=false
done
if ! $overwrite && $valid && stamp_ok "$marker" "$sig"; then
  log "$data/{$(IFS=,; echo "${sets[*]}")} already prepared from $root, skipping (--overwrite true to redo)"
  exit 0
fi

sepkit_python
ow=
if $overwrite || [ -e "$marker" ] || $valid; then
  ow=--overwrite  # redo: options or corpus changed, or explicitly asked for
fi
stamp_clear "$marker"
mkdir -p "$data"
# shellcheck disable=SC2086
$python -m sepkit.bin.prepare_data --corpus "$corpus" $prepare_opts $ow "$root" "$data"
for x in "${sets[@]}"; do
  if [ ! -d "$data/$x" ]; then
    echo "$0: sepkit.bin.prepare_data --corpus $corpus did not make $data/$x" >&2
    exit 1
  fi
  "$utils/validate_data_dir.sh" "$data/$x"
done
stamp_write "$marker" "$sig"
log "prepared $(for x in "${sets[@]}"; do printf '%s/%s (%s utts) ' "$data" "$x" "$(wc -l < "$data/$x/wav.scp")"; done)"
