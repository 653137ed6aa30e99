#!/usr/bin/env python
"""The onnxruntime backend beside torch (issue 21.3): parity and speed on one 60-s song, same process.

    tools/venv/bin/python bench/bench_onnx.py [--threads 2] [--repeat 3] [--seconds 60]

Network: the MIR-1K recipe's CPU default size (egs/mir1k/chimera/conf/tuning/train_chimera_cpu_w1024_drop.yaml:
3 x 300 BLSTM, D = 20, both heads; its 16k-1024-256-mel200 features), random weights (seed 0), CMVN from the
song's own features. Song: real music when ../shared/data is there (MIR-1K annar/yifen mixtures, left + right,
concatenated to ``--seconds`` at 16 kHz), else a synthetic one (harmonic "voice" + noise). Rows, per head:
``Separator.separate`` end to end with torch float32 (the baseline), torch bfloat16 (autocast; only where the
CPU runs bf16 natively, see sepkit.separate.resolve_dtype, else n/a) and onnxruntime float32 (the network
exported by sepkit-export --onnx), timed interleaved round by round so all see the same load; RTF =
seconds per second of audio (wall time, medians); the CPU seconds of this process are printed beside them
(on a shared machine wall time drifts with the load, CPU time much less). Parity: SNR of each backend's outputs against torch float32's (the lower
of the two sources), MI and DC (DC: same k-means, so differences are labels of bins that the network's
rounding moves across the cluster boundary).
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_separate import interleaved  # noqa: E402
from common import setup_threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TUNING = REPO / "egs" / "mir1k" / "chimera" / "conf" / "tuning" / "train_chimera_cpu_w1024_drop"
MIR1K = REPO.parent / "shared" / "data" / "MIR-1K" / "Wavfile"
NET_KEYS = ("hidden", "layers", "emb_dim", "dropout", "batch_norm", "mask_activation")


def song(seconds, sr=16000):
    """``(samples, description)``: real MIR-1K mixtures concatenated, else a synthetic song."""
    import soundfile as sf

    n = int(seconds * sr)
    clips = sorted(p for p in MIR1K.glob("*.wav") if p.name.split("_")[0] in ("annar", "yifen")) if MIR1K.is_dir() else []
    parts, have = [], 0
    for p in clips:
        x, rate = sf.read(p, dtype="float32")
        if rate != sr or x.ndim != 2:
            continue
        parts.append(x.sum(1))
        have += len(x)
        if have >= n:
            return np.concatenate(parts)[:n], f"{len(parts)} MIR-1K annar/yifen mixtures concatenated, {sr} Hz mono"
    t = np.arange(n) / sr
    f0 = 220 * 2 ** (np.floor(t * 2) % 5 / 12)
    voice = sum(0.2 / k * np.sin(2 * np.pi * k * np.cumsum(f0) / sr) for k in range(1, 6))
    acc = 0.05 * np.random.default_rng(0).standard_normal(n)
    return (voice + acc).astype(np.float32), f"synthetic (harmonic voice + noise), {sr} Hz mono"


def model_dict(wav, sr):
    """Recipe-size random-weight Chimera with the recipe's features and CMVN from ``wav``'s own features."""
    from sepkit.frontend import CMVN, FeatureConfig, Frontend
    from sepkit.model_io import make_model_dict
    from sepkit.nets import ChimeraNet

    fc = FeatureConfig.from_dict(yaml.safe_load(TUNING.with_suffix(".feat_conf").read_text()))
    tune = yaml.safe_load(TUNING.with_suffix(".yaml").read_text())
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": fc.n_mels, **{k: tune[k] for k in NET_KEYS}}
    torch.manual_seed(0)
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    fe = Frontend(fc)
    with torch.no_grad():
        feats = fe.input_features(fe.to_bins(fe.stft(torch.from_numpy(wav)[None]).abs(), "mel"), "mel")[0]
    cmvn = CMVN(feats.mean(0), feats.std(0).clamp_min(1e-3))
    return make_model_dict(net, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"],
                           {"segment_frames": tune["segment_frames"]}), conf


def snr_min(ref, est):
    return min(10 * np.log10(np.sum(ref[k] ** 2) / max(np.sum((ref[k] - est[k]) ** 2), 1e-30)) for k in ref)


def bf16_runs():
    from sepkit.separate import SeparationError, resolve_dtype

    try:
        return resolve_dtype("bfloat16", "cpu") is not None
    except SeparationError:
        return False


def run(seconds=60.0, repeat=3, threads=2, quiet=False, model=None):
    """Returns ``{"rows": [(backend, dtype, head, wall_s, cpu_s, snr_db, max abs diff of the network's outputs)],
    "song", "net", "seconds", "mask_std"}`` (snr and diff None for the baseline, everything None for a dtype that
    cannot run)."""
    from sepkit import Separator
    from sepkit.onnx_backend import export_onnx

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    sr = 16000
    wav, desc = song(seconds, sr)
    if model:  # a trained model file instead (its own features and sizes)
        from sepkit.model_io import load_model_dict

        d = load_model_dict(model)
        conf = {"hidden": 500, "layers": 4, "emb_dim": 20, "n_freq": 150, **d["model_conf"]}
        if d["feat_conf"].get("sample_rate", 16000) != sr:
            raise SystemExit(f"{model}: bench_onnx.py reads 16 kHz songs")
    else:
        d, conf = model_dict(wav, sr)
    with tempfile.TemporaryDirectory(prefix="bench_onnx.") as tmp:
        path = Path(tmp) / "net.onnx"
        export_onnx(d, path)
        seps = {("torch", "float32"): Separator(d, dtype="float32"),
                ("onnxruntime", "float32"): Separator.from_pretrained(path, num_threads=threads)}
    if bf16_runs():
        seps[("torch", "bfloat16")] = Separator(d, dtype="bfloat16")
    order = [("torch", "float32"), ("torch", "bfloat16"), ("onnxruntime", "float32")]
    keys = [k for k in order if k in seps]
    n_par = sum(v.numel() for v in seps[("torch", "float32")].model.state_dict().values())
    net = (f"{conf['layers']} x {conf['hidden']} BLSTM, D = {conf['emb_dim']}, F = {conf['n_freq']}, input "
           f"{conf['input_dim']} ({n_par / 1e6:.2f} M parameters, {'trained: ' + str(model) if model else 'random weights'})")
    say(f"song: {seconds:.0f} s, {desc}; network: {net}; {threads} threads (torch and onnxruntime intra-op)")
    for s in seps.values():
        s.separate(wav[:sr], sr)  # warm-up
    base = seps[("torch", "float32")]
    with torch.inference_mode():  # the network alone: the song's first batch of segments
        x = torch.from_numpy(wav)[None]
        feats = base._features(base._mel(x)[0])
        L = base.segment_frames
        batch = feats[:(feats.shape[0] // L) * L].reshape(-1, L, feats.shape[1])[:32]
        net_out = {k: {h: seps[k]._forward(batch, h) for h in ("mi", "dc")} for k in keys}
    rows = []
    for head in ("mi", "dc"):
        outs = {k: seps[k].separate(wav, sr, head=head) for k in keys}
        times = interleaved([lambda k=k: seps[k].separate(wav, sr, head=head) for k in keys], repeat)
        for k, (wall, cpu) in zip(keys, times):
            ref = k == ("torch", "float32")
            snr = None if ref else snr_min(outs[("torch", "float32")], outs[k])
            diff = None if ref else float((net_out[k][head] - net_out[("torch", "float32")][head]).abs().max())
            rows.append((*k, head, wall, cpu, snr, diff))
            say(f"  {head} {k[0]:<11s} {k[1]:<8s} RTF {wall / seconds:.4f}  wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
                f"SNR vs torch f32 {'-' if snr is None else f'{snr:.1f} dB'}"
                f"{'' if diff is None else f', network outputs max abs diff {diff:.1e}'}")
    if not bf16_runs():
        for head in ("mi", "dc"):
            rows.append(("torch", "bfloat16", head, None, None, None, None))
    spread = float(net_out[("torch", "float32")]["mi"].std())
    return {"rows": rows, "song": desc, "net": net, "seconds": seconds, "mask_std": spread}


def table(res):
    base = {r[2]: r[3] for r in res["rows"] if r[:2] == ("torch", "float32")}
    cpu0 = {r[2]: r[4] for r in res["rows"] if r[:2] == ("torch", "float32")}
    lines = ["| head | backend | dtype | RTF | s per song | vs torch float32 | CPU s (ratio) | SNR vs torch float32 | "
             "network max abs diff |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    rank = {("torch", "float32"): 0, ("torch", "bfloat16"): 1, ("onnxruntime", "float32"): 2}
    for backend, dtype, head, wall, cpu, snr, diff in sorted(res["rows"], key=lambda r: (r[2] == "dc", rank[r[:2]])):
        if wall is None:
            lines.append(f"| {head.upper()} | {backend} | {dtype} | n/a | n/a | n/a | n/a | no native bf16 on this CPU | |")
            continue
        lines.append(f"| {head.upper()} | {backend} | {dtype} | {wall / res['seconds']:.4f} | {wall:.2f} | "
                     f"{wall / base[head]:.2f}x | {cpu:.2f} ({cpu / cpu0[head]:.2f}x) | "
                     f"{'(baseline)' if snr is None else f'{snr:.1f} dB'} | "
                     f"{'' if diff is None else f'{diff:.1e}'} |")
    return "\n".join(lines) + (f"\n\nMI masks of torch float32 on the song: std {res['mask_std']:.4f} around their "
                                f"mean; network: {res['net']}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads and onnxruntime intra-op threads (2)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds, medians (3)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the song (60)")
    p.add_argument("--model", help="a trained 16 kHz model file instead of the random recipe-size network")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    res = run(args.seconds, args.repeat, args.threads, model=args.model)
    print()
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
