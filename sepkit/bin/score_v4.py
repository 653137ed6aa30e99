"""Score a separation dir with BSS eval v4, as MUSDB18 results are reported (SiSEC 2018 / museval).

Usage::

    python -m sepkit.bin.score_v4 [--nj 2] [--win 1.0] [--hop 1.0] [--mono false] [--overwrite]
        DATA SEPDIR OUTDIR            # -> OUTDIR/result_v4.json, OUTDIR/per_track_v4.csv
    python -m sepkit.bin.score_v4 --show [--out RESULTS_v4.md] EXPDIR [EXPDIR ...]   # the table

DATA is the reference data dir, SEPDIR holds ``<source>.scp`` of the estimates (what
``sepkit.bin.separate_data`` writes). Unlike ``sepkit.bin.score`` (mono), the references are kept with
their channels (MUSDB18: stereo at 44.1 kHz) and each estimate must have the same channel count
(``--mono true`` downmixes both instead); estimates are resampled to the references' rate.

Metric (:mod:`sepkit.metrics_v4`): BSS eval v4 *images* SDR / ISR / SIR / SAR with time-invariant
512-tap distortion filters fitted on the whole track, evaluated on ``--win`` s windows every ``--hop`` s
(1 / 1), windows with a silent reference or estimate left out; per track the median over windows,
over the set the median over tracks (``result_v4.json``: ``{"<src>": {"sdr", "isr", "sir", "sar"},
"n_tracks", "metric"}``), one entry per source of DATA's ``sources`` file, whatever their number.
Numbers are directly comparable with museval's ``EvalStore`` medians. With two sources or more,
``result_v4.json`` also holds ``"mean over sources"``: each metric's mean over the sources of those
medians (SiSEC 2018's one-figure summary of a 4-stem system; ``null`` when a source's median is
undefined). The key holds spaces, so no source can take it.

BSS eval v4 takes the estimates in the given order (no permutation search). Beside it, each track gets a
flag ``order_is_best`` (last column of ``per_track_v4.csv``): 1 when the given order is the best
permutation by mean SI-SDR over the sources (channels concatenated; the criterion of
``sepkit.bin.score``), and ``result_v4.json`` the fraction of such tracks, ``order_is_best_fraction``:
for the DC head, how often its cluster naming is right.

The estimates in SEPDIR must be of DATA's sources: when SEPDIR has a ``sources`` file (every
separation of ``sepkit.bin.separate_data`` has) that lists other sources, scoring is refused in one
line naming both files, before anything is written.
"""
import argparse
import csv
import io
import json
import logging
import math
import sys
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from sepkit.audio import AudioError, atomic_path, resample
from sepkit.bin.score import read_estimates, str2bool
from sepkit.data.datadir import DataDir, DataDirError, load_audio
from sepkit.metrics import best_permutation
from sepkit.metrics_v4 import METRICS_V4, aggregate_v4, bss_eval_v4, track_medians

logger = logging.getLogger("sepkit.bin.score_v4")

METRIC_NAME = "BSS eval v4 images, 1 s windows and hops, median over frames then median over tracks"
MEAN_KEY = "mean over sources"  # result_v4.json: SiSEC mean over the sources (spaces: never a source name)


