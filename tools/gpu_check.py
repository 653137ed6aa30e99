"""The checks of tools/gpu_check.sh (run that script; docs/distributed.md says what each check does).

Sections (``--only``, comma-separated): ``train`` (recipe stages 0-3 with --ngpu 1, float32 and bf16
autocast, the loss must fall), ``ddp`` (recipe stage 3 with 2 DDP processes on one device, replicas
identical every epoch), ``separate`` (a long file through both heads of the trained model, float32
and bf16, against the CPU float32 path; peak device memory), ``timing`` (training step of the paper
network vs a bare nn.LSTM model, separation RTF of the paper network per head and dtype).
Writes ``OUTDIR/gpu_check.json`` and ``OUTDIR/gpu_check.md``; exit status 1 when a check failed.
"""
import argparse
import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests" / "recipes")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

logger = logging.getLogger("gpu_check")
SECTIONS = ("train", "ddp", "separate", "timing")
SIZES = Path(__file__).with_suffix(".yaml")  # the sizes of each --device


class Report:
    """Checks (name, ok, detail) and measurements, written as JSON and as a markdown table."""

    def __init__(self, device):
        self.checks, self.data = [], {"device": device}

    def check(self, name, ok, detail=""):
        self.checks.append({"name": name, "ok": bool(ok), "detail": str(detail)})
        logger.info("%s %s%s", "PASS" if ok else "FAIL", name, f": {detail}" if detail else "")
        return bool(ok)

    @property
    def ok(self):
        return all(c["ok"] for c in self.checks)

    def write(self, outdir):
        from sepkit.audio import atomic_path

        d = {"ok": self.ok, "checks": self.checks, **self.data}
        for name, text in (("gpu_check.json", json.dumps(d, indent=1, default=str) + "\n"),
                           ("gpu_check.md", markdown(d))):
            with atomic_path(outdir / name) as tmp:
                Path(tmp).write_text(text)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _peak_mib(device, reset=False):
    """Peak device memory (MiB) since the last reset (None on the CPU); ``reset`` starts a new count."""
    if torch.device(device).type != "cuda":
        return None
    if reset:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def bf16_ok(device):
    from sepkit.separate import SeparationError, resolve_dtype

    try:
        return resolve_dtype("bfloat16", device) is not None
    except SeparationError:
        return False


def environment(device):
    info = {"python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": datetime.date.today().isoformat(), "bf16": bf16_ok(device)}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        try:
            v = torch.cuda.nccl.version()
            nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception as exc:  # a torch built without NCCL: reported, the DDP section says the rest
            nccl = f"unavailable ({type(exc).__name__})"
        info.update(gpu=p.name, gpu_mib=round(p.total_memory / 2**20), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), nccl=nccl)
    return info


# ------------------------------------------------------------------ recipe stages (train, ddp)
class Recipe:
    """egs/dsd100/chimera in a workspace under ``workdir``, run with this interpreter (no venv needed)."""

    def __init__(self, workdir, size):
        from recipe_common import make_workspace

        self.base, self.size = Path(workdir), size
        shim = self.base / "tools" / "venv" / "bin"  # path.sh activates ../../../tools/venv
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "activate").write_text(f'export PATH="{shim}:$PATH"\n')
        for name in ("python", "python3"):
            (shim / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
            (shim / name).chmod(0o755)
        self.rec = make_workspace(self.base, "dsd100/chimera")
        self.corpus = self.base / "DSD100"
        self.logs = self.base / "logs"
        self.logs.mkdir(exist_ok=True)

    def make_corpus(self):
        from sepkit.data.synth_layouts import make_corpus

        if not self.corpus.exists():
            make_corpus("dsd100", self.corpus, num_songs=self.size["songs"], num_test_songs=1,
                        duration=self.size["song_seconds"], seed=3, progress=False)

    def run(self, name, *args, env=None, timeout=600):
        """``./run.sh --dsd100 ... args``; returns ``(ok, log text)`` (the log is also kept in logs/).

        Past ``timeout`` seconds the whole process group (run.sh, its jobs, torchrun's workers) is killed.
        """
        s = self.size
        cmd = ["./run.sh", "--dsd100", str(self.corpus), "--nj", str(s["nj"]), "--train_hours", str(s["train_hours"]),
               "--valid_hours", str(s["valid_hours"]), "--test_seconds", "3", "--remix_args", s["remix_args"],
               *map(str, args)]
        path = [str(REPO)] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]
        full_env = dict(os.environ, SEPKIT_BACKEND="local", PYTHONPATH=os.pathsep.join(path), **(env or {}))
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=self.rec, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            text, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            text = proc.communicate()[0] + f"\nERROR: killed after {timeout} s\n"
        (self.logs / f"{name}.log").write_text(text)
        logger.info("%s: ./run.sh %s -> exit %d in %.1f s", name, " ".join(map(str, args)), proc.returncode,
                    time.perf_counter() - t0)
        return proc.returncode == 0, text

    def exp(self, tag):
        return self.rec / "exp" / tag


