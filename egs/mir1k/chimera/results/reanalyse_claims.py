"""Approximate reanalysis of paper_claims_COMPARE.md with today's sepkit.stats (t seed term + Holm).

The per-file scores of the 2026-11-30 grid were not kept, so its claims cannot be recomputed exactly
(rerun ``local/paper_claims.sh`` for that). What the committed COMPARE.md does keep is enough for an
approximation, per claim row:

* the seed term of :func:`sepkit.stats.seed_term` from the seed standard deviations of A and B in the
  system tables (3 seeds each; the figures ``-sd, 0, +sd`` have exactly that sd);
* the file term: a normal whose variance is that of the printed interval (half-width / 1.96, squared)
  less the seed variance the former bootstrap put into it (``sd_A^2 / 3 + sd_B^2 / 3``), represented by
  2000 evenly spaced normal quantiles in place of the bootstrap replicates;
* the former interval's own p-value, normal approximation: ``2 Phi(-|A - B| / (half-width / 1.96))``,
  and Holm over every row: what the correction alone does to the former verdicts;
* interval and p-value by :func:`sepkit.stats.mixture_interval`, Holm over every row (as
  ``python -m sepkit.bin.compare`` does), verdicts by :func:`sepkit.stats.verdict` /
  :func:`sepkit.stats.corrected_verdict`.

The printed figures have two decimals and the former intervals were percentile intervals (a little
skewed), so values near a threshold can fall either way: such verdicts are weak in any case.

Usage (from egs/mir1k/chimera)::

    ../../../tools/venv/bin/python results/reanalyse_claims.py results/paper_claims_COMPARE.md \
        results/paper_claims_reanalysis.md
"""
import re
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

from sepkit import stats

NAMES = {"SI-SDRi", "GNSDR", "GSIR", "GSAR"}
CLAIM = re.compile(r"^\| (.+?) \| (\S+) \| (\S+) \| (\S+) \| ([+-][\d.]+) \| \[([+-][\d.]+), ([+-][\d.]+)\] \| (\d+) "
                   r"\| (\d+)/(\d+) \| \*\*(\w+)\*\* \|")


def parse(text):
    """``(sd, claims)``: ``sd[(set, metric, system, source)]`` and the claim rows of a former COMPARE.md."""
    sd, claims, section, sources = {}, [], None, []
    for line in text.splitlines():
        m = re.match(r"^## (\S+): (\S+) \(", line)
        if m and m.group(2) in NAMES:
            section = m.groups()
            continue
        if line.startswith("| system | seeds |") and section:
            sources = [c.strip()[:-len(" mean")] for c in line.strip("|").split("|") if c.strip().endswith(" mean")]
            continue
        if line.startswith("## Claims"):
            section = None
        cells = [c.strip() for c in line.strip("|").split("|")]
        if section and len(cells) >= 2 + 3 * len(sources) and cells[1].isdigit():
            for k, src in enumerate(sources):
                sd[section + (cells[0], src)] = float(cells[3 + 3 * k])
        m = CLAIM.match(line)
        if m:
            claim, test_set, metric, src, diff, lo, hi, n, sa, sb, verdict = m.groups()
            claims.append({"claim": claim, "set": test_set, "metric": metric, "source": src, "diff": float(diff),
                           "lo": float(lo), "hi": float(hi), "n_files": int(n), "seeds": (int(sa), int(sb)),
                           "verdict": verdict})
    return sd, claims


def reanalyse(sd, claims, level=0.95, replicates=2000):
    """Adds ``new_lo``, ``new_hi``, ``p``, ``new_verdict``, ``p_holm``, ``verdict_holm`` to each claim row."""
    z = norm.ppf(0.5 + level / 2)
    grid = norm.ppf((np.arange(replicates) + 0.5) / replicates)
    for r in claims:
        a, b = (part.strip() for part in r["claim"].split(">"))
        sda, sdb = (sd[(r["set"], r["metric"], name, r["source"])] for name in (a, b))
        se, df = stats.seed_term([-sda, 0.0, sda], [-sdb, 0.0, sdb])
        if r["seeds"] != (3, 3):
            raise ValueError(f"{r['claim']} {r['set']}: {r['seeds']} seeds; this approximation assumes 3/3")
        var_old = ((r["hi"] - r["lo"]) / (2 * z)) ** 2
        file_sd = np.sqrt(max(var_old - se ** 2, 0.0))
        r["new_lo"], r["new_hi"], r["p"] = stats.mixture_interval(r["diff"] + file_sd * grid, se, df, level)
        r["new_verdict"] = stats.verdict(r["new_lo"], r["new_hi"])
        r["p_former"] = float(2 * norm.sf(abs(r["diff"]) / np.sqrt(var_old))) if var_old > 0 else 0.0
    for r, p, pf in zip(claims, stats.holm([r["p"] for r in claims]), stats.holm([r["p_former"] for r in claims])):
        r["p_holm"], r["verdict_holm"] = float(p), stats.corrected_verdict(r["new_verdict"], p, level)
        r["former_holm"] = stats.corrected_verdict(r["verdict"], pf, level)
    return claims


