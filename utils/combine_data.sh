#!/usr/bin/env bash
# Combine data dirs with the same sources into one (Kaldi's combine_data.sh for separation data dirs).
# Usage: utils/combine_data.sh <out-dir> <data-dir> <data-dir> [<data-dir> ...]
#   e.g. utils/combine_data.sh data/mir1k_train_aug2h data/mir1k_train data/mir1k_train_remix2h
#   Every input must list the same sources in the same order and the utterance ids must not repeat
#   across the inputs. The files are sorted in C order; <out-dir> is replaced when it exists.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "Usage: $0 <out-dir> <data-dir> <data-dir> [<data-dir> ...]" >&2
  exit 1
fi
out=$1
shift
first=$1
for d in "$@"; do
  [ -f "$d/wav.scp" ] && [ -f "$d/sources" ] && [ -f "$d/utt2dur" ] \
    || { echo "$0: $d is not a data dir (wav.scp, sources, utt2dur)" >&2; exit 1; }
  cmp -s "$first/sources" "$d/sources" \
    || { echo "$0: $d/sources differs from $first/sources" >&2; exit 1; }
done
mapfile -t sources < "$first/sources"
tmp=$(mktemp -d "${out%/}.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for f in wav.scp utt2dur "${sources[@]/%/.scp}"; do
  for d in "$@"; do cat "$d/$f"; done | LC_ALL=C sort -k1,1 > "$tmp/$f"
done
dup=$(cut -d' ' -f1 "$tmp/wav.scp" | uniq -d | sed -n 1p)
[ -z "$dup" ] || { echo "$0: utterance id '$dup' is in more than one input" >&2; exit 1; }
cp "$first/sources" "$tmp/sources"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$0: combined $* -> $out ($(wc -l < "$out/wav.scp") utterances)" >&2
