#!/usr/bin/env python
"""Peak resident memory of separating long files: streamed (sepkit-separate) vs the in-memory path.

    OMP_NUM_THREADS=1 tools/venv/bin/python bench/bench_memory.py [--minutes 1 30 180] [--old-max-minutes 30]

For each length, a 44.1 kHz stereo PCM_16 file of noise (a 7 s block of white noise repeated under
a slowly varying gain, written block by block, so this script stays small) is separated with
both heads, each case in a fresh subprocess that prints its ``ru_maxrss``:

* streamed: ``sepkit-separate`` (``sepkit.bin.separate.main``: ``Separator.separate_file``, blocks
  in and out);
* in-memory: what ``sepkit-separate`` did before: ``read_audio`` of the whole file,
  ``Separator.separate`` on the arrays, ``write_audio`` of each source (skipped above
  ``--old-max-minutes``: 7.8 GB measured for 3 h with the MI head).

Model: a random-weight Chimera network with the paper's features (16 kHz, 512/128 STFT, 150 mels
+ deltas) but one BLSTM layer of 16 units per direction and D = 4, so that 3 hours run in minutes on
one core; the network's size does not change how memory grows with length. Outputs are FLOAT WAV
(the CLI default). Timings on a shared machine are noisy; RSS is what this measures.
"""
import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 44100


def model_dict():
    import torch

    from sepkit.frontend import CMVN, FeatureConfig
    from sepkit.model_io import make_model_dict
    from sepkit.nets import ChimeraNet

    torch.manual_seed(0)
    fc = FeatureConfig()
    conf = {"type": "chimera", "input_dim": fc.input_dim, "hidden": 16, "layers": 1, "emb_dim": 4}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    cmvn = CMVN(torch.full((fc.input_dim,), -4.0), torch.full((fc.input_dim,), 2.0))
    return make_model_dict(net, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"], {"segment_frames": 100})


def make_input(path, minutes):
    import soundfile as sf

    rng = np.random.default_rng(0)
    block = (rng.standard_normal((7 * SR, 2)) * 0.1).astype(np.float32)
    total, done = int(minutes * 60 * SR), 0
    with sf.SoundFile(path, "w", SR, 2, subtype="PCM_16") as f:
        while done < total:
            n = min(len(block), total - done)
            f.write(block[:n] * (0.6 + 0.4 * np.sin(done / SR / 60.0)))
            done += n


def child(mode, model, head, src, out):
    """Runs in a fresh process: one separation, then ``PEAK_MB <ru_maxrss MB> SECONDS <s>``."""
    t0 = time.perf_counter()
    if mode == "streamed":
        from sepkit.bin.separate import main

        rc = main(["--model", model, "--head", head, "--dtype", "float32", "--outdir", out, "-q", "--no-progress", src])
        assert rc == 0, rc
    elif mode == "in-memory":
        from sepkit import Separator
        from sepkit.audio import read_audio, write_audio

        sep = Separator.from_pretrained(model, dtype="float32")
        wav, sr = read_audio(src)
        est = sep.separate(wav, sr, head=head)
        del wav
        for name, y in est.items():
            write_audio(Path(out) / f"{name}.wav", y, sr, subtype="FLOAT")
    else:  # start-up only: imports and the model
        from sepkit import Separator

        Separator.from_pretrained(model, dtype="float32")
    print(f"PEAK_MB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
          f"SECONDS {time.perf_counter() - t0:.1f}", flush=True)


def run_child(mode, model, head, src, out):
    res = subprocess.run([sys.executable, __file__, "_child", mode, str(model), head, str(src), str(out)],
                         capture_output=True, text=True)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("PEAK_MB")]
    if res.returncode or not line:
        raise SystemExit(f"{mode} {head} {src}: failed\n{res.stdout}\n{res.stderr}")
    _, peak, _, secs = line[-1].split()
    return float(peak), float(secs)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        return child(*argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 30, 180])
    p.add_argument("--heads", nargs="+", default=["mi", "dc"], choices=["mi", "dc"])
    p.add_argument("--old-max-minutes", type=float, default=30.0,
                   help="run the in-memory path only up to this length (it needs ~45 MB per minute and more)")
    p.add_argument("--tmp", default=None, help="directory for the generated files (default: the system's)")
    args = p.parse_args(argv)
    from sepkit.model_io import save_model_dict

    with tempfile.TemporaryDirectory(prefix="bench_memory.", dir=args.tmp) as tmp:
        tmp = Path(tmp)
        save_model_dict(tmp / "small.pt", model_dict())
        base, _ = run_child("startup", tmp / "small.pt", "mi", "-", "-")
        print(f"start-up (imports + model): {base:.0f} MB. 44.1 kHz stereo noise; model: Chimera 1 x 16 BLSTM, "
              "paper features, D = 4, random weights")
        print("| input | head | streamed peak RSS MB | streamed s | in-memory peak RSS MB | in-memory s | ratio |")
        print("|---|---|---|---|---|---|---|", flush=True)
        for minutes in args.minutes:
            src = tmp / f"in{minutes:g}.wav"
            make_input(src, minutes)
            for head in args.heads:
                out = tmp / "out"
                peak, secs = run_child("streamed", tmp / "small.pt", head, src, out)
                got = out / src.stem / "vocals.wav"
                import soundfile as sf

                info = sf.info(got)
                assert (info.samplerate, info.channels, info.frames) == (SR, 2, int(minutes * 60 * SR)), info
                _rmtree(out)
                old = "skipped (above --old-max-minutes)"
                old_s, ratio = "", ""
                if minutes <= args.old_max_minutes:
                    out.mkdir()
                    old_peak, old_secs = run_child("in-memory", tmp / "small.pt", head, src, out)
                    _rmtree(out)
                    old, old_s, ratio = f"{old_peak:.0f}", f"{old_secs:.0f}", f"{old_peak / peak:.1f}x"
                print(f"| {minutes:g} min | {head} | {peak:.0f} | {secs:.0f} | {old} | {old_s} | {ratio} |", flush=True)
            src.unlink()


def _rmtree(path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
