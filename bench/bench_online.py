#!/usr/bin/env python
"""Live separation on one CPU core (issue 22): latency and compute per block of each low-latency network.

    tools/venv/bin/python bench/bench_online.py [--seconds 20] [--repeat 3] [--blocks-ms 8,16,32,64] [--core 0]

Configurations: the MIR-1K recipe's live configurations (egs/mir1k/chimera/conf/tuning/
train_chimera_cpu_causal.yaml: 3 x 256 LSTM, lookahead 0; train_chimera_cpu_lookahead3.yaml: lookahead 3;
their features conf/feats_causal.yaml, no deltas) run by :class:`sepkit.online.OnlineSeparator`
(``Separator.online``) on a live stream of 44.1 kHz stereo blocks of ``--blocks-ms`` (resampled to 16 kHz and
back inside, as a sound card's stream would be), and, side by side, the offline default
(train_chimera_cpu_w1024_drop.yaml: 3 x 300 BLSTM on 16k-1024-256-mel200 + deltas), which cannot run online:
its ``Separator.separate`` of the whole signal on the same core. Random weights (the time does not depend on
them), MI head, float32 and, where the CPU has native bf16 (``--dtype auto``), bfloat16 too.

One core: ``torch.set_num_threads(1)`` and the process pinned to one core (``os.sched_setaffinity``).
Columns: algorithmic latency = window + hop + lookahead x hop (the configurations' headers), and the
separator's own fixed delay (``latency_samples`` at 44.1 kHz: window - 1 sample + lookahead, plus the two
resamplers' lag), both in ms; a block also waits for its own samples (+ block). Compute: wall time of each
``process`` call (``OnlineSeparator.block_seconds``) and CPU time of the calling thread (all of the compute
with one torch thread; on a loaded machine wall time also counts the time the core served others), per second
of audio (= RTF), mean and p99 per block. Targets: causal default latency <= 64 ms, RTF (CPU) <= 0.1. The configurations run interleaved round by round
(the load of a shared machine falls on all of them alike); RTF = median over rounds, mean / p99 over the
blocks of all rounds.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_e2e import random_model, stereo_song  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TUNING = REPO / "egs" / "mir1k" / "chimera" / "conf" / "tuning"
CONFIGS = [("causal (lookahead 0)", "train_chimera_cpu_causal", True),
           ("lookahead 3", "train_chimera_cpu_lookahead3", False),
           ("offline BLSTM (default)", "train_chimera_cpu_w1024_drop", False)]
NET_KEYS = ("hidden", "layers", "emb_dim", "dropout", "batch_norm", "mask_activation", "body", "lookahead")
LATENCY_MS, RTF = 64.0, 0.1  # targets of the causal default


def model_dict(name, wav, sr, seed=0):
    """Random-weight model of a tuning YAML with its paired features; CMVN from ``wav``'s features."""
    from sepkit.frontend import FeatureConfig

    fc = FeatureConfig.from_dict(yaml.safe_load((TUNING / f"{name}.feat_conf").read_text()))
    tune = yaml.safe_load((TUNING / f"{name}.yaml").read_text())
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": fc.n_mels, **{k: tune[k] for k in NET_KEYS if k in tune}}
    return random_model(fc, conf, wav, sr, seed), fc, tune


def algorithmic_ms(fc, lookahead):
    return 1000.0 * (fc.n_fft + fc.hop_length + lookahead * fc.hop_length) / fc.sample_rate


def run_online(sep, wav, sr, block):
    """Stream ``wav`` ``(C, n)`` through a fresh online separator in blocks of ``block`` samples: per-block
    wall seconds of ``process`` and CPU seconds of this thread (the last, shorter block and ``flush`` left out),
    the seconds of audio streamed, the separator's delay (samples)."""
    live = sep.online(sr, channels=wav.shape[0], head="mi")
    n_full = wav.shape[1] // block * block
    cpu = []
    for i in range(0, n_full, block):
        c0 = time.thread_time()
        live.process(wav[:, i:i + block])
        cpu.append(time.thread_time() - c0)
    times = list(live.block_seconds)
    live.flush()
    return times, cpu, n_full / sr, live.latency_samples


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--blocks-ms", default="8,16,32,64")
    p.add_argument("--dtypes", default="float32,auto")
    p.add_argument("--core", type=int, default=None, help="pin to this core (default: the last one)")
    args = p.parse_args(argv)
    threads, cores = torch.get_num_threads(), os.sched_getaffinity(0)
    try:
        return _run(args)
    finally:  # as it was (bench/run_all.py runs other benches after this one)
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, cores)


