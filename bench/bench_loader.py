#!/usr/bin/env python
"""Benchmark: frames/s the DataLoader delivers against frames/s one training step consumes.

    tools/venv/bin/python bench/bench_loader.py [--utts 40] [--frames 3751] [--batches 300] [--steps 5] [--threads 2]

Paper sizes: 150 mels + deltas (300-dim input), segments of 100 frames, batches of 8, ChimeraNet
(4 x 500 BLSTM, D = 20), chimera_loss with alpha = 0.1, RMSprop. The dump holds random mel
magnitudes in the layout of sepkit.bin.compute_feats (the loader's cost does not depend on
the values). Both rates are measured in this run, on this machine, and their ratio printed
(target: loader >= 5x step).
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from common import setup_threads, timeit  # noqa: E402


def make_dump(root, utts, frames, conf):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    names = ["mix", "vocals", "accompaniment"]
    writers = [kaldiio.WriteHelper(f"ark,scp:{root}/{n}.feats.ark,{root}/{n}.scp") for n in names]
    for i in range(utts):
        src = np.exp(rng.standard_normal((2, frames, conf.n_mels), dtype=np.float32))
        for w, m in zip(writers, [src.sum(0), src[0], src[1]]):
            w(f"utt{i:04d}", m)
    for w in writers:
        w.close()
    (root / "utt2num_frames").write_text("".join(f"utt{i:04d} {frames}\n" for i in range(utts)))
    (root / "sources").write_text("vocals\naccompaniment\n")
    (root / "feat_conf.yaml").write_text(yaml.safe_dump(conf.to_dict()))


def loader_rate(ds, batches, workers, batch_size):
    from sepkit.data.dataset import collate

    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, collate_fn=collate,
                                         num_workers=workers, drop_last=True)
    frames, n, start = 0, 0, None
    while n < batches:
        for batch in loader:
            if start is None:  # first batch: worker start-up is not throughput
                start = time.perf_counter()
                continue
            frames += int(batch["lengths"].sum())
            n += 1
            if n >= batches:
                break
    return frames / (time.perf_counter() - start)


def step_rate(batch, steps):
    from sepkit.losses import chimera_loss
    from sepkit.nets import ChimeraNet

    model = ChimeraNet(input_dim=batch["feats"].shape[-1], n_freq=batch["mix"].shape[-1])
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-4)

    def step():
        out = model(batch["feats"], batch["lengths"])
        loss = chimera_loss(out, batch["mix"], batch["src"], alpha=0.1, lengths=batch["lengths"])["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return int(batch["lengths"].sum()) / timeit(step, repeat=steps, warmup=1)  # median step time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utts", type=int, default=40)
    parser.add_argument("--frames", type=int, default=3751, help="frames per utterance (30 s at hop 128)")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--segment", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the main process")
    args = parser.parse_args()
    setup_threads(args.threads)
    from sepkit.data.dataset import SegmentDataset, collate
    from sepkit.frontend import CMVN, FeatureConfig

    conf = FeatureConfig()  # paper: 16 kHz, 512/128, 150 mels + deltas
    root = Path(tempfile.mkdtemp(prefix="bench_loader."))
    try:
        make_dump(root, args.utts, args.frames, conf)
        dim = conf.input_dim
        cmvn = CMVN(np.zeros(dim), np.ones(dim))
        ds = SegmentDataset(root, args.segment, cmvn=cmvn, train=True)
        print(f"dump: {args.utts} utts x {args.frames} frames x {conf.n_mels} mels; segments {args.segment}, "
              f"batch {args.batch_size}; torch threads {torch.get_num_threads()}, {os.cpu_count()} CPU cores")
        rates = {w: loader_rate(ds, args.batches, w, args.batch_size) for w in (0, 2)}
        batch = collate([ds[i] for i in range(args.batch_size)])
        train = step_rate(batch, args.steps)
        for w, r in rates.items():
            print(f"loader, {w} workers: {r:10.0f} frames/s")
        print(f"training step (ChimeraNet 4x500, alpha 0.1, RMSprop): {train:10.0f} frames/s "
              f"({args.batch_size * args.segment / train:.3f} s/step)")
        for w, r in rates.items():
            print(f"ratio loader({w} workers) / step: {r / train:.1f}x (target >= 5x)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
