"""Score a separation dir against the references of a data dir (SI-SDRi and BSS eval v3).

Usage::

    python -m sepkit.bin.score [--nj 2] [--bss true] [--sample-rate 0] [--channels mono] [--overwrite]
        data/test_remix exp/<tag>/separate_test_remix_mi exp/<tag>/score_test_remix_mi

DATA is the reference data dir (``wav.scp`` = mixture, ``<source>.scp`` per line of ``sources``, any
number of sources); SEPDIR holds the estimates as ``<source>.scp`` with the same utt ids (what
``python -m sepkit.bin.separate_data`` writes). A SEPDIR whose ``sources`` file lists other sources than DATA's
(a separation by a model of other stems) is refused in one line naming both files. Mixture, references
and estimates are made mono (mean of channels: ``--channels mono``, the default, as in the paper and
MIREX) and estimates are resampled to the reference rate; ``--sample-rate`` resamples everything to one
rate first (0 = the reference's own rate). ``--channels each`` scores stereo (or any multichannel)
references as they are: every channel is scored as a signal of its own (mixture, references and
estimates need the same channels), the per-file scores are the means over channels, with one source
permutation per file (the best over all channels together); ``result.json`` then says ``"channels":
"each"``.

Written to OUTDIR (each file atomically):

* ``per_utt.csv``: one row per utterance: ``utt, seconds, perm`` and, per source,
  ``<src>_si_sdr, <src>_si_sdri, <src>_sdr, <src>_sir, <src>_sar, <src>_nsdr`` (dB; empty = undefined,
  e.g. a silent reference), then ``order_is_best``: 1 when the estimates' own order (the model's source
  order) is the best permutation, else 0.
* ``result.json``: ``{"<src>": {"si_sdri", "gnsdr", "gsir", "gsar"}, ..., "n_files", "seconds"}``:
  length-weighted means over the files (best permutation per file, paper Tables 2-4; GNSDR / GSIR /
  GSAR as in MIREX, Table 1), ``n_files`` scored and ``seconds`` of scored audio. Undefined means
  are ``null``. ``order_is_best_fraction``: the fraction of files whose given order is the best
  permutation (for the DC head: how often its cluster naming is right; for MI: how often the model
  would gain from swapping its outputs).

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
import warnings
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from sepkit.audio import AudioError, atomic_path, resample
from sepkit.data.datadir import DataDir, DataDirError, load_audio, read_scp, read_source_list
from sepkit.metrics import aggregate, best_permutation, score_file

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
    parser.add_argument("--channels", choices=("mono", "each"), default="mono",
                        help="mono: score mean-of-channels downmixes; each: score every channel on its own and "
                             "average (stereo references) (mono)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing result.json")
    parser.add_argument("data", help="reference data dir")
    parser.add_argument("sepdir", help="separation dir with <source>.scp of the estimates")
    parser.add_argument("outdir", help="output dir (per_utt.csv, result.json)")
    return parser


def _load(spec, sample_rate, what, channels="mono"):
    """``(x, sr)``: ``x`` (C, N) float64, the mean of the channels (C = 1) or, ``each``, every channel."""
    try:
        wav, sr = load_audio(spec, sample_rate=sample_rate or None)
    except AudioError as exc:
        raise ScoreError(f"{what}: {exc}") from None
    wav = np.asarray(wav, dtype=np.float64)
    return (wav.mean(axis=0, keepdims=True) if channels == "mono" else wav), sr


def _at_rate(x, sr, target):
    if sr == target:
        return x
    return resample(x.astype(np.float32), sr, target).astype(np.float64)


def _score_channels(est, ref, mix, bss):
    """Scores of (S, C, N) estimates against (S, C, N) references and a (C, N) mixture: per channel with
    one permutation (the best over the channels together), averaged over channels."""
    if ref.shape[1] == 1:
        return score_file(est[:, 0], ref[:, 0], mix[0], bss=bss)
    perm, _ = best_permutation(est.reshape(est.shape[0], -1), ref.reshape(ref.shape[0], -1))
    outs = [score_file(est[perm, c], ref[:, c], mix[c], bss=bss, permute=False) for c in range(ref.shape[1])]
    with warnings.catch_warnings():  # a channel silent in a reference is undefined there (NaN): left out
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {k: np.nanmean([o[k] for o in outs], axis=0) for k in outs[0] if k != "perm"}
    out["perm"] = perm
    return out


class ScoreError(Exception):
    """A file that cannot be scored; the message names it."""


def score_utt(job):
    """Score one utterance. ``job`` = (utt, mixture spec, [ref specs], [est specs], sample_rate, bss, channels).

    Returns a dict: utt, seconds, perm, and per metric a list over reference sources.
    """
    utt, mix_spec, ref_specs, est_specs, sample_rate, bss, channels = job
    mix, sr = _load(mix_spec, sample_rate, f"utterance {utt} mixture", channels)
    signals = [("mixture", mix)]
    for kind, specs in (("reference", ref_specs), ("estimate", est_specs)):
        for k, spec in enumerate(specs):  # estimates may come at another rate (e.g. the model's)
            x, xsr = _load(spec, sample_rate, f"utterance {utt} {kind} {k}", channels)
            signals.append((f"{kind} {k}", _at_rate(x, xsr, sr)))
    for name, x in signals:
        if x.shape[0] != mix.shape[0]:
            raise ScoreError(f"utterance {utt}: {name} has {x.shape[0]} channel(s), the mixture {mix.shape[0]}: "
                             "--channels each needs the same channels everywhere (or --channels mono)")
    n = min(x.shape[1] for _, x in signals)
    if n == 0:
        raise ScoreError(f"utterance {utt}: empty audio")
    longest = max(x.shape[1] for _, x in signals)
    if longest - n > max(0.01 * longest, 0.05 * sr):
        raise ScoreError(f"utterance {utt}: mixture, references and estimates differ in length "
                         f"({n} vs {longest} samples at {sr} Hz)")
    ref = np.stack([x[:, :n] for _, x in signals[1:1 + len(ref_specs)]])
    est = np.stack([x[:, :n] for _, x in signals[1 + len(ref_specs):]])
    out = _score_channels(est, ref, mix[:, :n], bss)
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


def summarize(rows, sources, channels="mono"):
    """result.json content: length-weighted means per source, n_files, seconds (and ``channels``
    when every channel was scored on its own)."""
    lengths = [r["seconds"] for r in rows]
    agg = aggregate(rows, lengths, keys=tuple(SUMMARY.values()))
    result = {}
    for c, name in enumerate(sources):
        result[name] = {key: (_num(agg[src_key][c]) if src_key in agg else None)
                        for key, src_key in SUMMARY.items()}
    result["n_files"] = len(rows)
    result["seconds"] = round(float(sum(lengths)), 3)
    result["order_is_best_fraction"] = round(sum(map(order_is_best, rows)) / len(rows), 4) if rows else None
    if channels != "mono":
        result["channels"] = channels
    return result


def order_is_best(row):
    """True when a row's best permutation (``perm``: estimate index per reference source) is the given order."""
    return list(row["perm"]) == list(range(len(row["perm"])))