def _run(args):
    torch.set_num_threads(1)
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    from sepkit import Separator
    from sepkit.separate import resolve_dtype

    sr = 44100
    wav, what = stereo_song(args.seconds, sr)
    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if ln.startswith("Model name")), "?")
    print(f"{cpu}; pinned to core {core}, 1 torch thread; torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.2f}; {args.seconds:g} s of {what}")
    dtypes = []
    for dt in args.dtypes.split(","):
        name = "float32" if resolve_dtype(dt, "cpu") is None else "bfloat16"
        if name not in dtypes:
            dtypes.append(name)
    blocks = [float(b) for b in args.blocks_ms.split(",")]
    cases, seps = [], {}
    for label, name, default in CONFIGS:
        d, fc, tune = model_dict(name, wav, sr)
        for dt in dtypes:
            sep = Separator(d, dtype=dt)
            seps[(label, dt)] = sep
            online = bool(getattr(sep.model.encoder, "causal", False))
            for b in (blocks if online else [None]):
                cases.append((label, dt, b, online, default, algorithmic_ms(fc, tune.get("lookahead", 0)) if online
                              else None, sep))
    res = {i: {"times": [], "cpu": [], "rtf": [], "rtf_cpu": [], "delay": None} for i in range(len(cases))}
    for case in cases:  # warm-up
        sep = case[6]
        if case[3]:
            run_online(sep, wav[:, :sr], sr, int(round(case[2] * sr / 1000)))
        else:
            sep.separate(wav[:, :sr], sr, head="mi")
    load0 = os.getloadavg()[0]
    for r in range(args.repeat):
        for i, (label, dt, b, online, _, _, sep) in enumerate(cases):
            if online:
                times, cpu_times, dur, delay = run_online(sep, wav, sr, int(round(b * sr / 1000)))
                res[i]["times"] += times
                res[i]["cpu"] += cpu_times
                res[i]["delay"] = delay
                res[i]["rtf"].append(sum(times) / dur)
                res[i]["rtf_cpu"].append(sum(cpu_times) / dur)
            else:
                t0, c0 = time.perf_counter(), time.thread_time()
                sep.separate(wav, sr, head="mi")
                res[i]["rtf"].append((time.perf_counter() - t0) / args.seconds)
                res[i]["rtf_cpu"].append((time.thread_time() - c0) / args.seconds)
        print(f"round {r + 1}/{args.repeat} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    load1 = os.getloadavg()[0]
    lines = ["| configuration | dtype | block ms | algorithmic latency ms | separator delay ms (44.1k) | RTF (CPU) | "
             "RTF (wall) | mean / p99 ms per block (CPU) | mean / p99 ms per block (wall) | target | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    summary = []
    for i, (label, dt, b, online, default, alg, sep) in enumerate(cases):
        rtf, rtf_cpu = statistics.median(res[i]["rtf"]), statistics.median(res[i]["rtf_cpu"])
        summary.append(dict(label=label, dtype=dt, block_ms=b, online=online, default=default, latency_ms=alg,
                            rtf=rtf, rtf_cpu=rtf_cpu, delay_ms=1000.0 * res[i]["delay"] / sr if online else None))
        if online:
            t, c = np.array(res[i]["times"]) * 1000, np.array(res[i]["cpu"]) * 1000
            delay = 1000.0 * res[i]["delay"] / sr
            target = f"latency <= {LATENCY_MS:g}, RTF <= {RTF:g}" if default else ""
            ok = ("ok" if alg <= LATENCY_MS and rtf_cpu <= RTF else "FAIL") if default else ""
            lines.append(f"| {label} | {dt} | {b:g} | {alg:.0f} | {delay:.1f} | {rtf_cpu:.4f} | {rtf:.4f} | "
                         f"{c.mean():.2f} / {np.percentile(c, 99):.2f} | {t.mean():.2f} / {np.percentile(t, 99):.2f} | "
                         f"{target} | {ok} |")
        else:
            lines.append(f"| {label} | {dt} | whole signal | n/a (whole signal) | n/a | {rtf_cpu:.4f} | {rtf:.4f} | | | "
                         "baseline | |")
    print("\n".join(lines))
    print(f"\nload average {load0:.2f} at the start of the timed rounds, {load1:.2f} at the end")
    return summary


if __name__ == "__main__":
    main()
