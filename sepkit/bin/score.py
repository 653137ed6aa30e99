"""Score a separation dir against the references of a data dir (SI-SDRi and BSS eval v3).

Usage::

    python -m sepkit.bin.score [--nj 2] [--bss true] [--sample-rate 0] [--overwrite]
        data/test_remix exp/<tag>/separate_test_remix_mi exp/<tag>/score_test_remix_mi

DATA is the reference data dir (``wav.scp`` = mixture, ``<source>.scp`` per line of ``sources``);
SEPDIR holds the estimates as ``<source>.scp`` with the same utt ids (what
``python -m sepkit.bin.separate_data`` writes). Mixture, references and estimates are made mono
(mean of channels) and estimates are resampled to the reference rate; ``--sample-rate`` resamples
everything to one rate first (0 = the reference's own rate).

Written to OUTDIR (each file atomically):

* ``per_utt.csv``: one row per utterance: ``utt, seconds, perm`` and, per source,
  ``<src>_si_sdr, <src>_si_sdri, <src>_sdr, <src>_sir, <src>_sar, <src>_nsdr`` (dB; empty = undefined,
  e.g. a silent reference).
* ``result.json``: ``{"<src>": {"si_sdri", "gnsdr", "gsir", "gsar"}, ..., "n_files", "seconds"}``:
  length-weighted means over the files (best permutation per file, paper Tables 2-4; GNSDR / GSIR /
  GSAR as in MIREX, Table 1), ``n_files`` scored and ``seconds`` of scored audio. Undefined means
  are ``null``.

BSS eval costs ~0.6 s per 30 s file at 16 kHz: files are scored by a pool of ``--nj`` processes.
"""
import argparse
import csv
import io
import json
import logging
import math
import os
import sys
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from sepkit.audio import AudioError, atomic_path, resample
from sepkit.data.datadir import DataDir, DataDirError, load_audio, read_scp
from sepkit.metrics import aggregate, score_file

logger = logging.getLogger("sepkit.bin.score")

METRICS = ("si_sdr", "si_sdri", "sdr", "sir", "sar", "nsdr")
# result.json key -> per-file key aggregated (length-weighted mean)
SUMMARY = {"si_sdri": "si_sdri", "gnsdr": "nsdr", "gsir": "sir", "gsar": "sar"}


