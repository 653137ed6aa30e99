#!/usr/bin/env bash
# Create a new recipe egs/<corpus>/<system>/ from egs/TEMPLATE.
# Usage: utils/new_recipe.sh <corpus> [<system>]          (<system> defaults to chimera)
#   e.g. utils/new_recipe.sh ccmixter               -> egs/ccmixter/chimera/
# The new recipe has run.sh (stages 0-5), cmd.sh, path.sh, conf/ (features, training configs),
# utils -> ../../../utils, and the data preparation local/: the only part to write is
# local/songs.py (its find_songs() says which files make each song of each set); local/data.sh and
# local/data.py do the rest (or replace local/data.sh by any program that writes data/{train,valid,test}).
# Stages 1-5 call the shared utils/*.sh scripts, like every recipe, so a fix to a stage reaches them all.
# An existing directory is never touched. Nothing else to regenerate: docs/config.md documents the
# recipes shipped with sepkit and egs/TEMPLATE (whose options a new recipe has), not whichever recipes
# exist, so the test suite passes with the new recipe in place. See docs/new_dataset.md.
set -euo pipefail

if [ $# -ge 1 ] && { [ "$1" = --help ] || [ "$1" = -h ]; }; then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
  exit 0
fi
if [ $# -lt 1 ] || [ $# -gt 2 ] || [[ "$1" == -* ]]; then
  echo "Usage: $0 <corpus> [<system>]   (creates egs/<corpus>/<system>/ from egs/TEMPLATE; --help)" >&2
  exit 1
fi
corpus=$1 system=${2:-chimera}
for name in "$corpus" "$system"; do
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] \
    || { echo "$0: '$name' is not a valid recipe name (letters, digits, '_', '.', '-')" >&2; exit 1; }
done
[ "$corpus" != TEMPLATE ] || { echo "$0: TEMPLATE is the template itself" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)  # logical path: a checkout whose utils/ is a link works too
template=$root/egs/TEMPLATE
dest=$root/egs/$corpus/$system
[ -f "$template/run.sh" ] || { echo "$0: $template/run.sh not found" >&2; exit 1; }
if [ -e "$dest" ] || [ -L "$dest" ]; then
  echo "$0: $dest already exists; not touching it" >&2
  exit 1
fi

tmp=$(mktemp -d "$root/egs/.new_recipe.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -R "$template/." "$tmp/"
rm -f "$tmp/README.md"  # describes the template, not the new recipe
while IFS= read -r -d '' f; do
  sed -i -e "s|@CORPUS@|$corpus|g" -e "s|@SYSTEM@|$system|g" "$f"
done < <(find "$tmp" -type f -print0)
ln -s ../../../utils "$tmp/utils"
mkdir -p "$(dirname "$dest")"
mv "$tmp" "$dest"
trap - EXIT
chmod 755 "$dest"

echo "created egs/$corpus/$system/ from egs/TEMPLATE. Next:"
echo "  1. write the data preparation: find_songs() in egs/$corpus/$system/local/songs.py"
echo "     (or replace local/data.sh; its only contract: write data/train, data/valid, data/test)"
echo "  2. cd egs/$corpus/$system && ./run.sh --corpus_dir /path/to/$corpus"
