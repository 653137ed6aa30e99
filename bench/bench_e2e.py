#!/usr/bin/env python
"""The offline path at the network's speed (issue 22.4): end to end vs the bare network, per head and dtype.

    tools/venv/bin/python bench/bench_e2e.py [--threads 1[,2]] [--repeat 5] [--seconds 60] [--net cpu|paper]
    tools/venv/bin/python bench/bench_e2e.py --profile      # where the time goes, per stage

End to end = ``Separator.separate_file`` (what ``sepkit-separate`` runs): read a 44.1 kHz stereo WAV file,
resample to the model's rate, STFT, mel, features, the network over segments, masks (MI cross-fade; DC
k-means + labels), mel -> linear mask, inverse STFT, resample back, write FLOAT WAV (the CLI's default).

Bare network = the model's own forward (``ChimeraNet``: BLSTM body + the linear layer to F x D + the
requested head: MI per-frequency layers + softmax, or DC tanh + normalisation, with the MI head too when it
names the DC clusters, ``dc_naming`` "mi"), under the same autocast
dtype, cast to float32 as the separator does, over the same number of segments of the same length in
batches of the same size, on inputs prepared beforehand: the least any separator of that network must
spend. One pass of it per head (a separator that runs the network twice pays twice).

End to end runs twice: serial (``pipeline=False``: everything in the calling thread) and pipelined
(``pipeline=True``, the default: reading ahead and reconstruction + writing in two worker threads,
:mod:`sepkit.pipeline`). All three run interleaved round by round in one process (so the machine's load falls
on all alike); medians of ``--repeat`` rounds; ratio = end to end / bare, target <= 1.15, in wall time and in
CPU time (the process's, all threads: a pipeline does the same work, so its CPU ratio does not drop; its wall
time does where a second core is idle). ``--threads 1,2`` repeats every case with 2 torch threads (the bare
network with 2 threads vs end to end with 2 threads: the network then has the second core too).

Network: ``--net cpu`` (default) the recipes' CPU size (3 x 300 BLSTM, D = 20) on the paper's features
(16k-512-128-mel150 + deltas, as train_chimera_cpu.yaml); ``--net paper`` 4 x 500. Random weights (the
speed does not depend on them); CMVN from the song's features. Song: real music when ../shared/data has
MIR-1K (annar/yifen mixtures concatenated, made stereo from its two channels and resampled to 44.1 kHz),
else synthetic.
"""
import argparse
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_separate import interleaved  # noqa: E402
from common import setup_threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MIR1K = REPO.parent / "shared" / "data" / "MIR-1K" / "Wavfile"
NETS = {"cpu": dict(hidden=300, layers=3, emb_dim=20), "paper": dict(hidden=500, layers=4, emb_dim=20)}
TARGET = 1.15


def stereo_song(seconds, sr=44100):
    """``(2, n)`` float32 at ``sr`` and a description: MIR-1K mixtures (accompaniment + voice in both
    channels at different levels), else a synthetic harmonic voice over noise."""
    import soundfile as sf
    import soxr

    n16 = int(seconds * 16000)
    clips = sorted(p for p in MIR1K.glob("*.wav") if p.name.split("_")[0] in ("annar", "yifen")) if MIR1K.is_dir() else []
    parts, have = [], 0
    for p in clips:
        x, rate = sf.read(p, dtype="float32")
        if rate != 16000 or x.ndim != 2:
            continue
        parts.append(np.stack([x[:, 0] + 0.7 * x[:, 1], 0.7 * x[:, 0] + x[:, 1]]))
        have += len(x)
        if have >= n16:
            break
    if have >= n16:
        x16, what = np.concatenate(parts, 1)[:, :n16], f"{len(parts)} MIR-1K annar/yifen mixtures"
    else:
        t = np.arange(n16) / 16000
        f0 = 220 * 2 ** (np.floor(t * 2) % 5 / 12)
        voice = sum(0.2 / k * np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) for k in range(1, 6))
        acc = 0.05 * np.random.default_rng(0).standard_normal((2, n16))
        x16, what = (voice + acc).astype(np.float32), "synthetic (harmonic voice + noise)"
    y = np.stack([soxr.resample(r, 16000, sr, quality="soxr_hq") for r in x16]).astype(np.float32)
    y *= 0.5 / max(1e-6, float(np.abs(y).max()))
    return y[:, :int(seconds * sr)], f"{what}, stereo, {sr} Hz"