def str2bool(value):
    low = str(value).lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def get_parser():
    parser = argparse.ArgumentParser(prog="python -m sepkit.bin.score", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--nj", type=int, default=1, help="parallel scoring processes (1)")
    parser.add_argument("--bss", type=str2bool, default=True,
                        help="also compute BSS eval v3 SDR/SIR/SAR/NSDR (slow); false = SI-SDR only (true)")
    parser.add_argument("--sample-rate", type=int, default=0,
                        help="resample everything to this rate before scoring; 0 = reference rate (0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result.json")
    parser.add_argument("data", help="reference data dir")
    parser.add_argument("sepdir", help="separation dir with <source>.scp of the estimates")
    parser.add_argument("outdir", help="output dir (per_utt.csv, result.json)")
    return parser


def _mono(wav):
    """(C, N) -> (N,) float64 mean of channels."""
    return np.asarray(wav, dtype=np.float64).mean(axis=0)


def _load_mono(spec, sample_rate, what):
    try:
        wav, sr = load_audio(spec, sample_rate=sample_rate or None)
    except AudioError as exc:
        raise ScoreError(f"{what}: {exc}") from None
    return _mono(wav), sr


class ScoreError(Exception):
    """A file that cannot be scored; the message names it."""


def score_utt(job):
    """Score one utterance. ``job`` = (utt, mixture spec, [ref specs], [est specs], sample_rate, bss).

    Returns a dict: utt, seconds, perm, and per metric a list over reference sources.
    """
    utt, mix_spec, ref_specs, est_specs, sample_rate, bss = job
    mix, sr = _load_mono(mix_spec, sample_rate, f"utterance {utt} mixture")
    refs = []
    for k, spec in enumerate(ref_specs):
        ref, rsr = _load_mono(spec, sample_rate, f"utterance {utt} reference {k}")
        if rsr != sr:
            ref = resample(ref[None].astype(np.float32), rsr, sr)[0].astype(np.float64)
        refs.append(ref)
    ests = []
    for k, spec in enumerate(est_specs):
        est, esr = _load_mono(spec, sample_rate, f"utterance {utt} estimate {k}")
        if esr != sr:  # e.g. a separator that wrote at the model's rate
            est = resample(est[None].astype(np.float32), esr, sr)[0].astype(np.float64)
        ests.append(est)
    n = min([len(mix)] + [len(x) for x in refs + ests])
    if n == 0:
        raise ScoreError(f"utterance {utt}: empty audio")
    longest = max([len(mix)] + [len(x) for x in refs + ests])
    if longest - n > max(0.01 * longest, 0.05 * sr):
        raise ScoreError(f"utterance {utt}: mixture, references and estimates differ in length "
                         f"({n} vs {longest} samples at {sr} Hz)")
    ref = np.stack([x[:n] for x in refs])
    est = np.stack([x[:n] for x in ests])
    out = score_file(est, ref, mix[:n], bss=bss)
    row = {"utt": utt, "seconds": n / sr, "perm": list(map(int, out["perm"]))}
    for key in METRICS:
        if key in out:
            row[key] = [float(v) for v in np.asarray(out[key], dtype=np.float64)]
    return row


def _limit_threads():
    """One BLAS/OpenMP thread per pool worker: the pool is the parallelism."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # threadpoolctl is optional; scoring is correct without it
        pass


def run_jobs(jobs, nj):
    """Score all jobs, in a process pool when ``nj > 1``; results in job order."""
    from tqdm import tqdm

    if nj <= 1 or len(jobs) <= 1:
        return [score_utt(j) for j in tqdm(jobs, desc="score", unit="utt", disable=None)]
    ctx = get_context("fork") if sys.platform.startswith("linux") else get_context()
    with ctx.Pool(min(nj, len(jobs)), initializer=_limit_threads) as pool:
        return list(tqdm(pool.imap(score_utt, jobs), total=len(jobs), desc="score", unit="utt", disable=None))


def _num(v):
    """JSON/CSV-safe float: None for NaN/inf."""
    v = float(v)
    return round(v, 4) if math.isfinite(v) else None


def summarize(rows, sources):
    """result.json content: length-weighted means per source, n_files, seconds."""
    lengths = [r["seconds"] for r in rows]
    agg = aggregate(rows, lengths, keys=tuple(SUMMARY.values()))
    result = {}
    for c, name in enumerate(sources):
        result[name] = {key: (_num(agg[src_key][c]) if src_key in agg else None)
                        for key, src_key in SUMMARY.items()}
    result["n_files"] = len(rows)
    result["seconds"] = round(float(sum(lengths)), 3)
    return result


def per_utt_csv(rows, sources):
    """CSV text of the per-utterance scores."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["utt", "seconds", "perm"] + [f"{s}_{m}" for s in sources for m in METRICS])
    for r in rows:
        cells = [r["utt"], f"{r['seconds']:.3f}", " ".join(map(str, r["perm"]))]
        for c in range(len(sources)):
            for m in METRICS:
                v = _num(r[m][c]) if m in r else None
                cells.append("" if v is None else f"{v:.4f}")
        w.writerow(cells)
    return buf.getvalue()


def _write_text(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    outdir = Path(args.outdir)
    if (outdir / "result.json").exists() and not args.overwrite:
        print(f"score: {outdir / 'result.json'} exists (pass --overwrite to redo)", file=sys.stderr)
        return 1
    if args.nj < 1:
        print(f"score: --nj must be >= 1, got {args.nj}", file=sys.stderr)
        return 2
    try:
        data = DataDir(args.data)
        est_scps = {}
        for name in data.sources:
            path = Path(args.sepdir) / f"{name}.scp"
            if not path.is_file():
                raise DataDirError(f"{path}: no such file (estimates of source {name!r})")
            est_scps[name] = read_scp(path)
            missing = [u for u in data.utts if u not in est_scps[name]]
            if missing:
                raise DataDirError(f"{path}: {len(missing)} utterance(s) of {data.path}/wav.scp have no "
                                   f"estimate (e.g. {missing[0]})")
    except DataDirError as exc:
        print(f"score: {exc}", file=sys.stderr)
        return 1
    jobs = [(u, data.wav[u], [data.source(s)[u] for s in data.sources], [est_scps[s][u] for s in data.sources],
             args.sample_rate, args.bss) for u in data.utts]
    logger.info("scoring %d utterances of %s (sources: %s) with %d process(es)%s", len(jobs), data.path,
                " ".join(data.sources), args.nj, "" if args.bss else ", SI-SDR only")
    try:
        rows = run_jobs(jobs, args.nj)
    except ScoreError as exc:
        print(f"score: {exc}", file=sys.stderr)
        return 1
    result = summarize(rows, data.sources)
    outdir.mkdir(parents=True, exist_ok=True)
    _write_text(outdir / "per_utt.csv", per_utt_csv(rows, data.sources))
    _write_text(outdir / "result.json", json.dumps(result, indent=2) + "\n")
    for name in data.sources:
        r = result[name]
        logger.info("%-14s SI-SDRi %s dB  GNSDR %s  GSIR %s  GSAR %s", name, r["si_sdri"], r["gnsdr"], r["gsir"],
                    r["gsar"])
    logger.info("wrote %s (%d files, %.1f s of audio)", outdir / "result.json", result["n_files"], result["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