def _why(text, n=3):
    """Why a run failed, in one line: its first NCCL line, if any, and its last ``n`` error lines."""
    lines = [x.strip()[-300:] for x in text.splitlines() if re.search(r"error|duplicate gpu|killed after", x, re.I)]
    key = [x for x in lines if re.search(r"duplicate gpu|nccl", x, re.I)][:1]
    return " | ".join(dict.fromkeys(key + lines[-n:])) or " | ".join(text.splitlines()[-n:])


def _read(path):
    return path.read_text() if path.is_file() else ""


def _history(expdir):
    from sepkit.train import checkpoint as ck

    path = ck.find_latest(expdir)
    return ck.load_checkpoint(path)["checkpoint"]["history"] if path else []


def _train_args(rep, args, extra=""):
    return " ".join(x for x in (rep.data["sizes"]["train_args"], extra, args.train_args) if x)


def check_train(rep, recipe, args):
    ngpu, bf16 = (1 if args.device == "cuda" else 0), rep.data["env"]["bf16"]
    recipe.make_corpus()
    out = rep.data.setdefault("train", {})
    # float32: stages 0-4 (stage 4 separates test_remix on the same device); bf16: stage 3 only
    runs = [("float32", "gpu_fp32", 0, 4, "")] + ([("bfloat16", "gpu_bf16", 3, 3, "--dtype bfloat16")] if bf16 else [])
    if not bf16:  # a failure on a GPU; a CPU without a bf16 LSTM is fine
        rep.check("train bf16: autocast available", args.device == "cpu", f"no bf16 LSTM on {args.device}")
    for dtype, tag, stage, stop, extra in runs:
        ok, text = recipe.run(f"train_{dtype}", "--stage", stage, "--stop_stage", stop, "--ngpu", ngpu, "--tag", tag,
                              "--inference_ngpu", ngpu, "--head", "both", "--train_args", _train_args(rep, args, extra),
                              timeout=300)
        why = _why(_read(recipe.exp(tag) / "log" / "train.log") + text) if not ok else ""
        if not rep.check(f"train {dtype}: recipe stages {stage}-{stop} with --ngpu {ngpu}", ok, why):
            continue
        if stop >= 4:
            wavs = {h: len(list((recipe.exp(tag) / f"separate_test_remix_{h}").rglob("*.wav"))) for h in ("mi", "dc")}
            rep.check(f"train {dtype}: stage 4 separated test_remix with both heads (--inference_ngpu {ngpu})",
                      all(wavs.values()), f"wav files per head: {wavs}")
        hist = _history(recipe.exp(tag))
        losses = [round(h["train_loss"], 5) for h in hist]
        log = _read(recipe.exp(tag) / "train.log")
        fps, on = re.findall(r"epoch \d+ done: .*?, ([0-9.]+) frames/s", log), re.search(r"process\(es\) on (\S+)", log)
        out[dtype] = {"train_loss": losses, "valid_loss": [round(h["valid_loss"], 5) for h in hist],
                      "frames_per_sec": [float(x) for x in fps], "device": on.group(1) if on else None}
        rep.check(f"train {dtype}: loss falls", len(losses) >= 2 and losses[-1] < losses[0],
                  f"train loss by epoch {losses}")
        if args.device == "cuda":
            rep.check(f"train {dtype}: ran on the GPU", out[dtype]["device"] == "cuda:0", f"on {out[dtype]['device']}")