def random_model(fc, conf, wav, sr, seed=0):
    """A random-weight ChimeraNet model-file dict of ``conf`` on features ``fc``, CMVN from ``wav``'s features."""
    import soxr

    from sepkit.frontend import CMVN, Frontend
    from sepkit.model_io import make_model_dict
    from sepkit.nets import ChimeraNet

    torch.manual_seed(seed)
    model = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    fe = Frontend(fc)
    mono = soxr.resample(wav.mean(0), sr, fc.sample_rate, quality="soxr_hq").astype(np.float32)
    with torch.no_grad():
        feats = fe.input_features(fe.to_bins(fe.stft(torch.from_numpy(mono)[None]).abs(), "mel"), "mel")[0]
    cmvn = CMVN(feats.mean(0), feats.std(0).clamp_min(1e-3))
    return make_model_dict(model, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"], {"segment_frames": 100})


def model_dict(net, wav, sr):
    """Random-weight Chimera (both heads) of size ``NETS[net]`` with the paper's features; CMVN from ``wav``."""
    from sepkit.frontend import FeatureConfig

    fc = FeatureConfig()
    return random_model(fc, {"type": "chimera", "input_dim": fc.input_dim, "n_freq": fc.n_mels, **NETS[net]}, wav, sr)


def bare_fn(sep, n_samples_model, head):
    """The bare network over the separator's segments (see the module text): a function of no argument."""
    from sepkit.blockwise import plan_segments

    T = sep.frontend.num_frames(n_samples_model)
    starts, _, L = plan_segments(T, sep.segment_frames, sep.overlap)
    x = torch.randn(len(starts), L, sep.frontend.config.input_dim)
    # DC named by the MI head (Separator.dc_naming "mi", the default of a Chimera model): its one network pass
    # computes both heads, so the bare network does too
    heads = ("dc", "mi") if head == "dc" and getattr(sep, "dc_fit_head", "dc") == "dc+mi" else (head,)
    keys = ["mask" if h == "mi" else "embedding" for h in heads]
    B, dt = sep.batch_size, sep.autocast_dtype

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=dt or torch.float32, enabled=dt is not None):
            for i in range(0, len(starts), B):
                out = sep.model(x[i:i + B], heads=heads)
                for k in keys:
                    out[k].float()
    return run, len(starts), L


# ------------------------------------------------------------------------------------- profile
class Prof:
    """Exclusive CPU time of this thread (the network runs in it with 1 torch thread) per label of wrapped callables (nested wrapped calls are subtracted)."""

    def __init__(self):
        self.total, self.calls, self.stack = defaultdict(float), defaultdict(int), []
        self.undo = []

    def wrap(self, owner, name, label):
        if not hasattr(owner, name):  # another version of sepkit (profiling an older checkout)
            return
        orig = getattr(owner, name)
        prof = self

        def wrapper(*a, **k):
            t0 = time.thread_time()
            prof.stack.append(0.0)
            try:
                return orig(*a, **k)
            finally:
                inner = prof.stack.pop()
                dt = time.thread_time() - t0
                name_ = label(*a) if callable(label) else label
                prof.total[name_] += dt - inner
                prof.calls[name_] += 1
                if prof.stack:
                    prof.stack[-1] += dt

        raw = inspect.getattr_static(owner, name) if name in vars(owner) else None  # None: an inherited attribute
        setattr(owner, name, staticmethod(wrapper) if isinstance(raw, staticmethod) else wrapper)
        self.undo.append((owner, name, raw))

    def restore(self):
        for owner, name, raw in reversed(self.undo):
            if raw is None:
                delattr(owner, name)
            else:
                setattr(owner, name, raw)
        self.undo = []