def get_parser():
    parser = argparse.ArgumentParser(prog="python -m sepkit.bin.score_v4", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--show", action="store_true", help="print the table of */score_*/result_v4.json")
    parser.add_argument("--out", default="", help="with --show: also write the table to this Markdown file")
    parser.add_argument("--nj", type=int, default=1, help="parallel scoring processes (1)")
    parser.add_argument("--win", type=float, default=1.0, help="evaluation window in seconds (1.0)")
    parser.add_argument("--hop", type=float, default=1.0, help="hop between windows in seconds (1.0)")
    parser.add_argument("--mono", type=str2bool, default=False, help="downmix references and estimates (false)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result_v4.json")
    parser.add_argument("paths", nargs="+", help="DATA SEPDIR OUTDIR, or with --show: EXPDIR ...")
    return parser


class ScoreError(Exception):
    """A track that cannot be scored; the message names it."""


def v4_track(ref, est, sample_rate, win=1.0, hop=1.0):
    """Per-track v4 medians of ``(S, C, N)`` references / estimates: ``{metric: [S floats], "frames": n}``."""
    ref = np.asarray(ref, dtype=np.float64).transpose(0, 2, 1)  # (S, C, N) -> (S, N, C)
    est = np.asarray(est, dtype=np.float64).transpose(0, 2, 1)
    frames = bss_eval_v4(ref, est, sample_rate, win=win, hop=hop)
    med = track_medians(frames)
    out = {m: [float(v) for v in med[m]] for m in METRICS_V4}
    out["frames"] = int(frames["sdr"].shape[1])
    return out


def _load(spec, what, sr=None):
    try:
        wav, rate = load_audio(spec)
    except AudioError as exc:
        raise ScoreError(f"{what}: {exc}") from None
    if sr is not None and rate != sr:
        wav = resample(wav, rate, sr)
    return wav.astype(np.float64), rate


def score_track(job):
    """``(utt, [ref specs], [est specs], win, hop, mono)`` -> ``(utt, v4_track dict)``."""
    utt, ref_specs, est_specs, win, hop, mono = job
    refs, sr = [], None
    for k, spec in enumerate(ref_specs):
        wav, rate = _load(spec, f"utterance {utt} reference {k}", sr)
        sr = sr or rate
        refs.append(wav)
    ests = [_load(spec, f"utterance {utt} estimate {k}", sr)[0] for k, spec in enumerate(est_specs)]
    if mono:
        refs = [r.mean(axis=0, keepdims=True) for r in refs]
        ests = [e.mean(axis=0, keepdims=True) for e in ests]
    for k, e in enumerate(ests):
        if e.shape[0] != refs[k].shape[0]:
            raise ScoreError(f"utterance {utt}: estimate {est_specs[k]} has {e.shape[0]} channel(s), the "
                             f"reference {refs[k].shape[0]} (use --mono true to score downmixes)")
    n = min(r.shape[1] for r in refs)
    ref = np.stack([r[:, :n] for r in refs])
    est = np.stack([e[:, :n] if e.shape[1] >= n else np.pad(e, ((0, 0), (0, n - e.shape[1]))) for e in ests])
    out = v4_track(ref, est, sr, win, hop)
    perm, _ = best_permutation(est.reshape(est.shape[0], -1), ref.reshape(ref.shape[0], -1))
    out["order_is_best"] = perm == list(range(len(perm)))
    return utt, out


def _num(v):
    v = float(v)
    return round(v, 4) if math.isfinite(v) else None


def summarize_v4(tracks, sources):
    """result_v4.json content from ``[(utt, v4_track dict)]``."""
    agg = aggregate_v4([{m: np.asarray(t[m], dtype=np.float64) for m in METRICS_V4} for _, t in tracks])
    out = {name: {m: _num(agg[m][c]) for m in METRICS_V4} for c, name in enumerate(sources)}
    if len(sources) > 1:
        out[MEAN_KEY] = {m: (None if any(out[s][m] is None for s in sources)
                             else _num(np.mean([out[s][m] for s in sources]))) for m in METRICS_V4}
    out["n_tracks"] = len(tracks)
    out["metric"] = METRIC_NAME
    if tracks and all("order_is_best" in t for _, t in tracks):
        out["order_is_best_fraction"] = round(sum(bool(t["order_is_best"]) for _, t in tracks) / len(tracks), 4)
    return out


def per_track_csv(tracks, sources):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    flags = bool(tracks) and all("order_is_best" in t for _, t in tracks)
    w.writerow(["utt", "frames"] + [f"{s}_{m}" for s in sources for m in METRICS_V4] + ["order_is_best"] * flags)
    for utt, t in tracks:
        cells = [utt, t["frames"]]
        for c in range(len(sources)):
            cells += ["" if _num(t[m][c]) is None else f"{t[m][c]:.4f}" for m in METRICS_V4]
        w.writerow(cells + ([int(t["order_is_best"])] if flags else []))
    return buf.getvalue()


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _limit_threads():
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # optional
        pass


_SHORT = {"vocals": "V", "accompaniment": "M"}  # column letters of the 2-source tables (V, M = music)
_COLS = ("sdr", "sir", "sar", "isr")


def _source_names(result):
    return [k for k, v in result.items() if k != MEAN_KEY and isinstance(v, dict)]


def show(expdirs, out):
    """Print (and optionally write) a Markdown table of every ``<EXPDIR>/<tag>/score_<set>_<head>/result_v4.json``:
    one table per list of sources (2-stem and 4-stem runs apart), SDR / SIR / SAR / ISR per source, then the
    mean over the sources (SiSEC) where there are several."""
    tables = {}  # tuple of sources -> rows
    for root in expdirs:
        root = Path(root)
        if not root.is_dir():
            raise SystemExit(f"score_v4: {root}: no such directory")
        for path in sorted(root.glob("*/score_*/result_v4.json")):
            try:
                r = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(r, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                raise SystemExit(f"score_v4: {path}: not a readable result_v4.json ({exc})") from None
            body = path.parent.name[len("score_"):]
            test_set, head = body.rsplit("_", 1) if "_" in body else (body, "")
            sources = tuple(_source_names(r))
            cells = [path.parent.parent.name, test_set, head]
            for src in sources + ((MEAN_KEY,) if len(sources) > 1 else ()):
                cells += ["-" if r.get(src, {}).get(m) is None else f"{r[src][m]:.2f}" for m in _COLS]
            tables.setdefault(sources, []).append("| " + " | ".join(cells + [str(r.get("n_tracks", "-"))]) + " |")
    if not tables:
        print(f"score_v4: no score_*/result_v4.json under {' '.join(map(str, expdirs))}")
        return 0
    lines = []
    for sources, rows in tables.items():
        labels = [_SHORT.get(s, s) for s in sources] + (["mean"] if len(sources) > 1 else [])
        head = ["exp", "set", "head"] + [f"{m.upper()} {label}" for label in labels for m in _COLS] + ["tracks"]
        if len(tables) > 1:
            lines += [f"Sources: {', '.join(sources)}", ""]
        lines += ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)] + rows + [""]
    print("\n".join(lines).rstrip("\n"))
    if out:
        legend = ("V = vocals, M = accompaniment; mean = the mean over the sources of their medians (SiSEC 2018's "
                  "one-figure summary).")
        _write(Path(out), "# BSS eval v4 (median over 1 s frames, then over tracks; dB)\n\n" + "\n".join(lines)
               + "\n" + legend + "\n")
    return 0


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.show:
        return show(args.paths, args.out)
    if len(args.paths) != 3:
        print("score_v4: expected DATA SEPDIR OUTDIR", file=sys.stderr)
        return 2
    if args.nj < 1 or args.win <= 0 or args.hop <= 0:
        print("score_v4: --nj, --win and --hop must be positive", file=sys.stderr)
        return 2
    data_dir, sepdir, outdir = (Path(p) for p in args.paths)
    if (outdir / "result_v4.json").exists() and not args.overwrite:
        print(f"score_v4: {outdir / 'result_v4.json'} exists (pass --overwrite to redo)", file=sys.stderr)
        return 1
    try:
        data = DataDir(data_dir)
        est_scps = read_estimates(data, sepdir)
    except DataDirError as exc:
        print(f"score_v4: {exc}", file=sys.stderr)
        return 1
    jobs = [(u, [data.source(s)[u] for s in data.sources], [est_scps[s][u] for s in data.sources],
             args.win, args.hop, args.mono) for u in data.utts]
    logger.info("BSS eval v4 of %d tracks of %s with %d process(es)", len(jobs), data.path, args.nj)
    from tqdm import tqdm

    try:
        if args.nj <= 1 or len(jobs) <= 1:
            tracks = [score_track(j) for j in tqdm(jobs, desc="bss eval v4", unit="track", disable=None)]
        else:
            ctx = get_context("fork") if sys.platform.startswith("linux") else get_context()
            with ctx.Pool(min(args.nj, len(jobs)), initializer=_limit_threads) as pool:
                tracks = list(tqdm(pool.imap(score_track, jobs), total=len(jobs), desc="bss eval v4", unit="track",
                                   disable=None))
    except ScoreError as exc:
        print(f"score_v4: {exc}", file=sys.stderr)
        return 1
    result = summarize_v4(tracks, data.sources)
    _write(outdir / "per_track_v4.csv", per_track_csv(tracks, data.sources))
    _write(outdir / "result_v4.json", json.dumps(result, indent=2) + "\n")
    for name in data.sources:
        r = result[name]
        logger.info("%-14s v4 median SDR %s  SIR %s  SAR %s  ISR %s", name, r["sdr"], r["sir"], r["sar"], r["isr"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
