#!/usr/bin/env python3
"""Frames per second of the full trainer against the bare model step, on the same batches.

    python bench/bench_trainer.py [--device cpu|cuda] [--hidden 500 --layers 4] [--num_workers 2]

Builds a synthetic feature dump (random mel magnitudes in the layout of ``sepkit.bin.compute_feats``)
in a temporary directory, then alternates, epoch by epoch,

* trainer: ``Trainer.train_epoch`` — the training pass of ``fit`` with its DataLoader (workers,
  pinned memory), logging every ``--log_interval`` steps, TensorBoard scalars and progress bar;
* bare: the same global batches (same dataset, sampler, seed and epoch), collated and moved to
  the device beforehand, through forward, Chimera loss, backward, clipping and optimiser step only;

after one warm-up epoch of each. It prints the best rate of each path and the median of the
per-round ratios trainer/bare (paired rounds keep the ratio meaningful on a shared, busy
machine); target >= 0.9, i.e. data pipeline and bookkeeping cost less than 10% of the
throughput. The validation pass, once per epoch, is timed separately.
"""
import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_dump(path, n_utts, frames, n_mels, seed=0):
    """A dump of random (low-rank, positive) mel magnitudes with CMVN statistics."""
    import kaldiio
    import yaml

    from sepkit.frontend import CMVN, FeatureConfig, Frontend

    conf = FeatureConfig(n_mels=n_mels)
    fe = Frontend(conf)
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    writers = {n: kaldiio.WriteHelper(f"ark,scp:{path}/{n}.ark,{path}/{n}.scp")
               for n in ("mix", "vocals", "accompaniment")}
    stats = None
    with open(path / "utt2num_frames", "w") as f:
        for i in range(n_utts):
            utt = f"utt{i:04d}"
            srcs = [np.abs(rng.standard_normal((frames, 4)) @ rng.standard_normal((4, n_mels))).astype(np.float32)
                    for _ in range(2)]
            mix = srcs[0] + srcs[1]
            for name, m in zip(("mix", "vocals", "accompaniment"), (mix, *srcs)):
                writers[name](utt, m)
            stats = CMVN.accumulate(stats, fe.features(torch.from_numpy(mix)[None])[0].numpy())
            f.write(f"{utt} {frames}\n")
    for w in writers.values():
        w.close()
    (path / "sources").write_text("vocals\naccompaniment\n")
    (path / "feat_conf.yaml").write_text(yaml.safe_dump(conf.to_dict()))
    CMVN.save(path / "cmvn.ark", stats)


def bare_batches(trainer, epoch):
    """The global batches of ``epoch``, collated and on the device (not timed)."""
    from sepkit.data.dataset import collate
    from sepkit.train.distributed import GlobalBatchSampler

    conf, dev, ds = trainer.conf, trainer.device, trainer.train_set
    ds.set_epoch(epoch)
    sampler = GlobalBatchSampler(ds, conf["batch_size"], seed=conf["seed"], max_batches=conf["max_steps_per_epoch"])
    sampler.set_epoch(epoch)
    batches = []
    for idx in sampler:
        b = collate([ds[i] for i in idx])
        full = bool((b["lengths"] == b["feats"].shape[1]).all())
        batches.append({"feats": b["feats"].to(dev), "mix": b["mix"].to(dev), "src": b["src"].to(dev),
                        "lengths": None if full else b["lengths"], "frames": int(b["lengths"].sum())})
    return batches


def bare_rate(trainer, batches):
    """Frames/s of forward, loss, backward, clipping and optimiser step over pre-loaded batches."""
    from sepkit.losses import chimera_loss

    conf, dev = trainer.conf, trainer.device
    model, opt = trainer.model, trainer.optimizer
    model.train()
    t0 = time.perf_counter()
    frames = 0
    for b in batches:
        with torch.autocast(dev.type, dtype=trainer.autocast or torch.float32, enabled=trainer.autocast is not None):
            out = model(b["feats"], b["lengths"])
        out = {k: v.float() for k, v in out.items()}
        loss = chimera_loss(out, b["mix"], b["src"], conf["alpha"], conf["mi_loss"], conf["silence_db"],
                            b["lengths"])["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), conf["grad_clip"] or math.inf)
        opt.step()
        frames += b["frames"]
    loss.detach().item()  # wait for the device
    return frames / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--n_mels", type=int, default=150)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--segment_frames", type=int, default=100)
    p.add_argument("--steps", type=int, default=20, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=4, help="epochs (the first one warms up both paths)")
    p.add_argument("--utts", type=int, default=30)
    p.add_argument("--frames", type=int, default=600, help="frames per synthetic utterance")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--log_interval", type=int, default=10)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first one warms up)")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    from sepkit.train.config import parse_config
    from sepkit.train.distributed import DistEnv
    from sepkit.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dump(tmp / "train", args.utts, args.frames, args.n_mels)
        make_dump(tmp / "valid", 4, args.frames, args.n_mels, seed=1)
        conf = vars(parse_config([
            "--train_dump", str(tmp / "train"), "--valid_dump", str(tmp / "valid"), "--outdir", str(tmp / "exp"),
            "--device", args.device, "--hidden", str(args.hidden), "--layers", str(args.layers),
            "--batch_size", str(args.batch_size), "--segment_frames", str(args.segment_frames),
            "--epochs", str(args.epochs), "--max_steps_per_epoch", str(args.steps),
            "--num_workers", str(args.num_workers),
            "--log_interval", str(args.log_interval), "--dtype", args.dtype, "--patience", "none"]))
        env = DistEnv(device=torch.device(args.device))
        trainer = Trainer(conf, env)
        # warm-up of both paths, then rounds of (trainer epoch, bare pass over that epoch's batches)
        trainer.train_epoch(1)
        bare_rate(trainer, bare_batches(trainer, 1))
        fulls, bares = [], []
        for epoch in range(2, args.epochs + 1):
            fulls.append(trainer.train_epoch(epoch)["frames_per_sec"])
            bares.append(bare_rate(trainer, bare_batches(trainer, epoch)))
        t0 = time.perf_counter()
        trainer.validate()
        valid_secs = time.perf_counter() - t0
        trainer.tb.close()
    ratios = sorted(f / b for f, b in zip(fulls, bares))
    n_params = sum(p.numel() for p in trainer.model.parameters())
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, model {args.layers} x {args.hidden} BLSTM "
          f"({n_params:,} parameters), batch {args.batch_size} x {args.segment_frames} frames, {args.steps} steps, "
          f"{args.num_workers} DataLoader workers, {args.dtype}")
    print(f"bare model step : {max(bares):10.0f} frames/s (best of {len(bares)})")
    print(f"full trainer    : {max(fulls):10.0f} frames/s (best of {len(fulls)}; data loading, logging, "
          "TensorBoard scalars included)")
    print(f"ratio trainer/bare: {ratios[len(ratios) // 2]:.3f} (median of {len(ratios)} paired rounds; "
          f"range {ratios[0]:.3f}-{ratios[-1]:.3f}; target >= 0.9)")
    print(f"once per epoch besides: validation pass {valid_secs:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