def check_ddp(rep, recipe, args):
    """Recipe stage 3 with 2 processes on one device; NCCL first, then gloo on CUDA tensors."""
    recipe.make_corpus()
    if not (recipe.rec / "dump").exists():  # features of stage 2 (made by the train section when it ran)
        recipe.run("ddp_features", "--stage", 0, "--stop_stage", 2)
    share = {"SEPKIT_SHARE_GPU": "1"}  # both ranks on cuda:0 (distributed.py)
    tries = ([("nccl", 2, share), ("gloo", 2, dict(share, SEPKIT_DIST_BACKEND="gloo"))] if args.device == "cuda"
             else [("gloo", 0, {"SEPKIT_NPROC_CPU": "2"})])
    out = rep.data.setdefault("ddp", {})
    for backend, ngpu, env in tries:
        exp = recipe.exp(f"ddp_{backend}")
        ok, text = recipe.run(f"ddp_{backend}", "--stage", 3, "--stop_stage", 3, "--ngpu", ngpu, "--tag", exp.name,
                              "--train_args", _train_args(rep, args), env=env, timeout=180)
        log = _read(exp / "train.log")
        out[backend] = {"ok": ok, "error": "" if ok else _why(_read(exp / "log" / "train.log") + text)}
        if ok:
            break
        logger.warning("DDP with %s failed: %s", backend, out[backend]["error"])
    if backend != tries[0][0]:
        out["note"] = f"{tries[0][0]} refused 2 ranks on one device ({out[tries[0][0]]['error']}); used {backend}"
    if not rep.check(f"ddp: 2 processes ({backend}) train through recipe stage 3", ok, out[backend]["error"]):
        return
    epochs = len(re.findall(r"epoch \d+ done", log))
    synced = log.count("parameters identical on 2 ranks")
    on = re.search(r"2 process\(es\) on (\S+) \((\w+)\)", log)
    out[backend].update(epochs=epochs, epochs_in_sync=synced, device=on.group(1) if on else None,
                        train_loss=[round(h["train_loss"], 5) for h in _history(exp)])
    rep.check("ddp: replicas identical after every epoch", epochs >= 1 and synced == epochs,
              f"{synced} of {epochs} epochs compared equal on 2 ranks, {on.group(0) if on else 'no process line'}")