def per_utt_csv(rows, sources):
    """CSV text of the per-utterance scores."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["utt", "seconds", "perm"] + [f"{s}_{m}" for s in sources for m in METRICS] + ["order_is_best"])
    for r in rows:
        cells = [r["utt"], f"{r['seconds']:.3f}", " ".join(map(str, r["perm"]))]
        for c in range(len(sources)):
            for m in METRICS:
                v = _num(r[m][c]) if m in r else None
                cells.append("" if v is None else f"{v:.4f}")
        w.writerow(cells + [int(order_is_best(r))])
    return buf.getvalue()


def read_estimates(data, sepdir):
    """``{source: {utt: estimate spec}}`` of ``sepdir`` for every source and utterance of the data dir ``data``.

    A separation dir that names its sources (``sepdir/sources``, written by ``sepkit.bin.separate_data``)
    must name those of ``data``, in any order: a model of other sources (2 vs 4 stems) is refused in one line
    naming both files. Raises :class:`DataDirError`."""
    sepdir = Path(sepdir)
    if (sepdir / "sources").is_file():
        theirs = read_source_list(sepdir / "sources")
        if sorted(theirs) != sorted(data.sources):
            raise DataDirError(f"{sepdir / 'sources'}: the estimates are of {' '.join(theirs)}, but "
                               f"{data.path / 'sources'} lists {' '.join(data.sources)}; score a separation of "
                               "this data dir by a model of these sources")
    est_scps = {}
    for name in data.sources:
        path = sepdir / f"{name}.scp"
        if not path.is_file():
            raise DataDirError(f"{path}: no such file (estimates of source {name!r})")
        est_scps[name] = read_scp(path)
        missing = [u for u in data.utts if u not in est_scps[name]]
        if missing:
            raise DataDirError(f"{path}: {len(missing)} utterance(s) of {data.path}/wav.scp have no "
                               f"estimate (e.g. {missing[0]})")
    return est_scps


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
        est_scps = read_estimates(data, args.sepdir)
    except DataDirError as exc:
        print(f"score: {exc}", file=sys.stderr)
        return 1
    jobs = [(u, data.wav[u], [data.source(s)[u] for s in data.sources], [est_scps[s][u] for s in data.sources],
             args.sample_rate, args.bss, args.channels) for u in data.utts]
    logger.info("scoring %d utterances of %s (sources: %s) with %d process(es)%s; %s", len(jobs), data.path,
                " ".join(data.sources), args.nj, "" if args.bss else ", SI-SDR only",
                "mono downmixes" if args.channels == "mono" else "every channel on its own")
    try:
        rows = run_jobs(jobs, args.nj)
    except ScoreError as exc:
        print(f"score: {exc}", file=sys.stderr)
        return 1
    result = summarize(rows, data.sources, args.channels)
    outdir.mkdir(parents=True, exist_ok=True)
    _write_text(outdir / "per_utt.csv", per_utt_csv(rows, data.sources))
    _write_text(outdir / "result.json", json.dumps(result, indent=2) + "\n")
    for name in data.sources:
        r = result[name]
        logger.info("%-14s SI-SDRi %s dB  GNSDR %s  GSIR %s  GSAR %s", name, r["si_sdri"], r["gnsdr"], r["gsir"],
                    r["gsar"])
    logger.info("given order = best permutation in %d of %d files", sum(map(order_is_best, rows)), len(rows))
    logger.info("wrote %s (%d files, %.1f s of audio)", outdir / "result.json", result["n_files"], result["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
