"""Set-level scores per group of files (e.g. per singer) from the ``per_utt.csv`` of scored separations.

Usage::

    python -m sepkit.bin.score_groups [--group '^([^_]+)_'] [--out T.md] SCOREDIR [SCOREDIR ...]

For each ``SCOREDIR`` (written by ``python -m sepkit.bin.score``) the files are grouped by the first
group of the regular expression ``--group`` matched against the utterance id (default: the text
before the first ``_``, i.e. the singer of a MIR-1K clip ``annar_3_04``), and each group gets the
set-level figures of ``result.json`` computed on its files only: length-weighted means of the
per-file SI-SDRi and BSS eval v3 NSDR (GNSDR), per source, as in ``score``. A last row ``all files``
covers every file (a group may itself be called ``all``). This is what keeps a tuning singer apart
from a reported one when both are in one test set. An utterance id that does not match, or one
listed twice, is an error naming the file.
"""
import argparse
import csv
import re
import sys
from pathlib import Path

import numpy as np

from sepkit.audio import atomic_path
from sepkit.metrics import aggregate

KEYS = (("si_sdri", "SI-SDRi"), ("nsdr", "GNSDR"))


def get_parser():
    parser = argparse.ArgumentParser(prog="python -m sepkit.bin.score_groups", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--group", default=r"^([^_]+)_", help="regex whose first group names an utterance's group")
    parser.add_argument("--out", default="", help="also write the Markdown table here (atomically)")
    parser.add_argument("scoredirs", nargs="+", help="score dirs holding per_utt.csv")
    return parser


def read_per_utt(path):
    """``(sources, rows)``: the source names and the rows of a ``per_utt.csv`` as dicts."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no scored files")
    sources = [k[:-len("_si_sdri")] for k in rows[0] if k.endswith("_si_sdri")]
    seen = set()
    for row in rows:  # a file scored twice would count twice in every mean
        if row.get("utt") in seen:
            raise ValueError(f"{path}: utterance {row['utt']} is listed twice")
        seen.add(row.get("utt"))
    return sources, rows


ALL = "all files"  # the row over every file: utterance ids hold no spaces, so no group can take this name


def group_scores(rows, sources, pattern):
    """``{group: {key: (C,) array, "n": files, "seconds": s}}`` with length-weighted means per group, then
    :data:`ALL` over every file."""
    rx = re.compile(pattern)
    groups = {}
    for row in rows:
        m = rx.search(row["utt"])
        if not m or not m.groups():
            raise ValueError(f"utterance {row['utt']} does not match --group {pattern!r}")
        groups.setdefault(m.group(1), []).append(row)
    groups[ALL] = rows
    out = {}
    for name, members in groups.items():
        per_file = [{key: [float(r[f"{s}_{key}"]) if r.get(f"{s}_{key}", "") != "" else np.nan for s in sources]
                     for key, _ in KEYS} for r in members]
        lengths = [float(r["seconds"]) for r in members]
        agg = aggregate(per_file, lengths, keys=[k for k, _ in KEYS])
        out[name] = {**{k: agg[k] for k, _ in KEYS if k in agg}, "n": len(members), "seconds": sum(lengths)}
    return out


def table(scoredir, sources, scores):
    head = "| group | files | " + " | ".join(f"{label} {s}" for _, label in KEYS for s in sources) + " |"
    lines = [f"### {scoredir}", "", head, "|" + "---|" * (2 + len(KEYS) * len(sources))]
    for name, sc in scores.items():
        vals = [f"{sc[k][c]:.2f}" if k in sc and np.isfinite(sc[k][c]) else "-"
                for k, _ in KEYS for c in range(len(sources))]
        lines.append(f"| {name} | {sc['n']} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = get_parser().parse_args(argv)
    parts = []
    try:
        for d in args.scoredirs:
            sources, rows = read_per_utt(Path(d) / "per_utt.csv")
            parts.append(table(d, sources, group_scores(rows, sources, args.group)))
    except (OSError, ValueError, KeyError, re.error) as exc:
        print(f"score_groups: {exc}", file=sys.stderr)
        return 1
    text = "\n".join(parts) + "\nLength-weighted means over each group's files (dB); GNSDR = BSS eval v3 NSDR.\n"
    print(text, end="")
    if args.out:
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
