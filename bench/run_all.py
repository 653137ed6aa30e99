#!/usr/bin/env python
"""All of sepkit's benchmarks in one run, each beside a plain baseline measured in the same process.

    tools/venv/bin/python bench/run_all.py [--threads 2] [--markdown bench/RESULTS.md] [--quick]
    make bench

Rows (times are medians; the baseline runs interleaved with sepkit's code so both see the same load):

* feature extraction, seconds per hour of audio: ``python -m sepkit.bin.compute_feats`` (in-process)
  on a 44.1 kHz stereo data dir (mixture + 2 sources) vs plain soundfile + librosa (soxr resample,
  ``librosa.stft``, mel filterbank) + kaldiio writing the same three matrices per utterance.
* loader vs training step, seconds per 1000 frames: ``SegmentDataset`` + ``DataLoader`` (0 workers)
  vs one paper-network training step (bench/bench_loader.py); target ratio <= 0.2 (loader >= 5x).
* training step, DC loss, k-means: bench/bench_core.py (paper net vs nn.LSTM reference; low-rank
  dc_loss vs Gram products; torch k-means vs scikit-learn).
* separation, seconds per minute of audio, per head and dtype: ``Separator.separate`` end to end
  on 60 s of 44.1 kHz stereo with the paper-size network (random weights) vs the bare batched
  float32 forward of a plain nn.LSTM reference over the same segments (bench/bench_separate.py).
  The real-time factor (seconds per second of audio) is the sepkit column / 60; target MI bf16
  <= 0.015. A dtype the hardware cannot run (bf16 without AMX/avx512_bf16 or CUDA) is shown n/a.
* onnxruntime vs torch, seconds per minute of audio, per head: ``Separator.separate`` on one 60-s song with the
  MIR-1K recipe's CPU network size (random weights), the network run by onnxruntime (``sepkit-export --onnx``)
  and by torch bfloat16 (where the CPU runs it) vs torch float32; the note holds the SNR of the outputs
  against torch float32's, >= 40 dB wanted (bench/bench_onnx.py).
* end to end vs bare network (issue 22.4), per head and dtype: ``Separator.separate_file`` (``sepkit-separate``)
  on a 60-s 44.1 kHz stereo file vs the model's own forward over the same segments, 3 x 300 BLSTM on the paper's
  features, target <= 1.15 (bench/bench_e2e.py, which also has ``--profile``).
* online on one core (issue 22): compute per second of audio of the live configurations (causal lookahead 0 and
  3, ``OnlineSeparator``, 32-ms blocks of 44.1 kHz stereo) vs the offline BLSTM's whole-signal separation on the
  same pinned core; latency in the note (bench/bench_online.py has every block size and p99s).
* scoring, seconds per file (30 s, 16 kHz, 2 sources): ``python -m sepkit.bin.score --nj N`` (SI-SDR +
  BSS eval v3) vs a single-process loop of mir_eval ``bss_eval_sources`` + SI-SDR; and scoring vs
  separating the same 30 s file (MI head, auto dtype): target <= 1.
"""
import argparse
import contextlib
import datetime
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_core  # noqa: E402
import bench_loader  # noqa: E402
import bench_onnx  # noqa: E402
import bench_e2e  # noqa: E402
import bench_online  # noqa: E402
import bench_separate  # noqa: E402
from common import setup_threads, timeit  # noqa: E402

ROWS = []  # (operation, sepkit, baseline, unit, target, note)


def row(op, ours, base, unit, target=None, note=""):
    ROWS.append((op, ours, base, unit, target, note))
    r = "" if ours is None or base is None else f"{ours / base:.2f}"
    print(f"  {op}: sepkit {_fmt(ours)} {unit}, baseline {_fmt(base)} {unit}, ratio {r} {note}", flush=True)


def _fmt(v):
    return "n/a" if v is None else (f"{v:.4f}" if v < 1 else f"{v:.2f}")