def profile(sep, path, outdir, head, label):
    """One ``separate_file`` with every stage timed: ``{stage: seconds}``, total wall."""
    import soundfile as sf

    import sepkit.blockwise as bw
    import sepkit.separate as sp
    import sepkit.stream as st
    from sepkit.frontend import Frontend
    from sepkit.separate import Separator

    info = sf.info(str(path))
    nm = int(np.ceil(info.frames * sep.sample_rate / info.samplerate))
    p = Prof()
    p.wrap(sf.SoundFile, "read", "read (soundfile)")
    p.wrap(sf.SoundFile, "write", "write (soundfile)")
    p.wrap(bw.Resampler, "push", lambda self, *a: "resample in (soxr)" if self.length == nm else
           "resample out (soxr)")
    p.wrap(Separator, "_frames", "STFT")
    p.wrap(Separator, "_to_bins", "mel filterbank")
    p.wrap(Separator, "_features", "features (log, deltas, CMVN)")
    p.wrap(Separator, "_forward", "network: other (autocast, cast, reshape)")
    p.wrap(sep.model.encoder, "forward", "network: LSTM body")
    p.wrap(sep.model.linear, "forward", "network: output linear layer")
    for h in sep.heads:
        p.wrap(getattr(sep.model, f"{h}_head"), "forward", f"network: {h.upper()} head")
    p.wrap(Separator, "_crossfade_add", "MI cross-fade")
    p.wrap(st, "nearest", "DC nearest centre")
    p.wrap(st, "_fit_held", "DC held embeddings: other")
    p.wrap(sp, "kmeans", "DC k-means")
    p.wrap(Separator, "_dc_sample", "DC subsample")
    p.wrap(Separator, "_dc_fit_held", "DC held embeddings: other")
    p.wrap(bw.BinSubsample, "add", "DC subsample")
    p.wrap(bw.BinSubsample, "result", "DC subsample")
    p.wrap(Separator, "_low_occupancy", "DC naming counts")
    p.wrap(Separator, "_reconstruct_block", "reconstruct: mask x STFT, other")
    p.wrap(Frontend, "mask_to_linear", "reconstruct: mel -> linear mask")
    p.wrap(Frontend, "istft", "reconstruct: iSTFT")
    p.wrap(bw.Window, "append", "sliding windows (cat, copy)")
    p.wrap(bw.Window, "drop_before", "sliding windows (cat, copy)")
    p.wrap(st._Outputs, "__call__", "outputs: checks, reshape")
    p.wrap(st._Outputs, "commit", "outputs: fsync, rename")
    t0 = time.thread_time()
    try:
        sep.separate_file(path, {s: outdir / f"{label}_{s}.wav" for s in sep.sources}, head=head, subtype="FLOAT",
                          overwrite=True)
    finally:
        p.restore()
    total = time.thread_time() - t0
    rows = dict(p.total)
    rows["other (python glue, not wrapped)"] = total - sum(rows.values())
    return rows, total


