"""Compare the systems of a grid of runs (systems x seeds): seed intervals, paired claims, the paper's numbers.

Usage::

    python -m sepkit.bin.compare [--metrics si_sdri,gnsdr] [--sources vocals,accompaniment]
        [--pair "CHI_0.1-MI > MI"]... [--pair "DC > MI @ ikala"]... [--paper-set test_remix=DSD100-remix]...
        [--out COMPARE.md] [--plot compare.png] RUNS [RUNS ...]

RUNS is a ``runs.tsv`` written by ``utils/run_grid.sh`` (or the grid dir holding it): one line per
run, ``system, seed, decode_dir, seconds, config, overrides``; ``decode_dir`` (relative to the
file's dir) holds the run's ``score_<set>_<head>/per_utt.csv`` (``python -m sepkit.bin.score``).

A row of the tables is a system and head, labelled ``<system>-<HEAD>`` (``CHI_0.1-MI``), or just
``<system>`` when the system was scored with one head only (``DC``, ``MI``). For each test set and
metric (``si_sdri``: the paper's Tables 2-4; ``gnsdr``/``gsir``/``gsar``: BSS eval v3, MIREX) the
Markdown gives, per source, the mean over seeds of the set-level figure (length-weighted over the
files), its standard deviation over seeds and the 95% t-interval over seeds; the paper's own
SI-SDRi beside it where ``--paper-set`` says the set is one of the paper's. Each ``--pair "A > B"``
(the claim "A is better than B"; ``@ SET[,SET]`` limits it to those sets) gives the paired
difference per file averaged over seeds, an interval over files (bootstrap) and seeds (Student t),
its p-value (:mod:`sepkit.stats`) and a verdict: holds / reversed / inconclusive, raw and after
Holm's correction over every claim row; a table gives every metric's verdict of each claim.
COMPARE.md warns of fewer than 3 seeds per system or a set of fewer than 10 files; systems with
unequal numbers of seeds, or a listed run without scores, are refused. ``--plot`` draws the
per-system means and intervals of the first metric and source (PNG).
"""
import argparse
import csv
import logging
import math
import sys
from pathlib import Path

import numpy as np

from sepkit import stats
from sepkit.audio import atomic_path
from sepkit.bin.score import SUMMARY
from sepkit.bin.show_results import split_score_dir

logger = logging.getLogger("sepkit.bin.compare")

SOURCES = ("vocals", "accompaniment")
# Luo et al. 2017, SI-SDRi (dB), (vocals, accompaniment): Table 2 (MSA, D = 20) and Table 3 (CHI_0.1-MI).
PAPER = {
    "DSD100-remix": {"DC": (4.9, 7.2), "MI": (4.8, 6.7), "CHI_0.1-DC": (4.8, 7.2), "CHI_0.1-MI": (5.5, 7.8),
                     "CHI_0.5-DC": (4.7, 7.1), "CHI_0.5-MI": (5.5, 7.8), "mMSA_D20-MI": (5.4, 7.8),
                     "mMSA_D10-MI": (5.5, 7.9)},
    "iKala": {"DC": (6.1, 10.0), "MI": (5.2, 8.9), "CHI_0.1-DC": (6.0, 9.7), "CHI_0.1-MI": (6.4, 10.5),
              "CHI_0.5-DC": (5.9, 9.9), "CHI_0.5-MI": (6.3, 10.5), "mMSA_D20-MI": (6.5, 10.7),
              "mMSA_D10-MI": (6.6, 10.8)},
}
DEFAULT_PAPER_SETS = {"test_remix": "DSD100-remix", "ikala": "iKala"}  # the recipes' names of the paper's sets
NAMES = {"si_sdri": "SI-SDRi", "gnsdr": "GNSDR", "gsir": "GSIR", "gsar": "GSAR"}
MIN_SEEDS, MIN_FILES = 3, 10  # fewer: a warning in COMPARE.md (and no bold verdicts for a set of few files)


class CompareError(Exception):
    """Bad input; the message names the file or option."""


