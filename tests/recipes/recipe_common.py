"""Helpers of the recipe tests: a workspace that mirrors the repository layout around one recipe."""
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / "tools" / "venv" / "bin" / "python"


def make_workspace(base, recipe):
    """``base/{tools,utils}`` -> the repository's, ``base/egs/<recipe>/`` with the recipe's files linked.

    The recipe then runs exactly as in the repository (its path.sh finds ``../../../tools/venv``),
    but writes data/, dump/ and exp/ under ``base``. Returns the recipe dir.
    """
    base = Path(base)
    for name in ("tools", "utils"):
        if not (base / name).exists():
            (base / name).symlink_to(REPO / name)
    src = REPO / "egs" / recipe
    rec = base / "egs" / recipe
    rec.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name in ("data", "dump", "exp", "downloads", "utils") or item.name.startswith("."):
            continue
        (rec / item.name).symlink_to(item)
    (rec / "utils").symlink_to("../../../utils")
    return rec


def run_recipe(rec, *args, timeout=600):
    """Run ``./run.sh args`` in ``rec``; returns the CompletedProcess (stdout and stderr merged)."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), SEPKIT_BACKEND="local")
    return subprocess.run(["./run.sh", *map(str, args)], cwd=rec, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def snapshot(rec, skip=("RESULTS.md", ".run.lock")):
    """``{relative path: (size, mtime_ns)}`` of every file under data/, dump/ and exp/ (logs and the
    recipe lock exp/.run.lock, which each run takes, excluded)."""
    out = {}
    for top in ("data", "dump", "exp"):
        for path in (Path(rec) / top).rglob("*"):
            if path.is_file() and path.name not in skip and "log" not in path.relative_to(rec).parts:
                st = path.stat()
                out[str(path.relative_to(rec))] = (st.st_size, st.st_mtime_ns)
    return out
