#!/usr/bin/env bash
# make demo: the whole toolkit on a small synthetic corpus, on the CPU, in minutes.
#   1. writes a synthetic DSD100 (egs/dsd100/chimera/downloads/DSD100-synth) and a synthetic
#      iKala (egs/ikala/eval/downloads/iKala-synth) in their official layouts
#      (python -m sepkit.bin.make_synthetic_corpus);
#   2. runs egs/dsd100/chimera/run.sh end to end (data prep, DSD100-remix, features, training with
#      conf/tuning/train_chimera_tiny.yaml, separation with both heads, scoring);
#   3. runs egs/ikala/eval/run.sh with that model (the paper's mismatched evaluation);
#   4. prints the results table of both recipes (SI-SDRi, GNSDR/GSIR/GSAR in dB).
# Everything is written inside the two recipe dirs (downloads/, data/, dump/, exp/), as a normal
# run would; running it again skips what is done. Needs tools/venv (make venv / tools/install.sh).
#
# Usage: utils/demo.sh [options]     (from the repository root, or anywhere)
nj=2                  # parallel jobs (CPU cores to use)
threads=1             # torch threads per process: 1 is robust on a busy machine (2 threads on 2 busy cores can
                      # be 10x slower); on an idle machine 2 makes training ~1.5x faster
dev_songs=20          # synthetic DSD100 Dev songs (training + validation material)
test_songs=4          # synthetic DSD100 Test songs (one test piece each)
song_seconds=20       # length of each synthetic DSD100 song
ikala_songs=4         # synthetic iKala clips
ikala_seconds=20      # length of each synthetic iKala clip
train_hours=0.15      # DSD100-remix training mixtures
valid_hours=0.03      # DSD100-remix validation mixtures
test_seconds=10       # DSD100-remix test piece per song
train_config=conf/tuning/train_chimera_tiny.yaml  # training config of egs/dsd100/chimera
train_args=           # more options of python -m sepkit.bin.train, e.g. "--epochs 5"
seed=1                # seed of the synthetic corpora
. "$(dirname "$0")/parse_options.sh"
set -euo pipefail
. "$(dirname "$0")/lib.sh"

start=$(date +%s)
root=$(cd "$(dirname "$0")/.." && pwd)
dsd=$root/egs/dsd100/chimera
ikala=$root/egs/ikala/eval
if [ ! -x "$root/tools/venv/bin/python" ]; then
  echo "$0: $root/tools/venv is missing: run 'make demo' (or tools/install.sh first)" >&2
  exit 1
fi
python=$root/tools/venv/bin/python
export OMP_NUM_THREADS=$threads

# Synthetic corpora, each generated once (a marker names the options it was made with).
make_corpus() {  # <root> <signature> <options of make_synthetic_corpus...>
  local dir=$1 sig=$2
  shift 2
  if stamp_ok "$dir.done" "$sig"; then
    log "$dir: synthetic corpus already made, skipping"
    return 0
  fi
  rm -rf "$dir"
  log "writing the synthetic corpus $dir"
  "$python" -m sepkit.bin.make_synthetic_corpus --no-progress "$@" "$dir"
  stamp_write "$dir.done" "$sig"
}
make_corpus "$dsd/downloads/DSD100-synth" "dsd100 $dev_songs $test_songs $song_seconds $seed" \
  --layout dsd100 --num-songs "$dev_songs" --num-test-songs "$test_songs" --duration "$song_seconds" --seed "$seed"
make_corpus "$ikala/downloads/iKala-synth" "ikala $ikala_songs $ikala_seconds $((seed + 1000))" \
  --layout ikala --num-songs "$ikala_songs" --duration "$ikala_seconds" --seed "$((seed + 1000))"

tag=$(basename "$train_config" .yaml)
log "egs/dsd100/chimera: DSD100-remix, training $train_config, separation, scoring"
(cd "$dsd" && ./run.sh --dsd100 downloads/DSD100-synth --train_config "$train_config" --nj "$nj" \
  --train_hours "$train_hours" --valid_hours "$valid_hours" --test_seconds "$test_seconds" \
  --train_args "$train_args")
log "egs/ikala/eval: separating the synthetic iKala with exp/$tag of egs/dsd100/chimera"
(cd "$ikala" && ./run.sh --ikala downloads/iKala-synth --model_dir "../../dsd100/chimera/exp/$tag" --nj "$nj")

echo
echo "Results of make demo (synthetic songs; all in dB; SI-SDRi = the paper's Tables 2-4 metric):"
"$python" -m sepkit.bin.show_results --out '' "$dsd/exp" "$ikala/exp"
echo
echo "Tables: egs/dsd100/chimera/exp/RESULTS.md, egs/ikala/eval/exp/RESULTS.md; per-file scores:"
echo "  egs/*/*/exp/<tag>/score_<set>_<head>/per_utt.csv; separated audio: exp/<tag>/separate_<set>_<head>/wav/"
echo "make demo took $(( $(date +%s) - start )) s"