def get_parser():
    parser = argparse.ArgumentParser(prog="python -m sepkit.bin.compare", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--metrics", default="si_sdri", help="comma-separated: si_sdri, gnsdr, gsir, gsar (si_sdri)")
    parser.add_argument("--sources", default="", help="comma-separated sources; '' = every source scored")
    parser.add_argument("--pair", action="append", default=[], metavar='"A > B [@ SET,...]"',
                        help="claim that row A beats row B (repeatable)")
    parser.add_argument("--paper-set", "--paper_set", action="append", default=[], metavar="SET=PAPER",
                        help="our test set SET is the paper's DSD100-remix or iKala (default: "
                             "test_remix=DSD100-remix, ikala=iKala)")
    parser.add_argument("--level", type=float, default=0.95, help="interval coverage (0.95)")
    parser.add_argument("--n-boot", "--n_boot", type=int, default=2000, help="bootstrap replicates (2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (0)")
    parser.add_argument("--title", default="Comparison of systems over seeds", help="Markdown heading")
    parser.add_argument("--note", action="append", default=[], help="a paragraph under the heading (repeatable)")
    parser.add_argument("--out", default="COMPARE.md", help="Markdown file; '' = print only (COMPARE.md)")
    parser.add_argument("--plot", default="", help="PNG of the means and intervals; '' = none")
    parser.add_argument("runs", nargs="+", help="runs.tsv files of utils/run_grid.sh, or the grid dirs holding them")
    return parser


# ------------------------------------------------------------------------------------------ input
def read_runs(path):
    """``[(system, seed, decode_dir Path, seconds)]`` of a runs.tsv (or a dir holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "runs.tsv"
    if not path.is_file():
        raise CompareError(f"{path}: no such file (utils/run_grid.sh writes it when its runs are done)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    runs = []
    for k, row in enumerate(rows, 2):
        try:
            runs.append((row["system"], int(row["seed"]), path.parent / row["decode_dir"], float(row["seconds"])))
        except (KeyError, TypeError, ValueError):
            raise CompareError(f"{path}:{k}: expected the columns system, seed, decode_dir, seconds") from None
    return runs


def read_per_utt(path):
    """``(utts, seconds (N,), {column: (N,) float, NaN where empty})`` of a per_utt.csv."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "utt" not in rows[0] or "seconds" not in rows[0]:
        raise CompareError(f"{path}: not a per_utt.csv of sepkit.bin.score (no rows, or no utt/seconds columns)")
    try:
        cols = {k: np.array([float(r[k]) if r[k] not in ("", None) else math.nan for r in rows])
                for k in rows[0] if k not in ("utt", "perm")}
    except ValueError as exc:
        raise CompareError(f"{path}: {exc}") from None
    order = np.argsort([r["utt"] for r in rows], kind="stable")
    return [rows[i]["utt"] for i in order], cols.pop("seconds")[order], {k: v[order] for k, v in cols.items()}


def collect(run_files):
    """``(order, scores)``: row labels in grid order, and ``scores[set][label] = {seed: (utts, w, cols)}``."""
    runs = [r for f in run_files for r in read_runs(f)]
    found = {}  # (system, head) -> {set: {seed: table}}
    listed = {}  # system -> [seeds] in the runs.tsv files
    for system, seed, ddir, _ in runs:
        if seed in listed.setdefault(system, []):
            raise CompareError(f"{ddir}: {system} seed {seed} is listed twice in the runs.tsv files")
        listed[system].append(seed)
        paths = sorted(ddir.glob("score_*/per_utt.csv"))
        if not paths:
            raise CompareError(f"{ddir}: no score_*/per_utt.csv: run {system} seed {seed} is missing or not scored "
                               "(utils/run_grid.sh reruns it)")
        for p in paths:
            test_set, head = split_score_dir(p.parent.name)
            found.setdefault((system, head), {}).setdefault(test_set, {})[seed] = read_per_utt(p)
    systems = list(dict.fromkeys(s for s, *_ in runs))
    heads = {s: sorted(h for (t, h) in found if t == s) for s in systems}
    order, scores = [], {}
    for s in systems:
        for h in heads[s]:
            label = s if len(heads[s]) == 1 else f"{s}-{h.upper()}"
            order.append(label)
            for test_set, by_seed in found[(s, h)].items():
                scores.setdefault(test_set, {})[label] = by_seed
    check_seeds(listed, found)
    for test_set, rows in scores.items():  # every run of a set must score the same files
        ref = None
        for label, by_seed in rows.items():
            for seed, (utts, _, _) in by_seed.items():
                ref = ref or (utts, label, seed)
                if utts != ref[0]:
                    raise CompareError(f"test set {test_set}: {label} seed {seed} scored other files than "
                                       f"{ref[1]} seed {ref[2]} ({len(utts)} vs {len(ref[0])})")
    return order, scores


def check_seeds(listed, found):
    """Refuse systems with unequal numbers of seeds, or a set scored by only some seeds of a system."""
    counts = {system: len(seeds) for system, seeds in listed.items()}
    if len(set(counts.values())) > 1:
        raise CompareError("systems with unequal numbers of seeds cannot be compared: "
                           + ", ".join(f"{s} {sorted(listed[s])}" for s in counts) + " (rerun the missing runs)")
    for (system, head), by_set in found.items():
        for test_set, by_seed in by_set.items():
            lost = sorted(set(listed[system]) - set(by_seed))
            if lost:
                raise CompareError(f"test set {test_set}: {system} ({head}) has no scores of seed(s) {lost} "
                                   f"(scored: {sorted(by_seed)}); rerun or rescore those runs")


def column(metric, source):
    return f"{source}_{SUMMARY[metric]}"


def values(by_seed, metric, source):
    """``(seeds, (S, N) values, (N,) lengths)`` of one row on one set."""
    seeds = sorted(by_seed)
    col = column(metric, source)
    missing = [s for s in seeds if col not in by_seed[s][2]]
    if missing:
        raise CompareError(f"no column {col} in the scores of seed {missing[0]} (scored without BSS eval?)")
    return seeds, np.stack([by_seed[s][2][col] for s in seeds]), by_seed[seeds[0]][1]


# ------------------------------------------------------------------------------------------ tables
def system_rows(order, rows, metric, sources, level):
    """``[(label, {source: seed_summary + figures})]`` for one set and metric."""
    out = []
    for label in order:
        if label not in rows:
            continue
        cells = {}
        for src in sources:
            seeds, x, w = values(rows[label], metric, src)
            figs = [stats.set_level(v, w) for v in x]
            cells[src] = dict(stats.seed_summary(figs, level), figures=figs)
        out.append((label, cells))
    return out


def parse_pair(text):
    """``"A > B [@ SET,SET]"`` -> (A, B, sets or None)."""
    claim, _, where = text.partition("@")
    parts = [p.strip() for p in claim.split(">")]
    if len(parts) != 2 or not all(parts):
        raise CompareError(f"--pair {text!r}: expected 'A > B' or 'A > B @ SET[,SET]' (A, B: row labels)")
    sets = [s.strip() for s in where.split(",") if s.strip()] or None
    return parts[0], parts[1], sets


def pair_rows(pairs, scores, metrics, sources, args):
    out = []
    for text in pairs:
        a, b, sets = parse_pair(text)
        known = {label for rows in scores.values() for label in rows}
        for name in (a, b):
            if name not in known:
                raise CompareError(f"--pair {text!r}: no row {name!r} (rows: {', '.join(sorted(known))})")
        for test_set in sets or sorted(scores):
            rows = scores.get(test_set, {})
            if a not in rows or b not in rows:
                if sets:
                    raise CompareError(f"--pair {text!r}: {a} or {b} was not scored on {test_set}")
                continue
            for metric in metrics:
                for src in sources:
                    _, xa, w = values(rows[a], metric, src)
                    _, xb, _ = values(rows[b], metric, src)
                    r = stats.paired_bootstrap(xa, xb, w, n_boot=args.n_boot, level=args.level, seed=args.seed)
                    r.update(claim=f"{a} > {b}", a=a, b=b, set=test_set, metric=metric, source=src,
                             verdict=stats.verdict(r["lo"], r["hi"]))
                    out.append(r)
    for r, p_holm in zip(out, stats.holm([r["p"] for r in out])):  # the family: every row of the claims table
        r.update(p_holm=float(p_holm), verdict_holm=stats.corrected_verdict(r["verdict"], p_holm, args.level))
    return out


def paper_value(paper_set, label, source):
    row = PAPER.get(paper_set, {}).get(label)
    return None if row is None or source not in SOURCES else row[SOURCES.index(source)]


def _f(v, fmt="{:.2f}"):
    return "n/a" if v is None or not math.isfinite(v) else fmt.format(v)


def markdown(args, order, scores, metrics, sources, paper_sets, pairs):
    lines = [f"# {args.title}", ""]
    for note in args.note:
        lines += [note, ""]
    lines += warnings(scores)
    lines += [f"All figures in dB. Per system: the set-level figure of each seed (length-weighted mean over the "
              f"files), then its mean over seeds, standard deviation over seeds (sd) and {args.level:.0%} t-interval "
              "over seeds (CI). `paper`: Luo et al. 2017 (Tables 2-3, SI-SDRi) where the set is the paper's.", ""]
    for test_set in sorted(scores):
        rows = scores[test_set]
        utts, w = set_files(rows)
        paper = paper_sets.get(test_set)
        for metric in metrics:
            table = system_rows(order, rows, metric, sources, args.level)
            lines += [f"## {test_set}: {NAMES[metric]} ({len(utts)} files, {w.sum() / 60:.1f} min)"
                      + (f", the paper's {paper}" if paper else ""), ""]
            if len(utts) < MIN_FILES:
                lines += [f"**Warning: {len(utts)} file(s)**: too few to stand for the songs of this kind; "
                          "no claim on this set is evidence.", ""]
            head = ["system", "seeds"]
            for src in sources:
                head += [f"{src} mean", "sd", "CI"] + (["paper"] if paper and metric == "si_sdri" else [])
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
            for label, cells in table:
                cell = [label, str(max(c["n"] for c in cells.values()))]
                for src in sources:
                    c = cells[src]
                    cell += [_f(c["mean"]), _f(c["std"]), f"[{_f(c['lo'])}, {_f(c['hi'])}]"]
                    if paper and metric == "si_sdri":
                        cell.append(_f(paper_value(paper, label, src), "{:.1f}"))
                lines.append("| " + " | ".join(cell) + " |")
            lines.append("")
    if pairs:
        lines += claims_table(args, pairs) + verdict_table(pairs, metrics, sources)
    return "\n".join(lines)


def set_files(rows):
    """``(utts, lengths)`` of a test set (every run of a set scores the same files: :func:`collect`)."""
    first = next(iter(rows.values()))
    return first[next(iter(first))][0], first[next(iter(first))][1]


def warnings(scores):
    """Warning paragraphs for fewer than MIN_SEEDS seeds per system or sets of fewer than MIN_FILES files."""
    out = []
    seeds = min(len(by_seed) for rows in scores.values() for by_seed in rows.values())
    if seeds < MIN_SEEDS:
        out += [f"**Warning: {seeds} seed(s) per system.** " + (
            "Nothing says how much another seed would change a figure: the intervals of claims cover the files "
            "only, and a verdict can be the luck of one training run." if seeds == 1 else
            f"With {seeds} seeds the spread of seeds is barely known: the intervals of claims are wide (a t term "
            "with 1-2 degrees of freedom) and the CI of a system is a rough guide. Use 3 seeds or more."), ""]
    small = [f"{t} ({len(set_files(rows)[0])})" for t, rows in sorted(scores.items())
             if len(set_files(rows)[0]) < MIN_FILES]
    if small:
        out += [f"**Warning: set(s) of fewer than {MIN_FILES} files: {', '.join(small)}.** Their claims rest on "
                "too few songs to generalise; their verdicts are printed without bold, marked *(few files)*.", ""]
    return out


def _verdict_cell(r, key, bold=True):
    few = r["n_files"] < MIN_FILES
    text = r[key]
    return f"{text} *(few files)*" if few else (f"**{text}**" if bold and text != stats.INCONCLUSIVE else text)


def claims_table(args, pairs):
    alpha = 1 - args.level
    lines = ["## Claims", "",
             f"A > B: the difference A - B per file, averaged over seeds, length-weighted over the files; "
             f"{args.level:.0%} interval over files (bootstrap, {args.n_boot} replicates) and seeds (Student t, "
             "Welch; sepkit/stats.py), and its two-sided p-value. holds: the interval is above 0; reversed: below 0; "
             f"inconclusive: it contains 0. **{len(pairs)} claims at once** (every row of this table): some "
             f"\"holds/reversed\" at {args.level:.0%} are expected by chance alone, so `Holm` gives the p-value "
             f"adjusted for all {len(pairs)} (Holm 1979) and the verdict that stands after it (adjusted p < "
             f"{alpha:.2g}): the chance of one or more false verdicts in that column is below {alpha:.0%}. "
             "`paper`: the same difference in the paper (SI-SDRi, DSD100-remix / iKala).", "",
             "| claim | set | metric | source | A - B | CI | p | files | seeds A/B | verdict | p (Holm) | "
             "verdict (Holm) | paper |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---|---:|"]
    for r in pairs:
        pv = [paper_value(p, r["a"], r["source"]) for p in PAPER]
        pw = [paper_value(p, r["b"], r["source"]) for p in PAPER]
        paper = " / ".join(_f(x - y, "{:+.1f}") for x, y in zip(pv, pw) if x is not None and y is not None)
        lines.append(f"| {r['claim']} | {r['set']} | {NAMES[r['metric']]} | {r['source']} | {_f(r['diff'], '{:+.2f}')} "
                     f"| [{_f(r['lo'], '{:+.2f}')}, {_f(r['hi'], '{:+.2f}')}] | {_p(r['p'])} | {r['n_files']} | "
                     f"{r['seeds_a']}/{r['seeds_b']} | {_verdict_cell(r, 'verdict')} | {_p(r['p_holm'])} | "
                     f"{_verdict_cell(r, 'verdict_holm')} | {paper if r['metric'] == 'si_sdri' and paper else 'n/a'} |")
    return lines + [""]


def verdict_table(pairs, metrics, sources):
    """One row per claim and set, one column per metric and source: ``raw / Holm`` verdicts."""
    cols = [(m, s) for m in metrics for s in sources]
    cells = {}
    for r in pairs:
        cells.setdefault((r["claim"], r["set"]), {})[(r["metric"], r["source"])] = r
    lines = ["## Verdicts per claim", "",
             "Every metric's verdict of each claim, raw / after Holm's correction (the claims table has the numbers). "
             "A claim is supported where the metrics agree; one metric that holds while another reverses is no "
             "support.", "",
             "| claim | set | " + " | ".join(f"{NAMES[m]} {s}" for m, s in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for (claim, test_set), by_col in cells.items():
        row = [claim, test_set]
        for col in cols:
            r = by_col.get(col)
            row.append("n/a" if r is None else f"{r['verdict']} / {r['verdict_holm']}"
                       + (" *(few files)*" if r["n_files"] < MIN_FILES else ""))
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""]


def _p(p):
    return "n/a" if p is None or not math.isfinite(p) else ("<0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01
                                                            else f"{p:.3f}")


def plot(path, order, scores, metric, source, level, paper_sets):
    """PNG of one panel per test set: each row's seed figures, mean and interval (:mod:`sepkit.plot`)."""
    from sepkit.plot import dot_whisker_png

    panels = []
    for test_set in sorted(scores):
        rows = []
        for label, cells in system_rows(order, scores[test_set], metric, [source], level):
            c = cells[source]
            paper = paper_value(paper_sets[test_set], label, source) if test_set in paper_sets else None
            rows.append((label, c["mean"], c["lo"], c["hi"], c["figures"], paper if metric == "si_sdri" else None))
        panels.append((f"{test_set}: {source} {NAMES[metric]} (dB): seeds (grey), mean (dot), {level:.0%} CI over seeds (blue), "
                       "paper (red diamond)", rows))
    dot_whisker_png(path, panels)


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        bad = [m for m in metrics if m not in SUMMARY]
        if bad or not metrics:
            raise CompareError(f"--metrics: unknown {bad or metrics} (choose from {', '.join(SUMMARY)})")
        paper_sets = dict(DEFAULT_PAPER_SETS)
        for item in args.paper_set:
            ours, _, theirs = item.partition("=")
            if theirs not in PAPER:
                raise CompareError(f"--paper-set {item!r}: expected SET=PAPER with PAPER one of {', '.join(PAPER)}")
            paper_sets[ours] = theirs
        if not 0 < args.level < 1 or args.n_boot < 1:
            raise CompareError("--level must be in (0, 1) and --n-boot >= 1")
        order, scores = collect(args.runs)
        if not scores:
            raise CompareError(f"{', '.join(args.runs)}: no scored runs")
        some = next(iter(next(iter(scores.values())).values()))
        scored = sorted({c[:-len("_si_sdri")] for c in some[next(iter(some))][2] if c.endswith("_si_sdri")},
                        key=lambda s: (SOURCES.index(s) if s in SOURCES else len(SOURCES), s))
        sources = [s.strip() for s in args.sources.split(",") if s.strip()] or scored
        pairs = pair_rows(args.pair, scores, metrics, sources, args)
        text = markdown(args, order, scores, metrics, sources, paper_sets, pairs)
        if args.plot:
            plot(args.plot, order, scores, metrics[0], sources[0], args.level, paper_sets)
    except CompareError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text + "\n")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(text + "\n", encoding="utf-8")
        logger.info("wrote %s%s", args.out, f" and {args.plot}" if args.plot else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
