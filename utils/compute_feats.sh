#!/usr/bin/env bash
# Compute the feature dump of a data dir in parallel jobs (Kaldi style).
# Usage: utils/compute_feats.sh [options] --feat-conf conf/feats.yaml <data-dir> <dump-dir>
#   e.g. utils/compute_feats.sh --nj 4 --cmd "$train_cmd" --feat-conf conf/feats.yaml data/train dump/mel150/train
# Splits wav.scp into nj parts (balanced by utt2dur), runs one `python -m sepkit.bin.compute_feats`
# job per part through $cmd (logs in <dump-dir>/log/compute_feats.JOB.log), then joins the parts
# into <dump-dir>/{mix.scp,<source>.scp,utt2num_frames,sources,feat_conf.yaml}.
# The dump dir is claimed first (<dump-dir>/.sepkit_dump, which records the data dir and the
# fingerprint of its scp files and audio): a folder that holds files sepkit did not make is refused,
# and in its own dump dir sepkit removes or replaces only the files it writes. A complete dump of the
# same utterances, feature settings and inputs is left alone ("already done, skipping"); one of the
# same data dir whose audio changed since is recomputed; an interrupted one is redone; any other
# finished dump there (other feature settings, utterances or data dir) is refused unless
# --overwrite true, which moves it aside to <dump-dir>.old.<time>. A full disk ends in one line.
# Interrupting this script (Ctrl-C, kill of its process group, SIGKILL of utils/run.py) stops the jobs.

nj=4                 # number of parallel jobs (at most the number of utterances)
cmd=utils/run.py     # job runner: utils/run.py or utils/slurm.py, with its options
feat_conf=           # YAML file of FeatureConfig keys (required)
device=cpu           # torch device of each job
num_threads=1        # torch threads per job
overwrite=false      # recompute a finished dump, moving the old one aside to <dump-dir>.old.<time>

# shellcheck disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
set -euo pipefail

prog=${0##*/}
if [ $# -ne 2 ]; then
  echo "$prog: expected <data-dir> <dump-dir> after the options (see --help)" >&2
  exit 1
fi
data=$1
dir=$2
[ -n "$feat_conf" ] || { echo "$prog: --feat-conf is required" >&2; exit 1; }
[ -f "$feat_conf" ] || { echo "$prog: $feat_conf: no such feature config" >&2; exit 1; }
[ -f "$data/wav.scp" ] || { echo "$prog: $data/wav.scp: no such file" >&2; exit 1; }
case "$nj" in ''|*[!0-9]*|0) echo "$prog: --nj must be a positive integer, got '$nj'" >&2; exit 1 ;; esac

root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
python=python3
if ! "$python" -c "import sepkit" >/dev/null 2>&1 && [ -x "$root/tools/venv/bin/python" ]; then
  python="$root/tools/venv/bin/python"
fi
if [ "$cmd" = utils/run.py ] && [ ! -x utils/run.py ]; then cmd="$root/utils/run.py"; fi
feats=("$python" -m sepkit.bin.compute_feats --feat-conf "$feat_conf")

over=()
[ "$overwrite" = true ] && over=(--overwrite)
rc=0
"${feats[@]}" --prepare ${over[@]+"${over[@]}"} "$data" "$dir" || rc=$?
if [ $rc -eq 0 ]; then
  echo "$prog: $dir: already done, skipping"
  exit 0
elif [ $rc -ne 10 ]; then
  exit $rc
fi

n_utts=$(grep -c . "$data/wav.scp" || true)
if [ "$nj" -gt "$n_utts" ]; then
  echo "$prog: $data has only $n_utts utterances, using --nj $n_utts"
  nj=$n_utts
fi
split=$dir/split$nj
mkdir -p "$split" "$dir/log"
parts=()
for n in $(seq "$nj"); do parts+=("$split/wav.$n.scp"); done
by_dur=()
[ -f "$data/utt2dur" ] && by_dur=(--utt2dur "$data/utt2dur")
"$python" "$root/utils/split_scp.py" ${by_dur[@]+"${by_dur[@]}"} "$data/wav.scp" "${parts[@]}"

echo "$prog: computing features of $data in $nj job(s), logs in $dir/log"
# shellcheck disable=SC2086  # $cmd is a command with options
if ! $cmd JOB=1:"$nj" "$dir/log/compute_feats.JOB.log" \
    "${feats[@]}" --utt-list "$split/wav.JOB.scp" --device "$device" --num-threads "$num_threads" \
    --ark-name feats.JOB "$data" "$dir"; then
  grep -h "^compute_feats: " "$dir"/log/compute_feats.*.log 2>/dev/null | head -n 3 >&2 || true
  echo "$prog: feature extraction failed for $data" >&2
  exit 1
fi

names=$(seq -s, -f "feats.%g" 1 "$nj")
"${feats[@]}" --merge "$names" "$data" "$dir"
echo "$prog: wrote $dir (mix.scp, $(tr '\n' ' ' < "$dir/sources")scp files)"
