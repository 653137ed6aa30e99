# Environment of the recipe (sourced by run.sh): the sepkit venv, C locale, unbuffered logs.
MAIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
if [ ! -f "$MAIN_ROOT/tools/venv/bin/activate" ]; then
  echo "path.sh: $MAIN_ROOT/tools/venv is missing: build it with 'make venv' (tools/install.sh) in $MAIN_ROOT" >&2
  return 1
fi
# shellcheck disable=SC1091
. "$MAIN_ROOT/tools/venv/bin/activate"
export LC_ALL=C
export PYTHONUNBUFFERED=1
