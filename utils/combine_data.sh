#!/usr/bin/env bash
# Combine data dirs with the same sources into one (Kaldi's combine_data.sh for separation data dirs).
# Usage: utils/combine_data.sh [--overwrite false] <out-dir> <data-dir> <data-dir> [<data-dir> ...]
#   e.g. utils/combine_data.sh data/mir1k_train_aug2h data/mir1k_train data/mir1k_train_remix2h
#   Every input must list the same sources in the same order and the utterance ids must not repeat
#   across the inputs. The files are sorted in C order and written to a temporary dir renamed to
#   <out-dir> at the end. <out-dir> is left as it is when it already holds this combination; it is
#   replaced when an earlier combine_data.sh made it (its .combine_data lists every file in it);
#   anything else there is refused unless --overwrite true, which moves it aside (<out-dir>.old.<time>).
overwrite=false   # move an <out-dir> that combine_data.sh did not make aside, then write the combination
. "$(dirname "$0")/parse_options.sh"
set -euo pipefail
. "$(dirname "$0")/lib.sh"

prog=${0##*/}
if [ $# -lt 3 ]; then
  echo "Usage: $0 [--overwrite false] <out-dir> <data-dir> <data-dir> [<data-dir> ...]" >&2
  exit 1
fi
out=${1%/}
shift
first=$1
for d in "$@"; do
  [ -f "$d/wav.scp" ] && [ -f "$d/sources" ] && [ -f "$d/utt2dur" ] \
    || { echo "$prog: $d is not a data dir (wav.scp, sources, utt2dur)" >&2; exit 1; }
  cmp -s "$first/sources" "$d/sources" \
    || { echo "$prog: $d/sources differs from $first/sources" >&2; exit 1; }
done
mapfile -t sources < "$first/sources"
files=(wav.scp utt2dur "${sources[@]/%/.scp}" sources)
marker=.combine_data

# What is at <out-dir>: "" (nothing, or an empty dir), "own" (every entry is listed in its
# marker) or a reason why it is not ours.
foreign_reason() {
  local entry listed
  [ -e "$out" ] || [ -L "$out" ] || return 0
  [ -d "$out" ] && [ ! -L "$out" ] || { echo "not a directory"; return 0; }
  [ -n "$(ls -A "$out")" ] || return 0
  [ -f "$out/$marker" ] || { echo "not made by $prog (no $marker)"; return 0; }
  while IFS= read -r entry; do
    [ "$entry" = "$marker" ] && continue
    listed=false
    grep -Fxq -- "$entry" "$out/$marker" && listed=true
    $listed || { echo "holds $entry, which $prog did not write"; return 0; }
  done < <(ls -A "$out")
  echo own
}
state=$(foreign_reason)
if [ -n "$state" ] && [ "$state" != own ] && ! $overwrite; then
  refuse_overwrite "$out" "$state"
fi

tmp=$(mktemp -d "$out.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod "$(umask -S)" "$tmp"  # mktemp -d makes it 0700; a data dir follows the umask
for f in "${files[@]:0:${#files[@]}-1}"; do
  for d in "$@"; do cat "$d/$f"; done | LC_ALL=C sort -k1,1 > "$tmp/$f"
done
dup=$(cut -d' ' -f1 "$tmp/wav.scp" | uniq -d | sed -n 1p)
[ -z "$dup" ] || { echo "$prog: utterance id '$dup' is in more than one input" >&2; exit 1; }
cp "$first/sources" "$tmp/sources"
{ echo "# written by $prog from: $*"; printf '%s\n' "${files[@]}"; } > "$tmp/$marker"

n=$(wc -l < "$tmp/wav.scp")
if [ "$state" = own ]; then
  same=true
  for f in "${files[@]}"; do cmp -s "$tmp/$f" "$out/$f" || { same=false; break; }; done
  if $same; then
    echo "$prog: $out already holds this combination ($n utterances), left as it is" >&2
    exit 0
  fi
  old=$(mktemp -d "$out.replaced.XXXXXX")
  mv "$out" "$old/"
  mv "$tmp" "$out"
  rm -rf "$old"  # an earlier output of this script, nothing else (checked above)
elif [ -n "$state" ]; then
  move_aside "$out"  # --overwrite true
  mv "$tmp" "$out"
else
  [ ! -d "$out" ] || rmdir "$out"  # empty
  mv "$tmp" "$out"
fi
trap - EXIT
echo "$prog: combined $* -> $out ($n utterances)" >&2
