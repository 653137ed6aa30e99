#!/usr/bin/env bash
# Check a separation data dir (wav.scp, sources, <source>.scp, utt2dur); exit 1 on any problem.
# Usage: utils/validate_data_dir.sh [--check-audio] <data-dir>
#   --check-audio   also decode every audio spec (slower): rates, lengths and utt2dur must agree.
# Uses the python of the current environment if it can import sepkit, else tools/venv.
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
python=python3
if ! "$python" -c "import sepkit.data.datadir" >/dev/null 2>&1 && [ -x "$root/tools/venv/bin/python" ]; then
  python="$root/tools/venv/bin/python"
fi
exec "$python" -m sepkit.bin.validate_data_dir "$@"
