"""bfloat16 vs float32 separation quality of one model on a data dir (SI-SDRi and GNSDR, per head).

Usage::

    python -m sepkit.bin.dtype_parity [--heads mi,dc] [--bf16 auto|native|emulated] [--max-utts 0]
        [--nj 2] [--tolerance 0.05] [--out parity.json] MODEL DATA

MODEL is an ``exp/<tag>`` dir or an exported model file; DATA a data dir (``wav.scp`` = mixture,
``<source>.scp`` = references). Every utterance is separated twice per head, by the float32 network
and by the bf16 one, and both are scored like ``python -m sepkit.bin.score`` (mono, best
permutation, SI-SDRi and BSS eval v3 NSDR; length-weighted means = SI-SDRi and GNSDR).

``--bf16``: ``native`` runs ``Separator(dtype="bfloat16")`` (autocast; needs CUDA or an AMX /
avx512_bf16 CPU), ``emulated`` the bit-level emulation of :mod:`sepkit.bf16` (any machine, slow:
seconds per clip), ``auto`` native where the hardware has it, else emulated.

Prints one table row per head and source (float32, bf16, difference) and the largest per-file
difference; with ``--tolerance T`` exits 1 when a set-level difference exceeds T dB.
"""
import argparse
import json
import logging
import os
import sys
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from sepkit.audio import AudioError, atomic_path
from sepkit.data.datadir import DataDir, DataDirError, load_audio
from sepkit.metrics import aggregate, score_file

logger = logging.getLogger("sepkit.bin.dtype_parity")
_STATE = {}


def get_parser():
    p = argparse.ArgumentParser(prog="python -m sepkit.bin.dtype_parity", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="exp/<tag> dir or exported model file")
    p.add_argument("data", help="data dir with wav.scp and one <source>.scp per source")
    p.add_argument("--heads", default="mi,dc", help="comma-separated heads to compare (those the model has)")
    p.add_argument("--bf16", choices=("auto", "native", "emulated"), default="auto")
    p.add_argument("--max-utts", type=int, default=0, help="first N utterances only; 0 = all")
    p.add_argument("--segment-frames", type=int, default=0, help="separation segment length; 0 = the model's")
    p.add_argument("--nj", type=int, default=1, help="parallel processes (one torch thread each)")
    p.add_argument("--tolerance", type=float, default=None, help="exit 1 if |bf16 - float32| > this (dB)")
    p.add_argument("--out", default=None, help="write the summary as JSON here")
    return p


def _separators(model, bf16, segment_frames):
    from sepkit.separate import SeparationError, Separator, resolve_dtype
    from sepkit.bf16 import emulate_bf16

    kw = {"segment_frames": segment_frames} if segment_frames else {}
    f32 = Separator.from_pretrained(model, dtype="float32", **kw)
    native = None
    if bf16 in ("auto", "native"):
        for device in (["cuda"] if _cuda() else []) + ["cpu"]:
            try:
                resolve_dtype("bfloat16", device)
                native = device
                break
            except SeparationError:
                continue
        if native is None and bf16 == "native":
            raise SystemExit("dtype_parity: no native bf16 here (no CUDA, no AMX/avx512_bf16 CPU): use --bf16 emulated")
    if native is not None:
        f32 = Separator.from_pretrained(model, device=native, dtype="float32", **kw)
        return f32, Separator.from_pretrained(model, device=native, dtype="bfloat16", **kw), f"native ({native})"
    return f32, emulate_bf16(Separator.from_pretrained(model, dtype="float32", **kw)), "emulated"


def _cuda():
    import torch

    return torch.cuda.is_available()


def _init(model, bf16, segment_frames, threads):
    import torch

    if threads:
        torch.set_num_threads(threads)
    _STATE["seps"] = _separators(model, bf16, segment_frames)


def _score_utt(job):
    utt, mix_spec, ref_specs, sources, heads = job
    f32, bf, _ = _STATE["seps"]
    mix, sr = load_audio(mix_spec)
    mix = mix.mean(0)
    refs = []
    for spec in ref_specs:
        r, rsr = load_audio(spec, sample_rate=sr)
        refs.append(r.mean(0))
    n = min([len(mix)] + [len(r) for r in refs])
    mix, ref = mix[:n], np.stack([r[:n] for r in refs])
    out = {"utt": utt, "seconds": n / sr}
    for head in heads:
        for name, sep in (("float32", f32), ("bfloat16", bf)):
            est = sep.separate(mix, sr, head=head)
            est = np.stack([est[s][:n] for s in sources])
            s = score_file(est, ref, mix, bss=True, permute=True)
            out[f"{head}/{name}"] = {"si_sdri": s["si_sdri"].tolist(), "nsdr": s["nsdr"].tolist()}
    return out