# ------------------------------------------------------------------------------------- main
def machine():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags = sorted({f for f in ("amx_bf16", "avx512_bf16") if f in out})
    return f"{model} ({', '.join(flags) or 'no bf16 flags'}), {os.cpu_count()} cores, torch {torch.__version__}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1", help="torch threads, a comma-separated list: every case with each (1)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--net", choices=sorted(NETS), default="cpu")
    p.add_argument("--heads", default="mi,dc")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--block-frames", type=int, default=None, help="Separator(block_frames=) (default: its own)")
    p.add_argument("--band", default=None, help="Separator(band=) when given (default: the Separator's own)")
    p.add_argument("--profile", action="store_true", help="per-stage times of one run of each case, then stop "
                   "(the serial path)")
    args = p.parse_args(argv)
    threads = [int(t) for t in str(args.threads).split(",")]
    setup_threads(threads[0])
    import soundfile as sf

    from sepkit import Separator
    from sepkit.separate import SeparationError

    sr = 44100
    wav, what = stereo_song(args.seconds, sr)
    md = model_dict(args.net, wav, sr)
    print(f"{machine()}; {torch.get_num_threads()} thread(s); load average {os.getloadavg()[0]:.2f}")
    print(f"song: {args.seconds:g} s, {what}; network {args.net}: {NETS[args.net]}, paper features")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_e2e.") as tmp:
        tmp = Path(tmp)
        path = tmp / "song.wav"
        sf.write(path, wav.T, sr, subtype="FLOAT")
        nm = int(np.ceil(wav.shape[1] * 16000 / sr))
        kw = {k: v for k, v in (("block_frames", args.block_frames), ("band", args.band)) if v}
        for n_threads, dtype in [(t, d) for t in threads for d in args.dtypes.split(",")]:
            setup_threads(n_threads)
            try:
                sep = Separator(md, dtype=dtype, **kw)
            except SeparationError as exc:
                print(f"{dtype}: {exc}")
                continue
            for head in args.heads.split(","):
                bare, n_seg, L = bare_fn(sep, nm, head)
                e2e = lambda pipeline: sep.separate_file(  # noqa: E731
                    path, {s: tmp / f"{head}_{s}.wav" for s in sep.sources}, head=head, subtype="FLOAT",
                    overwrite=True, pipeline=pipeline)
                serial, piped = (lambda: e2e(False)), (lambda: e2e(True))
                bare()
                serial()  # warm-up
                piped()
                if args.profile:
                    rows, total = profile(sep, path, tmp, head, "prof")
                    t_bare = statistics.median(timed(bare) for _ in range(3))
                    print(f"\n{head.upper()} head, {dtype}: end to end {total:.2f} s, bare network {t_bare:.2f} s "
                          "(CPU seconds of the main thread) "
                          f"({n_seg} segments of {L}), ratio {total / t_bare:.2f}")
                    for k, v in sorted(rows.items(), key=lambda kv: -kv[1]):
                        print(f"  {k:<44s} {v:7.3f} s  {100 * v / total:5.1f} %")
                    continue
                (b_wall, b_cpu), (s_wall, s_cpu), (p_wall, p_cpu) = interleaved([bare, serial, piped], args.repeat)
                load = os.getloadavg()[0]
                results.append((torch.get_num_threads(), head, dtype, b_wall, s_wall, p_wall, b_cpu, s_cpu, p_cpu,
                                 load))
                print(f"{n_threads} thread(s) {head.upper()} {dtype}: bare {b_wall:.3f} s, serial {s_wall:.3f} s "
                      f"({s_wall / b_wall:.3f}), pipelined {p_wall:.3f} s ({p_wall / b_wall:.3f}); CPU bare "
                      f"{b_cpu:.3f} s, serial {s_cpu:.3f} ({s_cpu / b_cpu:.3f}), pipelined {p_cpu:.3f} "
                      f"({p_cpu / b_cpu:.3f}); load {load:.2f}", flush=True)
    if results:
        print(table(results, args))
    return results


def timed(fn):
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0


def table(results, args):
    lines = ["\n| torch threads | head | dtype | bare network s | serial s | pipelined s | serial / bare: wall (CPU) | "
             "pipelined / bare: wall (CPU) | RTF pipelined | target (wall, pipelined) | load avg |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for n, head, dtype, b, s, p, bc, sc, pc, load in results:
        ok = "ok" if p / b <= TARGET else "FAIL"
        lines.append(f"| {n} | {head.upper()} | {dtype} | {b:.3f} | {s:.3f} | {p:.3f} | {s / b:.3f} ({sc / bc:.3f}) | "
                     f"{p / b:.3f} ({pc / bc:.3f}) | {p / args.seconds:.4f} | <= {TARGET} {ok} | {load:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
