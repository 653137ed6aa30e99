#!/usr/bin/env bash
# Give a MUSDB18 corpus that has no test/ split (e.g. the 7-second sample set) a test split made of
# some of its train/ tracks, as a folder of symbolic links in the official layout.
# Usage: local/holdout_test.sh <musdb-root> <count> <out-root>
#   <out-root>/train/ links the remaining tracks of <musdb-root>/train/, <out-root>/test/ the <count>
#   held-out ones: the last <count> tracks of the C-sorted list, so the choice depends only on the track
#   names (in the 7-s sample set they are by artists with no other track there: no artist is in both sets).
#   Works for both layouts (<track>.stem.mp4 files, MUSDB18-HQ <track>/ folders).
#   <out-root> is rebuilt on every call when it is one that this script made (a .sepkit_holdout marker, then
#   links only: only those links are removed); any other <out-root> that exists is refused, never deleted.
#   Prints the held-out names on stderr.
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "Usage: $0 <musdb-root> <count> <out-root>" >&2
  exit 1
fi
root=$1 count=$2 out=$3
case "$count" in ''|*[!0-9]*|0) echo "$0: <count> must be a positive integer, got '$count'" >&2; exit 1 ;; esac
[ -d "$root/train" ] || { echo "$0: $root/train: no such directory" >&2; exit 1; }
if [ -d "$root/test" ]; then
  echo "$0: $root already has a test/ split; use it instead of holding out training tracks" >&2
  exit 1
fi
root=$(cd "$root" && pwd)
mapfile -t tracks < <(cd "$root/train" && LC_ALL=C ls -1 | LC_ALL=C sort)
n=${#tracks[@]}
[ "$count" -lt "$n" ] || { echo "$0: cannot hold out $count of the $n tracks in $root/train" >&2; exit 1; }
if [ -e "$out" ] || [ -L "$out" ]; then
  # ours: a real folder with the marker, train/ and test/ of symbolic links, nothing else
  others=$(find "$out" -mindepth 1 ! -path "$out/train" ! -path "$out/test" ! -path "$out/.sepkit_holdout" \
    ! \( -type l \( -path "$out/train/*" -o -path "$out/test/*" \) \) -print -quit 2>/dev/null || echo "$out")
  if [ -L "$out" ] || [ ! -f "$out/.sepkit_holdout" ] || [ -n "$others" ]; then
    echo "$0: $out exists and is not a held-out split made by this script (${others:-no .sepkit_holdout marker}); not touching it: choose another <out-root> or move it" >&2
    exit 1
  fi
  find "$out/train" "$out/test" -mindepth 1 -maxdepth 1 -type l -delete
fi
mkdir -p "$out/train" "$out/test"
: > "$out/.sepkit_holdout"
held=0
for i in "${!tracks[@]}"; do
  t=${tracks[$i]}
  if [ "$i" -ge $((n - count)) ]; then
    ln -s "$root/train/$t" "$out/test/$t"
    held=$((held + 1))
    echo "$0: test track: $t" >&2
  else
    ln -s "$root/train/$t" "$out/train/$t"
  fi
done
echo "$0: $out: $((n - held)) train and $held test tracks (links into $root/train)" >&2
