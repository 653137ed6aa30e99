# Command-line options for recipe scripts, Kaldi style. Source it (without arguments) after the
# recipe's variable defaults:
#
#     stage=0          # first stage to run
#     stop_stage=100
#     use_gpu=false
#     . utils/parse_options.sh
#     set -euo pipefail
#
# Then `run.sh --stop-stage 2 --use_gpu true data/x` sets stop_stage=2 and use_gpu=true, and
# leaves "data/x" in "$@".
#   --foo-bar VALUE / --foo_bar VALUE / --foo-bar=VALUE   set the existing variable foo_bar
#                       (an option whose variable is not set in the recipe is an error)
#   a variable whose current value is true or false only accepts true or false
#   --config FILE       source FILE (lines of name=value) before the other options are applied,
#                       wherever it appears on the command line; may be repeated
#   --help, -h          print the recipe's header comment and the options with their current
#                       values, then exit 0
#   --                  ends the options; option parsing also stops at the first non-option word
# Options must come before positional arguments. Variables named __po_* are reserved.

__po_die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

# Options of the recipe: variables assigned at the start of a line before parse_options.sh is
# sourced. Prints "name<TAB>comment" lines.
__po_list_options() {
  [ -f "$0" ] || return 0
  local line name comment re_assign='^([A-Za-z_][A-Za-z0-9_]*)=' re_comment='[[:space:]]#[[:space:]]?(.*)$'
  local seen=" "
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      *parse_options.sh*) [[ "$line" =~ ^[[:space:]]*# ]] || break ;;
    esac
    if [[ "$line" =~ $re_assign ]]; then
      name=${BASH_REMATCH[1]}
      case "$seen" in *" $name "*) continue ;; esac
      seen="$seen$name "
      comment=""
      if [[ "$line" =~ $re_comment ]]; then comment=${BASH_REMATCH[1]}; fi
      printf '%s\t%s\n' "$name" "$comment"
    fi
  done < "$0"
}

__po_help() {
  local line first=true name comment value
  if [ -f "$0" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
      if $first; then
        first=false
        case "$line" in '#!'*) continue ;; esac
      fi
      case "$line" in
        '#'*) line=${line#\#}; echo "${line# }" ;;
        *) break ;;
      esac
    done < "$0"
  fi
  echo
  echo "Options (current values):"
  while IFS=$'\t' read -r name comment; do
    [ -n "${!name+x}" ] || continue
    value=${!name}
    printf '  --%-24s%s\n' "${name//_/-} $value" "${comment:+ # $comment}"
  done < <(__po_list_options)
  echo "  --config FILE              source FILE (name=value lines) first"
  echo "  --help, -h                 print this message"
}

# Pass 1: --config files, so that the command line overrides them whatever the order.
__po_i=1
while [ "$__po_i" -le "$#" ]; do
  __po_arg=${!__po_i}
  case "$__po_arg" in
    --) break ;;
    --config|--config=*)
      if [ "$__po_arg" = "--config" ]; then
        __po_i=$((__po_i + 1))
        [ "$__po_i" -le "$#" ] || __po_die "option --config needs a file"
        __po_file=${!__po_i}
      else
        __po_file=${__po_arg#--config=}
      fi
      [ -f "$__po_file" ] || __po_die "config file $__po_file not found"
      # shellcheck disable=SC1090
      . "$__po_file" || __po_die "error in config file $__po_file"
      ;;
    --help|-h|--*=*) ;;
    --*) __po_i=$((__po_i + 1)) ;;  # skip the option's value
    *) break ;;
  esac
  __po_i=$((__po_i + 1))
done

# Pass 2: every other option.
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) __po_help; exit 0 ;;
    --) shift; break ;;
    --config) shift 2 || __po_die "option --config needs a file"; continue ;;
    --config=*) shift; continue ;;
    --*=*) __po_name=${1%%=*}; __po_value=${1#*=}; shift ;;
    --*)
      __po_name=$1
      [ $# -ge 2 ] || __po_die "option $1 needs a value"
      __po_value=$2
      shift 2
      ;;
    *) break ;;
  esac
  __po_opt=$__po_name
  __po_name=${__po_name#--}
  __po_name=${__po_name//-/_}
  [[ "$__po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] && [[ "$__po_name" != __po_* ]] \
    || __po_die "invalid option $__po_opt"
  [ -n "${!__po_name+x}" ] || __po_die "unknown option $__po_opt (no variable $__po_name; see --help)"
  case "${!__po_name}" in
    true|false)
      case "$__po_value" in
        true|false) ;;
        *) __po_die "option $__po_opt is boolean: give true or false, not '$__po_value'" ;;
      esac
      ;;
  esac
  printf -v "$__po_name" '%s' "$__po_value"
done

unset -v __po_i __po_arg __po_file __po_name __po_value __po_opt
unset -f __po_die __po_list_options __po_help
true