def markdown(claims, source_name):
    few = sorted({r["set"] for r in claims if r["n_files"] < 10})
    lines = ["# Claims of the paper_claims grid, reanalysed (approximation)", "",
             f"From {source_name} by `results/reanalyse_claims.py` (its docstring says how): the former interval "
             "and verdict, then today's interval (file bootstrap x Welch-t seed term, sepkit/stats.py), its p-value, "
             f"and Holm's correction over all {len(claims)} rows. Sets of fewer than 10 files ({', '.join(few)}) "
             "are no evidence, whatever the verdict.", "",
             "| claim | set | metric | source | A - B | former CI | former | former, Holm | CI now | p | verdict now "
             "| p (Holm) | verdict now (Holm) |", "|---|---|---|---|---:|---:|---|---|---:|---:|---|---:|---|"]
    for r in claims:
        lines.append(f"| {r['claim']} | {r['set']} | {r['metric']} | {r['source']} | {r['diff']:+.2f} | "
                     f"[{r['lo']:+.2f}, {r['hi']:+.2f}] | {r['verdict']} | {r['former_holm']} | "
                     f"[{r['new_lo']:+.2f}, {r['new_hi']:+.2f}] | {r['p']:.4f} | {r['new_verdict']} | "
                     f"{r['p_holm']:.3f} | {r['verdict_holm']} |")
    real = [r for r in claims if r["n_files"] >= 10]
    strong = [r for r in real if r["verdict"] != stats.INCONCLUSIVE]

    def lost(key):
        return sum(r[key] == stats.INCONCLUSIVE for r in strong)

    lines += ["", f"On the sets of 10 files or more ({len(real)} rows), of the {len(strong)} former holds/reversed "
              f"verdicts {lost('former_holm')} do not stand after Holm's correction of the former intervals, "
              f"{lost('new_verdict')} do not stand with the t seed term alone, and {lost('verdict_holm')} do not stand "
              "with both (with 3 seeds a system's seed spread rests on 2 degrees of freedom: the t term's heavy tails "
              f"keep p above ~0.001 unless a difference dwarfs the seed spread, and Holm over {len(claims)} claims "
              f"asks p < {0.05 / len(claims):.4f} of the strongest).", ""]
    cols = [(m, s) for m in ("SI-SDRi", "GNSDR") for s in ("vocals", "accompaniment")]
    lines += ["## Every metric's verdict per claim: former / former with Holm / now with Holm", "",
              "| claim | set | " + " | ".join(f"{m} {s}" for m, s in cols) + " |", "|---|---|" + "---|" * len(cols)]
    cells = {}
    for r in claims:
        cells.setdefault((r["claim"], r["set"]), {})[(r["metric"], r["source"])] = r
    for (claim, test_set), by_col in cells.items():
        row = [f"{by_col[c]['verdict']} / {by_col[c]['former_holm']} / {by_col[c]['verdict_holm']}" if c in by_col
               else "n/a" for c in cols]
        lines.append(f"| {claim} | {test_set} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: reanalyse_claims.py COMPARE.md OUT.md", file=sys.stderr)
        return 2
    src, out = Path(argv[0]), Path(argv[1])
    try:
        sd, claims = parse(src.read_text(encoding="utf-8"))
        if not claims:
            raise ValueError("no claim rows (| A > B | set | metric | source | ... | **verdict** |)")
        text = markdown(reanalyse(sd, claims), src.name)
    except (OSError, ValueError, KeyError) as exc:
        print(f"reanalyse_claims: {src}: {exc!r}" if isinstance(exc, KeyError) else f"reanalyse_claims: {src}: {exc}",
              file=sys.stderr)
        return 1
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