def quiet(fn, *args, **kwargs):
    """Run fn with its stdout captured (the bench modules print their own lines)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        return fn(*args, **kwargs)


def capture_report(module, fn):
    """Call a bench function that ends in ``report(name, ours, base, target)``; return (ours, base)."""
    got = {}
    orig = module.report

    def rec(name, ours, base, target=None, unit="s"):
        got.update(ours=ours, base=base)
        return ours / base

    module.report = rec
    try:
        quiet(fn)
    finally:
        module.report = orig
    return got["ours"], got["base"]


# ------------------------------------------------------------------------------------- features
def _write_corpus(root, n_utts, seconds, sr=44100):
    import soundfile as sf

    from sepkit.data.datadir import DataDir

    rng = np.random.default_rng(0)
    wav, voc, acc = {}, {}, {}
    for i in range(n_utts):
        u = f"utt{i:02d}"
        t = np.arange(int(seconds * sr)) / sr
        v = (0.2 * np.sin(2 * np.pi * 220 * t)[:, None] * np.ones(2)).astype(np.float32)
        a = (0.05 * rng.standard_normal((len(t), 2))).astype(np.float32)
        for d, name, x in ((voc, "vocals", v), (acc, "accompaniment", a), (wav, "mixture", v + a)):
            p = root / "audio" / f"{u}_{name}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, x, sr, subtype="FLOAT")
            d[u] = str(p)
    return DataDir.create(root / "data", wav, {"vocals": voc, "accompaniment": acc})


def bench_features(tmp, n_utts, seconds):
    import kaldiio
    import librosa
    import soundfile as sf
    import yaml

    from sepkit.bin import compute_feats
    from sepkit.frontend import FeatureConfig

    data = _write_corpus(tmp, n_utts, seconds)
    fc = FeatureConfig()
    (tmp / "feats.yaml").write_text(yaml.safe_dump(fc.to_dict()))
    melfb = librosa.filters.mel(sr=fc.sample_rate, n_fft=fc.n_fft, n_mels=fc.n_mels, fmin=fc.fmin,
                                fmax=fc.fmax or fc.sample_rate / 2)
    runs = iter(range(1000))

    def ours():
        out = tmp / f"dump{next(runs)}"
        rc = compute_feats.main(["--feat-conf", str(tmp / "feats.yaml"), "--num-threads", "1",
                                 str(data.path), str(out)])
        assert not rc, rc

    def base():
        out = tmp / f"ref{next(runs)}"
        out.mkdir()
        ws = {n: kaldiio.WriteHelper(f"ark,scp:{out}/{n}.ark,{out}/{n}.scp") for n in ("mix", "vocals", "accompaniment")}
        for u in data.utts:
            for n, spec in (("mix", data.wav[u]), ("vocals", data.source("vocals")[u]),
                            ("accompaniment", data.source("accompaniment")[u])):
                x, sr = sf.read(spec, dtype="float32")
                y = librosa.resample(x.mean(1), orig_sr=sr, target_sr=fc.sample_rate, res_type="soxr_hq")
                mag = np.abs(librosa.stft(y, n_fft=fc.n_fft, hop_length=fc.hop_length))
                ws[n](u, (melfb @ mag).T.astype(np.float32))
        for w in ws.values():
            w.close()

    import logging
    logging.disable(logging.INFO)
    o, b = [], []
    for _ in range(2):
        o.append(timeit(ours, repeat=1, warmup=0))
        b.append(timeit(base, repeat=1, warmup=0 if b else 1))
    logging.disable(logging.NOTSET)
    per_hour = 3600.0 / (n_utts * seconds)
    row("feature extraction (mix + 2 sources, 44.1k stereo in)", min(o) * per_hour, min(b) * per_hour,
        "s/h audio", 1.0, "vs librosa+kaldiio")


# ------------------------------------------------------------------------------------- loader
def bench_loader_vs_step(tmp, batches):
    from sepkit.data.dataset import SegmentDataset, collate
    from sepkit.frontend import CMVN, FeatureConfig

    fc = FeatureConfig()
    bench_loader.make_dump(tmp / "loader", 20, 3751, fc)
    ds = SegmentDataset(tmp / "loader", 100, cmvn=CMVN(np.zeros(fc.input_dim), np.ones(fc.input_dim)), train=True)
    load = bench_loader.loader_rate(ds, batches, 0, 8)
    step = bench_loader.step_rate(collate([ds[i] for i in range(8)]), 3)
    row("data loader vs training step (paper net, B=8 T=100)", 1000 / load, 1000 / step, "s/1k frames", 0.2,
        f"loader {load / step:.0f}x the step's rate")


# ------------------------------------------------------------------------------------- core
def bench_core_rows():
    o, b = capture_report(bench_core, bench_core.bench_step)
    row("training step, paper net B=8 T=100", o, b, "s", 1.05, "vs nn.LSTM reference")
    o, b = capture_report(bench_core, bench_core.bench_dc)
    row("DC loss fwd+bwd B=8 T=500 F=150", o, b, "s", 1.0, "vs Gram products")
    o, b = capture_report(bench_core, bench_core.bench_kmeans)
    row("k-means 500k x 20, k=2", o, b, "s", 1.0, "vs scikit-learn")


# ------------------------------------------------------------------------------------- separation
def _sep_supported(dtype):
    from sepkit.separate import SeparationError, resolve_dtype

    try:
        return resolve_dtype(dtype, "cpu") is not None or dtype == "float32"
    except SeparationError:
        return False


def bench_separation(repeat):
    from sepkit import Separator
    from sepkit.separate import DEFAULT_BATCH

    sr, dur = 44100, 60.0
    wav = (np.random.default_rng(0).standard_normal((2, int(sr * dur))) * 0.1).astype(np.float32)
    d = bench_separate.model_dict()
    base_sep = Separator(d, dtype="float32")
    ref = bench_separate.PlainRef(base_sep.model).eval()
    n_seg = -(-base_sep.frontend.num_frames(int(16000 * dur)) // 100)
    feats = torch.randn(n_seg, 100, base_sep.frontend.config.input_dim)

    def bare(head):
        with torch.inference_mode():
            for i in range(0, n_seg, DEFAULT_BATCH):
                ref(feats[i:i + DEFAULT_BATCH], head)

    rtf = {}
    for dtype in ("float32", "bfloat16"):
        if not _sep_supported(dtype):
            for head in ("mi", "dc"):
                row(f"separation 60 s, {head.upper()} head, {dtype}", None, None, "s/min audio",
                    0.9 if head == "mi" else None, "no native bf16 LSTM on this CPU (oneDNN); auto = float32")
            continue
        sep = base_sep if dtype == "float32" else Separator(d, dtype=dtype)
        sep.separate(wav[:, :sr], sr)  # warm-up
        for head in ("mi", "dc"):
            (ours, _), (base, _) = bench_separate.interleaved([lambda: sep.separate(wav, sr, head=head),
                                                               lambda: bare(head)], repeat)
            rtf[(head, dtype)] = ours / dur
            target = (0.015 * 60 if (head, dtype) == ("mi", "bfloat16") else None)
            row(f"separation 60 s, {head.upper()} head, {dtype}", ours, base, "s/min audio",
                {"mi": 1.2, "dc": 1.5}[head] if dtype == "float32" else None,
                f"RTF {ours / dur:.4f} (bare f32 forward {base / dur:.4f})"
                + (f"; target RTF <= 0.015: {'OK' if ours <= target else 'MISSED'}" if target else ""))
    return rtf


# ------------------------------------------------------------------------------------- onnxruntime
def bench_onnx_rows(repeat):
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        row("onnxruntime vs torch float32, 60 s", None, None, "s/min audio", None, "onnxruntime not installed")
        return
    res = bench_onnx.run(60.0, repeat, torch.get_num_threads(), quiet=True)
    base = {r[2]: r[3] for r in res["rows"] if r[:2] == ("torch", "float32")}
    for backend, dtype, head, wall, _, snr, _ in res["rows"]:
        if (backend, dtype) == ("torch", "float32"):
            continue
        note = ("no native bf16 on this CPU" if wall is None else
                f"RTF {wall / 60:.4f} vs {base[head] / 60:.4f}; SNR vs torch f32 {snr:.1f} dB")
        row(f"separation 60 s, {head.upper()} head, {backend} {dtype} vs torch float32 (recipe net)",
            None if wall is None else wall, None if wall is None else base[head], "s/min audio", None, note)


# ------------------------------------------------------------------------------------- end to end, online
def bench_e2e_rows(repeat, threads):
    """Issue 22.4: sepkit-separate's path vs the bare network (bench/bench_e2e.py), per head and dtype."""
    res = quiet(bench_e2e.main, ["--threads", str(threads), "--repeat", str(max(repeat, 3))])
    for n, head, dtype, b, e_serial, e, bc, ec_serial, ec, load in res:  # e: the pipelined path (the default)
        row(f"end to end vs bare network, 60 s, {head.upper()} head, {dtype} (3x300)", e, b, "s", bench_e2e.TARGET,
            f"pipelined; CPU-time ratio {ec / bc:.2f}; serial {e_serial / b:.2f} (CPU {ec_serial / bc:.2f}); "
            f"{n} thread(s); load {load:.1f}")


