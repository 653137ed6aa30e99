"""How much of each stem's high band a separation keeps: energy above a cutoff, estimate against reference.

Usage::

    python -m sepkit.bin.band_energy [--cutoff 8000] DATA SEPDIR OUT.json

DATA is the reference data dir (``<source>.scp``), SEPDIR a separation dir of its sources (what
``sepkit.bin.separate_data --finalize`` writes). For every utterance and source, the energy (sum over
channels of the power spectrum of the whole signal, one FFT per file) above ``--cutoff`` Hz (default 8 kHz,
a 16 kHz model's Nyquist frequency) of the estimate and of its reference:

* ``high_db``: ``10 log10(E_est_high / E_ref_high)``: 0 dB = as much high band as the reference; about
  -60 dB or less for a model-band separation (``--band model``: nothing above the cutoff);
* ``est_high_fraction``, ``ref_high_fraction``: the part of each signal's energy above the cutoff.

``OUT.json``: ``{"cutoff_hz", "n_tracks", "<source>": {those three, medians over the utterances}, "per_track":
{utt: {source: the same three}}}`` (``high_db`` is ``null`` where the reference has no energy above the cutoff;
the median is over the others). Estimates at another rate than their reference are resampled to it first.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from sepkit.audio import AudioError, atomic_path, resample
from sepkit.bin.score import read_estimates
from sepkit.data.datadir import DataDir, DataDirError, load_audio

logger = logging.getLogger("sepkit.bin.band_energy")
KEYS = ("high_db", "est_high_fraction", "ref_high_fraction")


def get_parser():
    parser = argparse.ArgumentParser(prog="python -m sepkit.bin.band_energy", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--cutoff", type=float, default=8000.0, help="lower edge (Hz) of the high band (8000)")
    parser.add_argument("data", help="reference data dir")
    parser.add_argument("sepdir", help="separation dir (<source>.scp of the estimates)")
    parser.add_argument("out", help="output JSON file")
    return parser


def band_energy(x, sr, cutoff):
    """``(C, N)`` signal at ``sr`` Hz -> ``(energy above cutoff, total energy)``, one-sided power spectrum
    summed over channels (Parseval: the total is ``N * sum(x ** 2)``)."""
    p = np.abs(np.fft.rfft(np.asarray(x, dtype=np.float64), axis=-1)) ** 2  # (C, N // 2 + 1)
    p[:, 1:(x.shape[-1] + 1) // 2] *= 2  # the negative frequencies (not DC, nor Nyquist for even N)
    freqs = np.fft.rfftfreq(x.shape[-1], 1.0 / sr)
    return float(p[:, freqs > cutoff].sum()), float(p.sum())


def track_row(ref, est, sr, cutoff):
    """References and estimates ``{source: (C, N)}`` at ``sr`` -> ``{source: {KEYS}}``."""
    row = {}
    for s, r in ref.items():
        (eh, et), (rh, rt) = band_energy(est[s], sr, cutoff), band_energy(r, sr, cutoff)
        row[s] = {"high_db": 10 * np.log10(max(eh, 1e-30) / rh) if rh > 0 else None,
                  "est_high_fraction": eh / et if et > 0 else 0.0, "ref_high_fraction": rh / rt if rt > 0 else 0.0}
    return row


def summarize(rows, sources, cutoff):
    """Per-track rows ``{utt: {source: {KEYS}}}`` -> the ``OUT.json`` dict (medians over tracks)."""
    out = {"cutoff_hz": cutoff, "n_tracks": len(rows)}
    for s in sources:
        out[s] = {}
        for k in KEYS:
            vals = [r[s][k] for r in rows.values() if r[s][k] is not None]
            out[s][k] = float(np.median(vals)) if vals else None
    out["per_track"] = rows
    return out


def _load(spec, what):
    try:
        return load_audio(spec)
    except AudioError as exc:
        raise DataDirError(f"{what}: {exc}") from None


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.cutoff > 0:
        print(f"band_energy: --cutoff must be a positive frequency, got {args.cutoff}", file=sys.stderr)
        return 2
    try:
        data = DataDir(args.data)
        est_scps = read_estimates(data, args.sepdir)
        rows = {}
        for utt in data.utts:
            ref, est, sr = {}, {}, None
            for s in data.sources:
                ref[s], sr = _load(data.source(s)[utt], f"utterance {utt}, reference {s}")
                e, esr = _load(est_scps[s][utt], f"utterance {utt}, estimate {s}")
                e = resample(e, esr, sr) if esr != sr else e
                n = min(e.shape[-1], ref[s].shape[-1])
                est[s], ref[s] = e[..., :n], ref[s][..., :n]
            if 2 * args.cutoff >= sr:
                raise DataDirError(f"utterance {utt}: --cutoff {args.cutoff:g} Hz is not below the Nyquist "
                                   f"frequency of its {sr} Hz references")
            rows[utt] = track_row(ref, est, sr, args.cutoff)
    except DataDirError as exc:
        print(f"band_energy: {exc}", file=sys.stderr)
        return 1
    result = summarize(rows, data.sources, args.cutoff)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for s in data.sources:
        logger.info("%s: above %g Hz, estimate vs reference %s dB (fraction %s vs %s), median of %d", s, args.cutoff,
                    result[s]["high_db"], result[s]["est_high_fraction"], result[s]["ref_high_fraction"], len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
