"""Separation benchmarks (issue: separate any song), each beside a plain reference run in the same process.

speed    Paper-size network (4 x 500 BLSTM, 24 M parameters, random weights) on a 60 s stereo
         44.1 kHz input: end-to-end Separator.separate (resample, STFT, features, batched segments,
         masks / k-means, inverse STFT, resample back) with the MI head and with the DC head, each
         beside the bare batched forward pass of a plain PyTorch reference (nn.LSTM + Linear + head,
         same weights) over the same input's 100-frame segments. Targets: MI <= 1.2x, DC <= 1.5x.
memory   A 10-minute stereo 44.1 kHz file through ``python -m sepkit.bin.separate`` with a small
         model (2 x 64 BLSTM), both heads, in a child process: peak RSS (target < 2 GB) and RTF.
overlap  Does segment overlap help? Trains a small (2 x 64) Chimera network on the MIR-1K training singers
         (abjones, amy) unless --model is given, then SI-SDRi (dB, length-weighted, sources named by
         the model / the < 200 Hz rule, no permutation search) on the annar + yifen clips for
         overlaps 0 / 0.25 / 0.5 / 0.75 and for the whole clip as one sequence.

Run: tools/venv/bin/python bench/bench_separate.py [speed|memory|overlap|all] [--threads 2]
(no argument: speed and memory)
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import report, setup_threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MIR1K = REPO.parent / "shared" / "data" / "MIR-1K" / "Wavfile"


def model_dict(hidden=500, layers=4, seed=0, segment=100):
    """A random-weight Chimera model file dict with the paper's features (16k-512-128-mel150+deltas)."""
    from sepkit.frontend import CMVN, FeatureConfig
    from sepkit.model_io import make_model_dict
    from sepkit.nets import ChimeraNet

    torch.manual_seed(seed)
    fc = FeatureConfig()
    conf = {"type": "chimera", "input_dim": fc.input_dim, "hidden": hidden, "layers": layers}
    net = ChimeraNet(fc.input_dim, hidden=hidden, layers=layers)
    cmvn = CMVN(torch.full((fc.input_dim,), -5.0), torch.full((fc.input_dim,), 3.0))
    return make_model_dict(net, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"], {"segment_frames": segment})


class PlainRef(torch.nn.Module):
    """The reference: one nn.LSTM stack + Linear + the chosen head, written inline, same weights."""

    def __init__(self, net):
        super().__init__()
        enc = net.encoder.lstm
        self.lstm = torch.nn.LSTM(enc.input_size, enc.hidden_size, enc.num_layers, batch_first=True,
                                  bidirectional=True)
        self.lstm.load_state_dict(enc.state_dict())
        self.lin = net.linear
        self.F, self.D = net.n_freq, net.emb_dim
        self.w, self.b = net.mi_head.weight, net.mi_head.bias

    def forward(self, x, head):
        B, T, _ = x.shape
        z = self.lin(self.lstm(x)[0]).view(B, T, self.F, self.D)
        if head == "dc":
            return torch.nn.functional.normalize(torch.tanh(z), dim=-1).view(B, T * self.F, self.D)
        return (torch.einsum("btfd,fdc->btfc", z, self.w) + self.b).softmax(-1)


def interleaved(fns, repeat):
    """Median ``(wall, cpu)`` seconds of each of ``fns`` over ``repeat`` rounds, run alternately.

    CPU time (this process, all threads) is printed beside wall time because the bench machine is
    shared: under load wall times drift, CPU times much less.
    """
    times = [[] for _ in fns]
    for _ in range(repeat):
        for t, fn in zip(times, fns):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            t.append((time.perf_counter() - w0, time.process_time() - c0))
    return [tuple(sorted(x[i] for x in t)[len(t) // 2] for i in range(2)) for t in times]


def bench_speed(args):
    from sepkit import Separator
    from sepkit.separate import DEFAULT_BATCH

    sep = Separator(model_dict(), dtype=args.dtype)
    ref = PlainRef(sep.model).eval()
    sr, dur = 44100, 60.0
    wav = (np.random.default_rng(0).standard_normal((2, int(sr * dur))) * 0.1).astype(np.float32)
    T = sep.frontend.num_frames(int(16000 * dur))
    n_seg = -(-T // 100)
    feats = torch.randn(n_seg, 100, sep.frontend.config.input_dim)
    print(f"paper network, {dur:.0f} s stereo {sr} Hz: {T} frames -> {n_seg} segments of 100, batch {DEFAULT_BATCH}, "
          f"autocast {sep.autocast_dtype or 'off (float32)'}, {torch.get_num_threads()} threads")

    def bare(head):
        with torch.inference_mode():
            for i in range(0, n_seg, DEFAULT_BATCH):
                ref(feats[i:i + DEFAULT_BATCH], head)

    with torch.inference_mode():  # same numbers as the library's network, so the reference is a fair one
        x = feats[:2]
        torch.testing.assert_close(ref(x, "mi"), sep.model(x)["mask"])
    sep.separate(wav[:, :sr], sr)  # warm-up
    ratios = {}
    for head, target in (("mi", 1.2), ("dc", 1.5)):
        (ours, ours_cpu), (base, base_cpu) = interleaved([lambda: sep.separate(wav, sr, head=head),
                                                          lambda: bare(head)], args.repeat)
        print(f"  {head}: real-time factor end to end {ours / dur:.4f} ({ours:.2f} s wall for {dur:.0f} s), "
              f"bare forward {base / dur:.4f}; CPU seconds {ours_cpu:.2f} vs {base_cpu:.2f} "
              f"(ratio {ours_cpu / base_cpu:.3f})")
        ratios[head] = report(f"{head.upper()} head end to end vs bare batched forward", ours, base, target)
    return ratios


def child_separate(argv):
    """In a fresh process: run sepkit-separate and print its peak resident memory (MB)."""
    from sepkit.bin.separate import main

    t0 = time.perf_counter()
    rc = main(argv)
    print(f"PEAK_MB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} SECONDS "
          f"{time.perf_counter() - t0:.2f} RC {rc}", flush=True)


def bench_memory(args):
    import soundfile as sf

    from sepkit.model_io import save_model_dict

    sr, minutes = 44100, args.minutes
    with tempfile.TemporaryDirectory(prefix="bench_sep.") as tmp:
        tmp = Path(tmp)
        save_model_dict(tmp / "small.pt", model_dict(hidden=64, layers=2))
        rng = np.random.default_rng(0)
        with sf.SoundFile(tmp / "long.wav", "w", sr, 2, subtype="PCM_16") as f:
            for i in range(int(minutes * 60)):  # one second at a time: the bench itself stays small
                t = (np.arange(sr) + i * sr) / sr
                tone = 0.2 * np.sin(2 * np.pi * (220 + 30 * np.sin(0.1 * t)) * t)
                f.write(np.stack([tone + 0.05 * rng.standard_normal(sr), 0.5 * tone], 1).astype(np.float32))
        print(f"{minutes:g} min stereo {sr} Hz ({(tmp / 'long.wav').stat().st_size / 2**20:.0f} MB PCM_16), "
              f"small model (2 x 64 BLSTM, paper features)")
        peaks = {}
        for head in ("mi", "dc"):
            cmd = [sys.executable, __file__, "_child", "--model", str(tmp / "small.pt"), "--head", head,
                   "--num-threads", str(args.threads), "--outdir", str(tmp / f"out_{head}"), "-q", "--no-progress",
                   str(tmp / "long.wav")]
            res = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("PEAK_MB")]
            if res.returncode or not line:
                print(res.stdout, res.stderr)
                raise SystemExit(f"{head}: separation failed")
            _, peak, _, secs, _, rc = line[-1].split()
            info = sf.info(tmp / f"out_{head}" / "long" / "vocals.wav")
            assert (info.samplerate, info.channels, info.frames) == (sr, 2, int(minutes * 60) * sr), info
            peaks[head] = float(peak)
            verdict = "OK" if float(peak) < 2048 else "ABOVE TARGET 2048 MB"
            print(f"  {head}: peak RSS {float(peak):7.0f} MB ({verdict}), {float(secs):6.1f} s, "
                  f"real-time factor {float(secs) / (minutes * 60):.4f} (incl. reading, writing, start-up)")
    return peaks


def _mir1k(singers):
    from sepkit.audio import read_audio

    for path in sorted(p for p in MIR1K.glob("*.wav") if p.name.split("_")[0] in singers):
        wav, sr = read_audio(path)  # left = accompaniment, right = singing voice
        assert sr == 16000 and wav.shape[0] == 2
        yield path.stem, wav[1], wav[0]


def train_small(steps, hidden=64, layers=2, seed=0):
    """Chimera (alpha 0.5, mMSA) on random 100-frame segments of MIR-1K abjones + amy, Adam, ``steps`` steps."""
    from sepkit.frontend import CMVN, FeatureConfig, Frontend
    from sepkit.losses import chimera_loss
    from sepkit.model_io import make_model_dict
    from sepkit.nets import ChimeraNet

    torch.manual_seed(seed)
    fc = FeatureConfig()
    fe = Frontend(fc)
    mix, src, stats = [], [], None
    with torch.no_grad():
        for _, voc, acc in _mir1k({"abjones", "amy"}):
            mels = fe.mel(fe.stft(torch.from_numpy(np.stack([voc + acc, voc, acc]))).abs())  # (3, T, F)
            mix.append(mels[0])
            src.append(mels[1:].permute(1, 2, 0))  # (T, F, 2): vocals, accompaniment
            stats = CMVN.accumulate(stats, fe.features(mels[:1])[0].numpy())
    cmvn = CMVN.from_stats(stats)
    net = ChimeraNet(fc.input_dim, hidden=hidden, layers=layers)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng, L, B, t0 = np.random.default_rng(seed), 100, 16, time.time()
    long_enough = [i for i, m in enumerate(mix) if m.shape[0] >= L]
    for step in range(1, steps + 1):
        picks = rng.choice(long_enough, B)
        starts = [int(rng.integers(0, mix[i].shape[0] - L + 1)) for i in picks]
        m = torch.stack([mix[i][s:s + L] for i, s in zip(picks, starts)])
        r = torch.stack([src[i][s:s + L] for i, s in zip(picks, starts)])
        loss = chimera_loss(net(cmvn(fe.features(m))), m, r, alpha=0.5, mi_loss="mmsa")["loss"].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        if step % 100 == 0:
            print(f"  step {step}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "hidden": hidden, "layers": layers}
    print(f"  trained {step} steps of {B} x {L} frames")
    return make_model_dict(net, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"],
                           {"segment_frames": L, "alpha": 0.5, "mi_loss": "mmsa", "steps": step})


def bench_overlap(args):
    from sepkit import Separator
    from sepkit.metrics import si_sdr
    from sepkit.model_io import load_model_dict, save_model_dict

    if not MIR1K.is_dir():
        raise SystemExit(f"{MIR1K}: not present, the overlap study needs MIR-1K")
    if args.model:
        d = load_model_dict(args.model)
    else:
        print(f"training a 2 x 64 Chimera network for {args.train_steps} steps on MIR-1K abjones + amy")
        d = train_small(args.train_steps)
        if args.save_model:
            save_model_dict(args.save_model, d)
    clips = list(_mir1k({"annar", "yifen"}))[:args.max_clips]
    settings = [(f"overlap {o:g}", {"overlap": o}) for o in (0.0, 0.25, 0.5, 0.75)]
    settings.append(("whole clip, one sequence", {"segment_frames": 10**9}))
    n = sum(len(v) for _, v, _ in clips)
    print(f"SI-SDRi (dB) on {len(clips)} MIR-1K clips of annar + yifen ({n / 16000 / 60:.1f} min), "
          f"length-weighted; segments of {d['train'].get('segment_frames', 100)} frames")
    print(f"{'setting':<28s} {'MI vocals':>10s} {'MI acc':>8s} {'DC vocals':>10s} {'DC acc':>8s} {'time s':>7s}")
    for name, kw in settings:
        sep = Separator(d, **kw)
        acc = np.zeros(4)
        t0 = time.perf_counter()
        for _, voc, ac in clips:
            mix = voc + ac
            ref = np.stack([voc, ac])
            base = si_sdr(np.stack([mix, mix]), ref)
            for h, head in enumerate(("mi", "dc")):
                est = sep.separate(mix, 16000, head=head)
                acc[2 * h:2 * h + 2] += (si_sdr(np.stack([est["vocals"], est["accompaniment"]]), ref) - base) * len(mix)
        print(f"{name:<28s} {acc[0] / n:10.2f} {acc[1] / n:8.2f} {acc[2] / n:10.2f} {acc[3] / n:8.2f} "
              f"{time.perf_counter() - t0:7.1f}", flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        setup_threads(int(argv[argv.index("--num-threads") + 1]))
        return child_separate(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="?", default="default", choices=["default", "speed", "memory", "overlap", "all"],
                   help="default = speed + memory; overlap (trains a model, ~30 min here) only when named or all")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="timing rounds (medians)")
    p.add_argument("--dtype", default="auto", help="network precision for the speed bench (auto)")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the memory bench's file")
    p.add_argument("--model", help="overlap: evaluate this model instead of training one")
    p.add_argument("--train-steps", type=int, default=1500, help="overlap: training steps (batches of 16 x 100)")
    p.add_argument("--save-model", help="overlap: keep the trained model here")
    p.add_argument("--max-clips", type=int, default=1000, help="overlap: evaluate at most this many clips")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    if args.what in ("default", "all", "speed"):
        bench_speed(args)
    if args.what in ("default", "all", "memory"):
        bench_memory(args)
    if args.what in ("all", "overlap"):
        bench_overlap(args)


if __name__ == "__main__":
    main()