def bench_online_rows(repeat):
    """Issue 22: live separation on one core (bench/bench_online.py), the causal default and lookahead 3 at
    32 ms blocks vs the offline BLSTM's whole-signal compute on the same core."""
    res = quiet(bench_online.main, ["--repeat", str(max(repeat, 1)), "--blocks-ms", "32", "--dtypes", "float32"])
    base = next(r for r in res if not r["online"])
    for r in res:
        if r["online"]:
            ok = ("ok" if r["latency_ms"] <= bench_online.LATENCY_MS and r["rtf_cpu"] <= bench_online.RTF else
                  "MISSED") if r["default"] else ""
            row(f"online, {r['label']}, 32 ms blocks, 1 core (compute per s of audio)", r["rtf_cpu"], base["rtf_cpu"],
                "s/s", None, f"algorithmic latency {r['latency_ms']:.0f} ms, separator delay at 44.1k "
                f"{r['delay_ms']:.0f} ms; baseline = offline BLSTM whole signal" +
                (f"; target latency <= 64 ms, RTF <= 0.1: {ok}" if ok else ""))


# ------------------------------------------------------------------------------------- scoring
def bench_scoring(tmp, n_files, seconds, nj, sep_rtf=None):
    import logging

    import soundfile as sf
    from mir_eval.separation import bss_eval_sources

    from sepkit import Separator
    from sepkit.bin import score
    from sepkit.data.datadir import DataDir, write_scp

    sr, rng = 16000, np.random.default_rng(1)
    n = int(sr * seconds)
    wav, refs, ests = {}, {"vocals": {}, "accompaniment": {}}, {"vocals": {}, "accompaniment": {}}
    arrays = []
    for i in range(n_files):
        u = f"utt{i:02d}"
        t = np.arange(n) / sr
        v = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
        a = 0.1 * rng.standard_normal(n)
        ev, ea = v + 0.1 * a, a + 0.1 * v
        for d, name, x in ((wav, "mix", v + a), (refs["vocals"], "vocals", v), (refs["accompaniment"], "acc", a),
                           (ests["vocals"], "est_v", ev), (ests["accompaniment"], "est_a", ea)):
            p = tmp / "score" / f"{u}_{name}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, x.astype(np.float32), sr, subtype="FLOAT")
            d[u] = str(p)
        arrays.append((u, v + a, np.stack([v, a]), np.stack([ev, ea])))
    DataDir.create(tmp / "score" / "data", wav, refs)
    sepdir = tmp / "score" / "sep"
    sepdir.mkdir()
    for name, m in ests.items():
        write_scp(sepdir / f"{name}.scp", m)
    runs = iter(range(1000))

    def ours():
        assert not score.main(["--nj", str(nj), str(tmp / "score" / "data"), str(sepdir),
                               str(tmp / "score" / f"out{next(runs)}")])

    def base():
        for _, mix, ref, est in arrays:
            bss_eval_sources(ref, est, compute_permutation=False)  # the order comes from SI-SDR, as in sepkit
            bss_eval_sources(ref, np.stack([mix, mix]), compute_permutation=False)  # the mixture's SDR for NSDR
            for e, r in zip(est, ref):  # SI-SDR, per source
                a = (e @ r) / (r @ r)
                10 * np.log10(np.sum((a * r) ** 2) / np.sum((a * r - e) ** 2))

    logging.disable(logging.WARNING)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        o = timeit(ours, repeat=1, warmup=0)
        b = timeit(base, repeat=1, warmup=0)
    logging.disable(logging.NOTSET)
    row(f"scoring, BSS eval v3 + SI-SDR, {seconds:.0f} s file (--nj {nj})", o / n_files, b / n_files, "s/file",
        1.0, "vs 1-process mir_eval loop")
    if sep_rtf is None:  # no separation row in this run: time one file here
        sep = Separator(bench_separate.model_dict())
        x = (rng.standard_normal(n) * 0.1).astype(np.float32)
        sep.separate(x[:sr], sr)
        sep_rtf = timeit(lambda: sep.separate(x, sr, head="mi"), repeat=1, warmup=0) / seconds
    t_sep = sep_rtf * seconds
    row(f"scoring vs separating one {seconds:.0f} s file (MI, paper net, fastest dtype)", o / n_files, t_sep, "s/file", 1.0,
        "scoring must not be slower than separation")


