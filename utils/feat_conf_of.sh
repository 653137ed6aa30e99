#!/usr/bin/env bash
# Print the feature settings file (conf/feats*.yaml) that goes with a training config.
# Usage: utils/feat_conf_of.sh <train-config.yaml> <default-feat-conf>
#   A training config whose system needs non-default input features has a link beside it,
#   <name>.feat_conf -> ../feats/<setting>.yaml (e.g. the Table 4 systems); that file is printed.
#   Otherwise <default-feat-conf> (the paper's features, conf/feats.yaml) is printed.
#   The dump of the features is dump/<basename of the printed file without .yaml>/.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "Usage: $0 <train-config.yaml> <default-feat-conf>" >&2
  exit 1
fi
config=$1 default=$2
[ -f "$config" ] || { echo "$0: training config $config not found" >&2; exit 1; }
pair=${config%.yaml}.feat_conf
if [ -e "$pair" ]; then
  conf=$pair
else
  [ -L "$pair" ] && { echo "$0: $pair is a broken link" >&2; exit 1; }
  conf=$default
fi
[ -f "$conf" ] || { echo "$0: feature config $conf not found" >&2; exit 1; }
if [ -L "$conf" ]; then
  # a path relative to the recipe when the link points inside it, else absolute
  target=$(readlink -f "$conf")
  case "$target" in
    "$PWD"/*) conf=${target#"$PWD"/} ;;
    *) conf=$target ;;
  esac
fi
echo "$conf"