def run(args):
    data = DataDir(args.data)
    utts = data.utts[:args.max_utts] if args.max_utts > 0 else data.utts
    seps = _separators(args.model, args.bf16, args.segment_frames)
    f32, _, kind = seps
    heads = [h for h in args.heads.split(",") if h]
    missing = [h for h in heads if h not in f32.heads]
    if missing:
        raise SystemExit(f"dtype_parity: {args.model}: no {', '.join(missing)} head (heads: {', '.join(f32.heads)})")
    model_sources = list(f32.sources)
    if sorted(model_sources) != sorted(data.sources):
        raise SystemExit(f"dtype_parity: {args.data}: sources {data.sources} differ from the model's {model_sources}")
    jobs = [(u, data.wav[u], [data.source(s)[u] for s in model_sources], model_sources, heads) for u in utts]
    logger.info("%d utterances, heads %s, bf16 %s, %d job(s)", len(jobs), ",".join(heads), kind, args.nj)
    from tqdm import tqdm

    if args.nj > 1:
        ctx = get_context("spawn")
        with ctx.Pool(args.nj, initializer=_init, initargs=(args.model, args.bf16, args.segment_frames, 1)) as pool:
            rows = list(tqdm(pool.imap(_score_utt, jobs), total=len(jobs), desc="dtype_parity", unit="utt"))
    else:
        _STATE["seps"] = seps
        rows = [_score_utt(j) for j in tqdm(jobs, desc="dtype_parity", unit="utt")]
    lengths = [r["seconds"] for r in rows]
    summary = {"model": str(args.model), "data": str(args.data), "bf16": kind, "n_files": len(rows),
               "seconds": float(sum(lengths)), "heads": {}}
    worst = 0.0
    print(f"bf16 vs float32 on {args.data} ({len(rows)} files, {sum(lengths) / 60:.1f} min, bf16 {kind}); dB")
    print("| head | source | SI-SDRi f32 | SI-SDRi bf16 | diff | GNSDR f32 | GNSDR bf16 | diff | max per-file diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for head in heads:
        agg = {}
        for name in ("float32", "bfloat16"):
            per = [{k: np.asarray(v) for k, v in r[f"{head}/{name}"].items()} for r in rows]
            agg[name] = aggregate(per, lengths, keys=("si_sdri", "nsdr"))
        per_file = np.stack([np.abs(np.asarray(r[f"{head}/bfloat16"]["si_sdri"] + r[f"{head}/bfloat16"]["nsdr"])
                                    - np.asarray(r[f"{head}/float32"]["si_sdri"] + r[f"{head}/float32"]["nsdr"]))
                             for r in rows])
        summary["heads"][head] = {}
        for c, src in enumerate(model_sources):
            vals = {f"{m}_{name}": float(agg[name][m][c]) for m in ("si_sdri", "nsdr") for name in agg}
            d_si = vals["si_sdri_bfloat16"] - vals["si_sdri_float32"]
            d_ns = vals["nsdr_bfloat16"] - vals["nsdr_float32"]
            pf = float(np.nanmax(per_file[:, [c, c + len(model_sources)]]))
            worst = max(worst, abs(d_si), abs(d_ns))
            summary["heads"][head][src] = {**vals, "si_sdri_diff": d_si, "gnsdr_diff": d_ns, "max_file_diff": pf}
            print(f"| {head} | {src} | {vals['si_sdri_float32']:.3f} | {vals['si_sdri_bfloat16']:.3f} | {d_si:+.3f} "
                  f"| {vals['nsdr_float32']:.3f} | {vals['nsdr_bfloat16']:.3f} | {d_ns:+.3f} | {pf:.3f} |")
    summary["max_abs_diff"] = worst
    if args.out:
        with atomic_path(Path(args.out)) as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    if args.tolerance is not None and worst > args.tolerance:
        print(f"dtype_parity: largest set-level difference {worst:.3f} dB exceeds --tolerance {args.tolerance} dB",
              file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    logging.basicConfig(level=os.environ.get("SEPKIT_LOGLEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except (AudioError, DataDirError, FileNotFoundError, ValueError) as exc:
        print(f"dtype_parity: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
