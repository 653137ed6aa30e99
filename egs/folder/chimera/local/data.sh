#!/usr/bin/env bash
# Data preparation of egs/folder/chimera (stage 0 of run.sh): a corpus laid out as one folder per
# song -> <data-root>/train, <data-root>/valid, <data-root>/test (Kaldi-style data dirs, docs/data.md).
# Usage: local/data.sh [options] <data-root>
#   Runs local/prepare_folder.py (sepkit.data.corpora.folder) with the options below: an empty one
#   takes its value from --corpus_conf, else the default (local/prepare_folder.py --help), then
#   checks every set made with utils/validate_data_dir.sh. Skipped when <data-root>/.prepare_folder.done
#   names the same description and the same song files (names, sizes, times); --overwrite true redoes it.
corpus_conf=      # YAML description (keys: the options below)
corpus_dir=       # root of the corpus
train_dir=        # folder of the training songs (relative to corpus_dir)
valid_dir=        # folder of the validation songs
test_dir=         # folder of the test songs
valid_fraction=   # share of the training songs held out for validation
test_fraction=    # share of the training songs held out for testing
seed=             # seed of the held-out choice
songs=            # glob of the song folders
mixture=          # mixture file (name or glob) or sum
sources=          # "NAME=FILE[,FILE...] ..."
exclude=          # globs of files never used
bad_songs=        # fatal or skip
length_policy=    # error, trim or pad
overwrite=false   # redo even if done
. utils/parse_options.sh
set -euo pipefail
. utils/lib.sh

if [ $# -ne 1 ]; then
  echo "Usage: $0 [options] <data-root>   (options: $0 --help)" >&2
  exit 1
fi
data=$1
opts=(--corpus_conf "$corpus_conf")
for key in corpus_dir train_dir valid_dir test_dir valid_fraction test_fraction seed songs mixture sources \
    exclude bad_songs length_policy; do
  opts+=("--$key" "${!key}")
done
[ -z "$corpus_conf" ] || [ -f "$corpus_conf" ] || { echo "$0: --corpus_conf $corpus_conf not found" >&2; exit 1; }
sig=$(python local/prepare_folder.py "${opts[@]}" --fingerprint "$data")  # a bad description fails here
marker=$data/.prepare_folder.done
if ! $overwrite && { [ -f "$data/train/wav.scp" ] || [ -f "$data/test/wav.scp" ]; } && stamp_ok "$marker" "$sig"; then
  log "$data: these songs are already prepared, skipping (--overwrite true to redo)"
  exit 0
fi
ow=
if $overwrite || [ -e "$marker" ]; then ow=--overwrite; fi  # sets made by an earlier run are ours to replace
mkdir -p "$data"
stamp_write "$marker" "pending"  # a run cut short leaves this: the next one replaces its sets
python local/prepare_folder.py "${opts[@]}" $ow "$data" > "$data/.prepare_folder.sets"
while IFS= read -r dir; do
  utils/validate_data_dir.sh "$dir"
done < "$data/.prepare_folder.sets"
stamp_write "$marker" "$sig"
