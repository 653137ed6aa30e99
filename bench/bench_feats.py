#!/usr/bin/env python
"""Benchmark: feature extraction with utils/compute_feats.sh, --nj 1 against --nj 2, in one run.

    tools/venv/bin/python bench/bench_feats.py [--clips 20] [--seconds 30] [--rate 44100] [--workdir DIR]

Generates a data dir of stereo clips (two sources and their sum as the mixture, 16-bit WAV at
--rate, so decoding, down-mixing and resampling to 16 kHz are part of the cost), then times the
whole script (job start-up included: each job imports torch and librosa, several seconds) with the paper's features (16 kHz, 512/128, 150 mels) for
each --nj, checks that the dumps are identical, and prints seconds and the speed-up.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def make_data(root, clips, seconds, rate):
    from sepkit.data.datadir import DataDir

    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    wav, srcs = {}, {"vocals": {}, "accompaniment": {}}
    for i in range(clips):
        utt = f"clip{i:03d}"
        voc = 0.2 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
        acc = 0.05 * rng.standard_normal(n)
        voc, acc = np.stack([voc, 0.8 * voc]), np.stack([acc, np.roll(acc, 7)])
        for name, x in (("vocals", voc), ("accompaniment", acc), ("mix", voc + acc)):
            path = root / "audio" / f"{utt}_{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x.T, rate, subtype="PCM_16")
            (wav if name == "mix" else srcs[name])[utt] = str(path)
    return DataDir.create(root / "data", wav, srcs).path


def run(nj, data, dump, conf, env):
    cmd = [str(REPO / "utils" / "compute_feats.sh"), "--nj", str(nj), "--cmd", str(REPO / "utils" / "run.py"),
           "--feat-conf", str(conf), str(data), str(dump)]
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"bench_feats: nj={nj} failed:\n{res.stdout}{res.stderr}")
    jobs = []  # per-job seconds from the runner's '# Accounting: time=N' log lines
    for log in sorted((Path(dump) / "log").glob("compute_feats.*.log")):
        jobs += [int(m) for m in re.findall(r"# Accounting: time=(\d+)", log.read_text())]
    return seconds, jobs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--workdir", help="where the data and dumps go (default: a temporary dir, removed)")
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_feats."))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    try:
        t0 = time.perf_counter()
        data = make_data(root, args.clips, args.seconds, args.rate)
        conf = root / "feats.yaml"
        conf.write_text("sample_rate: 16000\nn_fft: 512\nhop_length: 128\nn_mels: 150\nuse_delta: true\n")
        print(f"data: {args.clips} clips x {args.seconds:g} s, stereo {args.rate} Hz "
              f"({time.perf_counter() - t0:.1f} s to generate); {os.cpu_count()} CPU cores")
        times = {nj: run(nj, data, root / f"dump_nj{nj}", conf, env) for nj in (1, 2)}
        from sepkit.data.dataset import FeatureDump

        a, b = FeatureDump(root / "dump_nj1"), FeatureDump(root / "dump_nj2")
        same = a.utts == b.utts and all(np.array_equal(a.read(u, c), b.read(u, c))
                                        for u in a.utts for c in range(3))
        audio_s = args.clips * args.seconds
        for nj, (s, jobs) in times.items():
            print(f"nj={nj}: {s:6.2f} s  ({audio_s / s:6.1f} s of audio per second); "
                  f"job times {jobs} s (start-up of each job included)")
        print(f"speed-up nj=2 / nj=1: {times[1][0] / times[2][0]:.2f}x; dumps identical: {same}")
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
