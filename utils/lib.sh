# Shared helpers of the utils/*.sh stage scripts. Source it: . "$(dirname "$0")/lib.sh"
#
#   log MSG...                      "<date> (<script>:<line>) MSG" on stderr, like ESPnet's log
#   sepkit_python                   sets $python: `python` when it imports sepkit (path.sh has
#                                   activated tools/venv), else tools/venv/bin/python
#   stamp_ok MARKER SIG [INPUT...]  true when MARKER exists, its first line is SIG and every INPUT
#                                   is what it was when MARKER was written: a file of the same size
#                                   and modification time (ns), a data dir (a folder with wav.scp)
#                                   or a dump (mix.scp) of the same fingerprint (python -m sepkit.data.fingerprint: its
#                                   scp files and the size and time of its audio). An INPUT that
#                                   MARKER has no record of (a marker of an older sepkit) must not be
#                                   newer than MARKER.
#   stamp_write MARKER SIG [INPUT...]  write MARKER (atomically): SIG, then one record per INPUT
#   stamp_write MARKER SIG --records TEXT   the same with records taken before the stage ran
#                                   (input_records): an input changed while it ran stays stale
#   input_records INPUT...          those records ("input <path> <size> <mtime ns>",
#                                   "input <dir> data:<fingerprint>" or, for a feature dump (a folder
#                                   with mix.scp), "input <dir> dump:<fingerprint>"), one a line
#   lock_recipe_dir                 (egs/*/run.sh, at start) hold exp/.run.lock of the recipe dir
#                                   (the current dir) with flock for as long as the run lives, or
#                                   refuse with one line naming the folder and the pid holding it
#   stamp_clear MARKER              remove MARKER (before redoing the work it stands for)
#   move_aside PATH                 rename PATH to PATH.old.<YYYYmmdd-HHMMSS> (a free name; in
#                                   $moved_to) and log it
#   repoint_scps DIR FROM...        in DIR/*.scp, make values that start with FROM/ start with DIR/
#                                   (a moved-aside result keeps reading its own files)
#   refuse_overwrite PATH WHY       "<script>: PATH: WHY; ... --overwrite true ..." on stderr, exit 1
#
# A stage's marker is written only after all its outputs are complete, so an interrupted stage
# is redone (or resumed) on the next run instead of being taken for finished.
#
# The rule of the stage scripts for what exists at an output path (docs/recipes.md): a result that
# is up to date is skipped; an interrupted one of the stage's own making is resumed or redone; any
# other (made from other inputs or settings, or not made by the stage) is never removed or
# replaced: the stage refuses with refuse_overwrite, and with --overwrite true it is kept aside
# with move_aside (logged) before the stage redoes the work. Nothing is deleted.

log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}) $*" >&2
}

sepkit_python() {
  python=python
  if ! python -c "import sepkit" >/dev/null 2>&1; then
    local root
    root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
    if [ -x "$root/tools/venv/bin/python" ]; then
      python="$root/tools/venv/bin/python"
    else
      echo "${0##*/}: no python that imports sepkit (run tools/install.sh, then . ./path.sh)" >&2
      exit 1
    fi
  fi
}

input_records() {
  local input fp
  for input in "$@"; do
    if [ -d "$input" ] && [ -f "$input/wav.scp" ]; then
      [ -n "${python:-}" ] || sepkit_python
      fp=$("$python" -m sepkit.data.fingerprint data "$input") || exit 1
      printf 'input %s data:%s\n' "$input" "$fp"
    elif [ -d "$input" ] && [ -f "$input/mix.scp" ]; then
      [ -n "${python:-}" ] || sepkit_python
      fp=$("$python" -m sepkit.data.fingerprint dump "$input") || exit 1
      printf 'input %s dump:%s\n' "$input" "$fp"
    elif [ -e "$input" ]; then
      printf 'input %s %s\n' "$input" "$(stat -c '%s %.9Y' -- "$input" | tr -d .)"
    else
      printf 'input %s missing\n' "$input"
    fi
  done
}

stamp_ok() {
  local marker=$1 sig=$2 first input recorded now
  shift 2
  [ -f "$marker" ] || return 1
  IFS= read -r first < "$marker" || true
  [ "$first" = "$sig" ] || return 1
  for input in "$@"; do
    recorded=$(awk -v p="input $input " 'index($0, p) == 1' "$marker")
    if [ -n "$recorded" ]; then
      now=$(input_records "$input") || return 1
      [ "$now" = "$recorded" ] || return 1
    elif [ -e "$input" ] && [ "$input" -nt "$marker" ]; then
      return 1
    fi
  done
  return 0
}

stamp_write() {
  local marker=$1 sig=$2 records
  shift 2
  if [ "${1:-}" = --records ]; then
    records=$2
  else
    records=$(input_records "$@") || exit 1
  fi
  mkdir -p "$(dirname "$marker")"
  { printf '%s\n# written %s by %s\n' "$sig" "$(date '+%Y-%m-%dT%H:%M:%S')" "${0##*/}"
    [ -z "$records" ] || printf '%s\n' "$records"; } > "$marker.tmp.$$"
  mv -f "$marker.tmp.$$" "$marker"
}

lock_recipe_dir() {
  local lock=exp/.run.lock holder
  command -v flock >/dev/null || { log "no flock command: not guarding $(pwd) against a second run"; return 0; }
  mkdir -p exp
  exec 9<>"$lock"  # no truncation: the pid of a run that holds it stays readable
  if ! flock -n 9; then
    holder=$(head -c 20 "$lock" | tr -cd '0-9')
    echo "${0##*/}: $(pwd): another run of this recipe holds it (pid ${holder:-unknown}, lock $lock); wait for it to end, or run a copy of the recipe in another folder" >&2
    exit 1
  fi
  : > "$lock"
  echo "$$" >&9
}

stamp_clear() {
  rm -f "$1"
}

move_aside() {
  local path=${1%/} stamp old n=1
  stamp=$(date '+%Y%m%d-%H%M%S')
  old=$path.old.$stamp
  while [ -e "$old" ] || [ -L "$old" ]; do
    old=$path.old.$stamp.$n
    n=$((n + 1))
  done
  mv -- "$path" "$old"
  moved_to=$old
  echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}) --overwrite: moved $path aside to $old (remove it when no longer needed)" >&2
}

refuse_overwrite() {
  echo "${0##*/}: $1: $2; not replacing it without --overwrite true (which moves it aside to $1.old.<time>)" >&2
  exit 1
}

repoint_scps() {
  local dir=$1 from f
  shift
  for f in "$dir"/*.scp; do
    [ -f "$f" ] || continue
    for from in "$@"; do
      awk -v a="${from%/}/" -v b="${dir%/}/" '{
        k = index($0, " ")
        if (k && substr($0, k + 1, length(a)) == a) $0 = substr($0, 1, k) b substr($0, k + 1 + length(a))
        print
      }' "$f" > "$f.tmp.$$" && mv -f "$f.tmp.$$" "$f"
    done
  done
}
