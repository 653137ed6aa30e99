"""Tiny synthetic corpora and feature dumps for the trainer tests (no tests of its own here).

A dump has the layout of ``sepkit.bin.compute_feats``: kaldiio ``mix.scp`` / ``<source>.scp`` of
mel magnitudes, ``utt2num_frames``, ``sources``, ``feat_conf.yaml`` and (training set) ``cmvn.ark``.
The audio is synthetic: "vocals" are a vibrato harmonic tone that comes and goes, the
"accompaniment" low harmonic notes plus noise, at 8 kHz with 20 mel bands.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
FEAT_CONF = {"sample_rate": 8000, "n_fft": 256, "hop_length": 64, "win_length": 0, "n_mels": 20, "fmin": 0.0,
             "fmax": 0.0, "use_delta": True}
TINY = ["--hidden", "8", "--layers", "1", "--emb_dim", "4", "--num_workers", "0", "--log_interval", "2",
        "--segment_frames", "20", "--batch_size", "8", "--lr", "0.01"]


def _synth(rng, seconds, sr):
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = rng.uniform(220, 400) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(4, 6) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    gate = (np.sin(2 * np.pi * rng.uniform(0.8, 1.5) * t + rng.uniform(0, 6)) > -0.2).astype(np.float64)
    vocals = sum(np.sin(k * phase) / k for k in range(1, 6)) * gate * 0.2
    base = rng.uniform(70, 140)
    acc = sum(np.sin(2 * np.pi * k * base * t + rng.uniform(0, 6)) / k for k in range(1, 4)) * 0.2
    acc += rng.normal(0, 0.02, n)
    return vocals.astype(np.float32), acc.astype(np.float32)


def make_corpus(root, n_train=8, n_valid=3, seconds=1.2, seed=0, synth=None, feat_conf=None):
    """Write ``root/{wav, data/valid, dump/train, dump/valid}``; returns a dict of their paths.

    ``synth(rng, seconds, sample_rate) -> (vocals, accompaniment)`` (1-D float32) draws one
    utterance (default: the toy tones above); ``feat_conf`` overrides :data:`FEAT_CONF` keys.
    """
    import kaldiio
    import soundfile as sf
    import yaml

    from sepkit.data.datadir import DataDir
    from sepkit.frontend import CMVN, FeatureConfig, Frontend

    root = Path(root)
    conf = FeatureConfig.from_dict({**FEAT_CONF, **(feat_conf or {})})
    synth = synth or _synth
    fe = Frontend(conf)
    rng = np.random.default_rng(seed)
    out = {}
    for split, count in (("train", n_train), ("valid", n_valid)):
        dump = root / "dump" / split
        dump.mkdir(parents=True)
        wavs, srcs, stats = {}, {"vocals": {}, "accompaniment": {}}, None
        writers = {name: kaldiio.WriteHelper(f"ark,scp:{dump}/{name}.ark,{dump}/{name}.scp")
                   for name in ("mix", "vocals", "accompaniment")}
        frames = {}
        for i in range(count):
            utt = f"{split}_{i:03d}"
            voc, acc = synth(rng, seconds * rng.uniform(0.8, 1.2), conf.sample_rate)
            mix = voc + acc
            wavdir = root / "wav"
            wavdir.mkdir(exist_ok=True)
            for name, w in (("mix", mix), ("vocals", voc), ("accompaniment", acc)):
                sf.write(wavdir / f"{utt}_{name}.wav", w, conf.sample_rate, subtype="FLOAT")
            wavs[utt] = str(wavdir / f"{utt}_mix.wav")
            srcs["vocals"][utt] = str(wavdir / f"{utt}_vocals.wav")
            srcs["accompaniment"][utt] = str(wavdir / f"{utt}_accompaniment.wav")
            with torch.no_grad():
                mels = {name: fe.mel(fe.stft(torch.from_numpy(w)[None]).abs())[0].numpy()
                        for name, w in (("mix", mix), ("vocals", voc), ("accompaniment", acc))}
                stats = CMVN.accumulate(stats, fe.features(torch.from_numpy(mels["mix"])[None])[0].numpy())
            for name, m in mels.items():
                writers[name](utt, m.astype(np.float32))
            frames[utt] = mels["mix"].shape[0]
        for w in writers.values():
            w.close()
        (dump / "utt2num_frames").write_text("".join(f"{u} {n}\n" for u, n in sorted(frames.items())))
        (dump / "sources").write_text("vocals\naccompaniment\n")
        (dump / "feat_conf.yaml").write_text(yaml.safe_dump(conf.to_dict()))
        CMVN.save(dump / "cmvn.ark", stats)
        out[f"{split}_dump"] = dump
        if split == "valid":
            out["valid_data"] = DataDir.create(root / "data" / "valid", wavs, srcs).path
    return out


def train_args(corpus, outdir, *extra):
    return ["--train-dump", str(corpus["train_dump"]), "--valid-dump", str(corpus["valid_dump"]),
            "--outdir", str(outdir), "--device", "cpu", *TINY, *extra]


def subprocess_env(threads=1):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def run_train_sh(launcher_args, train_args_, timeout=120, check=True):
    """``utils/train.sh <launcher_args> -- <train_args>``; returns the CompletedProcess."""
    cmd = ["bash", str(REPO / "utils" / "train.sh"), *launcher_args, "--", *train_args_]
    env = subprocess_env()
    env["SEPKIT_PYTHON"] = PYTHON
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ddp(args, nproc=2, port=None, **popen_kw):
    """Start ``nproc`` gloo processes of ``python -m sepkit.bin.train args`` as torchrun would (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), one math thread each; returns their Popen objects,
    so that a test can wait for or kill exactly these processes."""
    port = port or free_port()
    procs = []
    for rank in range(nproc):
        env = subprocess_env(threads=1)
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([PYTHON, "-m", "sepkit.bin.train", *args], env=env, cwd=REPO, **popen_kw))
    return procs


@pytest.fixture
def one_thread():
    """One torch thread for the test (subprocess trainers use one too), restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
