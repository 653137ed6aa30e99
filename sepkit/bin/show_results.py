"""Print the results table of every scored separation and write it to RESULTS.md.

Usage::

    python -m sepkit.bin.show_results [--out RESULTS.md] [--title T] EXPDIR [EXPDIR ...]

Finds every ``<EXPDIR>/<tag>/score_<set>_<head>/result.json`` (written by
``python -m sepkit.bin.score``) and prints one Markdown row per result: experiment tag, test set,
head (``mi`` = mask inference, ``dc`` = deep clustering + k-means), SI-SDRi per source (the metric
of the paper's Tables 2-4: length-weighted mean of the per-file SI-SDR improvement, best
permutation per file) and BSS eval v3 GNSDR / GSIR / GSAR (MIREX, Table 1), all in dB, computed
on mono downmixes of the signals (a row scored with ``score --channels each`` says so in its head
column). Results of other source lists (a 2-stem and a 4-stem run) get a table each.
``--out ''`` only prints. A missing EXPDIR is an error; one without results prints nothing for it.
"""
import argparse
import json
import sys
from pathlib import Path

from sepkit.audio import atomic_path

_SHORT = {"vocals": "V", "accompaniment": "M"}  # the paper's column letters (V, M = music)
_METRICS = (("si_sdri", "SI-SDRi"), ("gnsdr", "GNSDR"), ("gsir", "GSIR"), ("gsar", "GSAR"))
_NOT_SOURCES = {"n_files", "seconds", "channels"}

_MONO = ("Scores are computed on mono downmixes (the mean of the channels) of the mixture, the references "
         "and the estimates, while the separated files keep the input's channels; a head marked "
         "'each channel' was scored on every channel on its own, averaged (python -m sepkit.bin.score "
         "--channels each). docs/metrics.md says what each metric forgives.")
_NOTES = _MONO + """

All numbers in dB. SI-SDRi: improvement of the scale-invariant SDR of each estimate over that of the
mixture, best permutation per file, length-weighted mean over the set (the metric of the paper's
Tables 2-4). GNSDR / GSIR / GSAR: BSS eval v3 (mir_eval) NSDR / SIR / SAR, length-weighted means
(MIREX, Table 1). Head: mi = mask-inference head, dc = deep-clustering head + k-means.
V = vocals, M = accompaniment (music); other sources by their names."""


def get_parser():
    parser = argparse.ArgumentParser(prog="python -m sepkit.bin.show_results", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", default="RESULTS.md", help="Markdown file to write; '' = print only (RESULTS.md)")
    parser.add_argument("--title", default="Results", help="heading of the Markdown file (Results)")
    parser.add_argument("expdirs", nargs="+", help="experiment roots (e.g. exp) searched for <tag>/score_*/result.json")
    return parser


def split_score_dir(name):
    """``score_<set>_<head>`` -> (set, head); set names may contain underscores."""
    body = name[len("score_"):]
    if "_" not in body:
        return body, ""
    test_set, head = body.rsplit("_", 1)
    return test_set, head


def collect(expdirs):
    """[(tag, set, head, result dict)] sorted by tag, set, head. Raises SystemExit on bad files."""
    rows = []
    for root in expdirs:
        root = Path(root)
        if not root.is_dir():
            raise SystemExit(f"show_results: {root}: no such directory")
        for path in sorted(root.glob("*/score_*/result.json")):
            try:
                result = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SystemExit(f"show_results: {path}: not a readable result.json ({exc})") from None
            if not isinstance(result, dict):
                raise SystemExit(f"show_results: {path}: not a result.json object")
            test_set, head = split_score_dir(path.parent.name)
            tag = path.parent.parent.name
            if len(expdirs) > 1:  # say which recipe an experiment belongs to: egs/<corpus>/<recipe>/exp
                parts = root.resolve().parts
                recipe = "/".join(parts[-3:-1]) if root.name == "exp" and len(parts) >= 3 else str(root)
                tag = f"{recipe}: {tag}"
            rows.append((tag, test_set, head, result))
    return rows


def _fmt(v):
    return "-" if v is None else f"{float(v):.2f}"


def _sources(result):
    return tuple(name for name in result if name not in _NOT_SOURCES and isinstance(result[name], dict))


def table(rows):
    """Markdown table lines for :func:`collect`'s rows: one table per list of sources (a 2-stem and a
    4-stem run of one recipe apart, each under a ``Sources:`` line when there are several)."""
    groups = {}
    for row in rows:
        groups.setdefault(_sources(row[3]), []).append(row)
    lines = []
    for sources, members in groups.items():
        if len(groups) > 1:
            lines += (["", ""] if lines else []) + [f"Sources: {', '.join(sources)}", ""]
        lines += _table(members, sources)
    return lines


def _table(rows, sources):
    header = ["exp", "set", "head"]
    for key, label in _METRICS:
        header += [f"{label} {_SHORT.get(s, s)}" for s in sources]
    header += ["files", "minutes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|"]
    for tag, test_set, head, result in rows:
        cells = [tag, test_set, head + (" (each channel)" if result.get("channels") == "each" else "")]
        for key, _ in _METRICS:
            cells += [_fmt(result.get(s, {}).get(key)) for s in sources]
        cells += [str(result.get("n_files", "-")), f"{float(result.get('seconds', 0)) / 60:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    args = get_parser().parse_args(argv)
    rows = collect(args.expdirs)
    if not rows:
        print(f"show_results: no score_*/result.json under {' '.join(args.expdirs)}")
        return 0
    lines = table(rows)
    print("\n".join(lines))
    print("(dB; mono downmixes unless a head says 'each channel'" + (f"; legend in {args.out})" if args.out else ")"))
    if args.out:
        text = f"# {args.title}\n\n" + "\n".join(lines) + "\n\n" + _NOTES + "\n"
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