# ------------------------------------------------------------------------------------- table
def machine():
    try:
        model = [ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                 .stdout.splitlines() if ln.startswith("Model name")][0]
    except (OSError, IndexError):
        model = platform.processor() or "unknown CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average {load:.1f} at start")


def table():
    lines = ["| operation | sepkit | baseline | ratio | target | note |", "|---|---|---|---|---|---|"]
    for op, ours, base, unit, target, note in ROWS:
        ratio = "n/a" if ours is None or base is None else f"{ours / base:.2f}"
        verdict = ""
        if target is not None and ours is not None and base is not None:
            verdict = " ok" if ours / base <= target else " MISSED"
        lines.append(f"| {op} | {_fmt(ours)} {unit} | {_fmt(base)} {unit} | {ratio} | "
                     f"{'' if target is None else f'<= {target}'}{verdict} | {note} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1, help="timing rounds of the separation rows")
    p.add_argument("--nj", type=int, default=2, help="scoring jobs")
    p.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run, numbers noisier)")
    p.add_argument("--markdown", help="also write the table with the machine and date to this file")
    p.add_argument("--only", default="feats,loader,core,separate,onnx,e2e,online,score")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    what = set(args.only.split(","))
    info = machine()
    t0 = time.perf_counter()
    print(info, flush=True)
    with tempfile.TemporaryDirectory(prefix="sepkit_bench.") as tmp:
        tmp = Path(tmp)
        if "feats" in what:
            bench_features(tmp, 2, 15.0 if args.quick else 30.0)
        if "loader" in what:
            bench_loader_vs_step(tmp, 30 if args.quick else 60)
        if "core" in what:
            bench_core_rows()
        if "separate" in what:
            rtf = bench_separation(1 if args.quick else args.repeat)
            sep_rtf = rtf.get(("mi", "bfloat16"), rtf.get(("mi", "float32")))
        else:
            sep_rtf = None
        if "onnx" in what:
            bench_onnx_rows(max(1 if args.quick else args.repeat, 1))
        if "e2e" in what:
            bench_e2e_rows(1 if args.quick else args.repeat, args.threads)
        if "online" in what:
            bench_online_rows(1 if args.quick else args.repeat)
        if "score" in what:
            bench_scoring(tmp, 2, 30.0, args.nj, sep_rtf)
    elapsed = time.perf_counter() - t0
    out = table()
    print()
    print(out)
    print(f"\n{info}; total {elapsed:.0f} s", flush=True)
    if args.markdown:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        Path(args.markdown).write_text(f"# Benchmark table (bench/run_all.py)\n\n{stamp}; {info}; run took "
                                       f"{elapsed:.0f} s.\n\n{out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