# ------------------------------------------------------------------ separation
def long_file(recipe, seconds):
    """A mixture of the synthetic corpus, repeated to ``seconds``: ``(C, N) float32, rate``."""
    from sepkit.audio import read_audio

    mix = sorted((recipe.corpus / "Mixtures" / "Dev").glob("*/mixture.wav"))[0]
    wav, sr = read_audio(mix)
    n = int(seconds * sr)
    return np.tile(wav, (1, -(-n // wav.shape[-1])))[:, :n].copy(), sr


def _parity_db(est, ref):
    from sepkit.metrics import si_sdr

    """Least SI-SDR (dB) of ``est`` against ``ref`` over sources and channels (identical: about 150)."""
    return float(min(np.min(np.nan_to_num(si_sdr(est[s], ref[s]), nan=-np.inf)) for s in ref))


def check_separate(rep, recipe, args):
    """Both heads of the trained model, float32 and bf16 on the device, against the CPU float32 path.

    float32 must agree within ``--parity-db``; bf16 MI within ``--bf16-floor-db``; bf16 DC is reported
    only (binary masks from k-means: bins near the cluster boundary flip with any change of the
    embeddings). ``dc_cpu_seed_db`` is CPU float32 with k-means seed 0 vs 1: how far DC moves with
    k-means' random draws alone (the CPU and CUDA generators give different draws for one seed).
    """
    from sepkit import Separator

    model = recipe.exp("gpu_fp32") / "model.pt"
    if not rep.check("separate: trained model available", model.is_file(), str(model.relative_to(recipe.base))):
        return
    wav, sr = long_file(recipe, rep.data["sizes"]["sep_seconds"])
    rows = rep.data.setdefault("separation", [])
    dtypes = ["float32"] + (["bfloat16"] if rep.data["env"]["bf16"] else [])
    for head in ("mi", "dc"):
        ref = Separator.from_pretrained(model, device="cpu", dtype="float32").separate(wav, sr, head=head)
        if head == "dc":
            other = Separator.from_pretrained(model, device="cpu", dtype="float32", seed=1).separate(wav, sr, head=head)
            rep.data["dc_cpu_seed_db"] = round(_parity_db(other, ref), 2)
        for dtype in dtypes:
            sep = Separator.from_pretrained(model, device=args.device, dtype=dtype)
            _peak_mib(args.device, reset=True)
            t0 = time.perf_counter()
            est = sep.separate(wav, sr, head=head)
            _sync(args.device)
            secs = time.perf_counter() - t0
            db, peak = _parity_db(est, ref), _peak_mib(args.device)
            rows.append({"head": head, "dtype": dtype, "si_sdr_vs_cpu_fp32_db": round(db, 2), "peak_mib": peak,
                         "rtf_first_call": round(secs / (wav.shape[-1] / sr), 5)})
            limit = args.parity_db if dtype == "float32" else args.bf16_floor_db if head == "mi" else None
            detail = (f"{db:.1f} dB, {wav.shape[-1] / sr:.0f} s {wav.shape[0]}-channel file"
                      + (f", peak {peak} MiB" if peak is not None else "")
                      + (f"; CPU k-means seed 0 vs 1: {rep.data['dc_cpu_seed_db']} dB" if head == "dc" else ""))
            if limit is None:
                logger.info("separate %s %s vs CPU float32 (reported, not checked): %s", head, dtype, detail)
            else:
                rep.check(f"separate {head} {dtype} on {args.device} vs CPU float32: SI-SDR >= {limit:g} dB",
                          db >= limit, detail)


# ------------------------------------------------------------------ timing
def _time(fn, device, repeat, warmup=2):
    """Median seconds of ``fn()`` (bench/common.timeit), waiting for the device after each call."""
    from common import timeit

    return timeit(lambda: (fn(), _sync(device)), repeat=repeat, warmup=warmup)


def check_timing(rep, args):
    from bench_core import step_fns
    from bench_separate import model_dict

    from sepkit import Separator

    s, dev = rep.data["sizes"], args.device
    st = s["step"]
    dtypes = [("float32", None)] + ([("bfloat16", torch.bfloat16)] if rep.data["env"]["bf16"] else [])
    steps = rep.data.setdefault("train_step", [])
    for name, autocast in dtypes:
        _peak_mib(dev, reset=True)
        ours, base = step_fns(B=st["B"], T=st["T"], device=dev, autocast=autocast, hidden=st["hidden"],
                              layers=st["layers"], F=st["F"], D=st["D"])
        o, b = [], []
        for _ in range(3):  # interleaved rounds
            o.append(_time(ours, dev, s["repeat"]))
            b.append(_time(base, dev, s["repeat"]))
        frames = st["B"] * st["T"]
        fo, fb = frames / float(np.median(o)), frames / float(np.median(b))
        steps.append({"dtype": name, "sepkit_frames_per_sec": round(fo), "lstm_frames_per_sec": round(fb),
                      "ratio": round(fo / fb, 3), "peak_mib": _peak_mib(dev), **st})
        if args.speed_target > 0:
            rep.check(f"train step {name}: sepkit >= {args.speed_target:g} x bare nn.LSTM",
                      fo / fb >= args.speed_target, f"{fo:.0f} vs {fb:.0f} frames/s ({fo / fb:.2f}x)")
        del ours, base
    sr, secs = 44100, s["sep_seconds"]
    wav = (np.random.default_rng(0).standard_normal((2, int(sr * secs))) * 0.1).astype(np.float32)
    d = model_dict(**s["sep_net"])
    rtf = rep.data.setdefault("separation_rtf", [])
    for head in ("mi", "dc"):
        for name, _ in dtypes:
            sep = Separator(d, device=dev, dtype=name)
            _peak_mib(dev, reset=True)
            t = _time(lambda: sep.separate(wav, sr, head=head), dev, max(1, s["repeat"] // 2), warmup=1)
            rtf.append({"head": head, "dtype": name, "seconds": secs, "rtf": round(t / secs, 5),
                        "peak_mib": _peak_mib(dev), **s["sep_net"]})
    rep.check("timing: measured", bool(steps) and bool(rtf),
              "; ".join(f"{r['head']} {r['dtype']} RTF {r['rtf']:.4f}" for r in rtf))


# ------------------------------------------------------------------ report
def _table(title, rows, cols):
    """Markdown lines: a title, then one row per dict of ``rows``; ``cols`` = [(header, key)]."""
    return ["", title, "", "| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)] + [
        "| " + " | ".join(str(r.get(k)).replace("|", "/") for _, k in cols) + " |" for r in rows]


def markdown(d):
    env, verdict = d.get("env", {}), "PASS" if d["ok"] else "FAIL"
    versions = f"torch {env.get('torch')}, python {env.get('python')}" + (
        f", CUDA {env['cuda']}, cuDNN {env['cudnn']}, NCCL {env['nccl']}" if "cuda" in env else "")
    checks = [dict(c, result="PASS" if c["ok"] else "FAIL") for c in d["checks"]]
    lines = [f"# sepkit GPU check: {env.get('gpu', d['device'])}, {env.get('date')}", "", f"{versions}; **{verdict}**"]
    lines += _table("Checks:", checks, [("check", "name"), ("result", "result"), ("detail", "detail")])
    if d.get("ddp", {}).get("note"):
        lines += ["", f"DDP: {d['ddp']['note']}"]
    if d.get("train_step"):
        st = d["train_step"][0]
        lines += _table(f"Training step, {st['layers']} x {st['hidden']} BLSTM, B = {st['B']}, T = {st['T']} "
                        "(frames/s, interleaved in one run):", d["train_step"],
                        [("dtype", "dtype"), ("sepkit", "sepkit_frames_per_sec"),
                         ("bare nn.LSTM", "lstm_frames_per_sec"),
                         ("ratio", "ratio"), ("peak MiB", "peak_mib")])
    if d.get("separation_rtf"):
        r0 = d["separation_rtf"][0]
        lines += _table(f"Separation of a {r0['seconds']:.0f} s stereo 44.1 kHz file, {r0['layers']} x {r0['hidden']} "
                        "network (random weights):", d["separation_rtf"],
                        [("head", "head"), ("dtype", "dtype"), ("RTF", "rtf"), ("peak MiB", "peak_mib")])
    if d.get("separation"):
        lines += _table(f"Trained model on {d['device']} vs the CPU float32 path (DC, CPU k-means seed 0 vs 1: "
                        f"{d.get('dc_cpu_seed_db')} dB):", d["separation"],
                        [("head", "head"), ("dtype", "dtype"), ("SI-SDR (dB)", "si_sdr_vs_cpu_fp32_db"),
                         ("RTF (first call)", "rtf_first_call"), ("peak MiB", "peak_mib")])
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir", type=Path)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--workdir", type=Path, required=True, help="scratch folder (corpus, features, models)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run, of {','.join(SECTIONS)}")
    p.add_argument("--parity-db", type=float, default=40.0, help="float32 device vs CPU: least SI-SDR (dB)")
    p.add_argument("--bf16-floor-db", type=float, default=10.0, help="bf16 device vs CPU float32: least SI-SDR (dB)")
    p.add_argument("--speed-target", type=float, default=None,
                   help="least training-step speed ratio sepkit / bare nn.LSTM (default 0.9 on cuda, 0 = off on cpu)")
    p.add_argument("--train-args", default="", help="more options of sepkit.bin.train for the recipe runs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gpu_check %(levelname)s: %(message)s")
    only = [x for x in args.only.split(",") if x]
    if set(only) - set(SECTIONS):
        p.error(f"--only: unknown sections {sorted(set(only) - set(SECTIONS))}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"gpu_check: --device cuda, but torch {torch.__version__} sees no CUDA device (try --device cpu)")
    if args.speed_target is None:
        args.speed_target = 0.9 if args.device == "cuda" else 0.0
    args.outdir.mkdir(parents=True, exist_ok=True)
    rep = Report(args.device)
    import yaml

    sizes = yaml.safe_load(SIZES.read_text())[args.device]
    rep.data.update(env=environment(args.device), sizes=sizes, sections=only)
    t0 = time.perf_counter()
    recipe = Recipe(args.workdir, sizes) if set(only) & {"train", "ddp", "separate"} else None
    for name in only:
        fn = {"train": check_train, "ddp": check_ddp, "separate": check_separate}.get(name)
        t1 = time.perf_counter()
        try:
            fn(rep, recipe, args) if fn else check_timing(rep, args)
        except Exception as exc:  # one broken section must not hide the others' results
            logger.exception("section %s", name)
            rep.check(f"{name}: section ran", False, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
        rep.data.setdefault("seconds", {})[name] = round(time.perf_counter() - t1, 1)
        rep.write(args.outdir)
    rep.data["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    rep.write(args.outdir)
    logger.info("%s in %.0f s: %s", "PASS" if rep.ok else "FAIL", rep.data["seconds"]["total"],
                args.outdir / "gpu_check.md")
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
