#!/usr/bin/env bash
# Data preparation of @CORPUS@ (stage 0 of run.sh): the corpus -> Kaldi-style data dirs
#   <data-root>/train, <data-root>/valid   training and validation songs (needed to train)
#   <data-root>/test                        songs to separate and score (optional)
# each with wav.scp, <source>.scp, sources and utt2dur (docs/data.md).
# Usage: local/data.sh [--overwrite false] [--corpus_dir DIR] <data-root>
#   Runs local/data.py, which writes the songs that find_songs() of local/songs.py gives (the part
#   to write for @CORPUS@), then checks every set with utils/validate_data_dir.sh. Skipped when the
#   sets exist and <data-root>/.prepare_@CORPUS@.done names the same corpus and is newer than
#   local/songs.py and local/data.py; --overwrite true redoes it.
#   Nothing here is fixed but this interface: replace the body by any program that writes the sets.
corpus_dir=       # the corpus
overwrite=false   # redo even if done
. utils/parse_options.sh
set -euo pipefail
. utils/lib.sh

if [ $# -ne 1 ]; then
  echo "Usage: $0 [--overwrite false] [--corpus_dir DIR] <data-root>" >&2
  exit 1
fi
data=$1
[ -e "${corpus_dir}" ] || { echo "$0: corpus '${corpus_dir}' not found (run.sh --corpus_dir DIR)" >&2; exit 1; }
marker=$data/.prepare_@CORPUS@.done
sig="corpus=$(cd "${corpus_dir}" && pwd)"
if ! $overwrite && [ -f "$data/train/wav.scp" ] && stamp_ok "$marker" "$sig" local/songs.py local/data.py; then
  log "$data: @CORPUS@ already prepared from ${corpus_dir}, skipping (--overwrite true to redo)"
  exit 0
fi
ow=
if $overwrite || [ -e "$marker" ]; then ow=--overwrite; fi
stamp_write "$marker" "pending"  # a run cut short leaves this: the next run overwrites its sets
python local/data.py $ow "${corpus_dir}" "$data"
for x in train valid test; do
  [ ! -d "$data/$x" ] || utils/validate_data_dir.sh "$data/$x"
done
stamp_write "$marker" "$sig"
