"""tools/gpu_check.sh, the one-call check of a GPU machine, run on the CPU with its tiny sizes so that it cannot rot.

One module-scoped run of the whole script (recipe stages 0-4, bf16 training where the CPU runs a bf16
LSTM, 2 gloo DDP processes, separation parity, timings; about 85 CPU-seconds) is shared
by the tests below. Also: a failed check makes the script exit 1, and the DDP switches of
sepkit.train.distributed that the GPU run needs (SEPKIT_SHARE_GPU, SEPKIT_DIST_BACKEND).
"""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_check.sh"
VENV_PYTHON = REPO / "tools" / "venv" / "bin" / "python"
needs_venv = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="tools/venv not built (make venv)")


def run_check(out, *args, work=None, pre=()):
    """``tools/gpu_check.sh --device cpu [pre...] OUT [args...]`` (stdout and stderr merged)."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    cmd = ["bash", str(SCRIPT), "--device", "cpu", *pre] + (["--workdir", str(work)] if work else []) + [str(out), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpu_check")
    proc = run_check(base / "out", work=base / "work")
    return proc, base / "out", base / "work"


@needs_venv
def test_cpu_run_passes_every_check_and_writes_json_and_markdown(full_run):
    proc, out, work = full_run
    assert proc.returncode == 0, proc.stdout[-4000:]
    d = json.loads((out / "gpu_check.json").read_text())
    assert d["ok"] is True and d["device"] == "cpu" and all(c["ok"] for c in d["checks"])
    names = [c["name"] for c in d["checks"]]
    for want in ("train float32: recipe stages 0-4 with --ngpu 0", "train float32: loss falls",
                 "train float32: stage 4 separated test_remix with both heads (--inference_ngpu 0)",
                 "ddp: 2 processes (gloo) train through recipe stage 3", "ddp: replicas identical after every epoch",
                 "separate mi float32 on cpu vs CPU float32: SI-SDR >= 40 dB",
                 "separate dc float32 on cpu vs CPU float32: SI-SDR >= 40 dB", "timing: measured"):
        assert want in names, names
    # the recipe really trained, through its own stages, and the loss fell
    losses = d["train"]["float32"]["train_loss"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert (work / "egs" / "dsd100" / "chimera" / "exp" / "gpu_fp32" / "model.pt").is_file()
    assert d["train"]["float32"]["device"] == "cpu"
    ddp = d["ddp"]["gloo"]
    assert ddp["ok"] and ddp["epochs"] == ddp["epochs_in_sync"] == 3 and ddp["device"] == "cpu"
    # separation: CPU against CPU is the same computation (SI-SDR of identical signals, ~150 dB)
    seps = {(r["head"], r["dtype"]): r for r in d["separation"]}
    assert seps[("mi", "float32")]["si_sdr_vs_cpu_fp32_db"] > 100 and seps[("dc", "float32")]["si_sdr_vs_cpu_fp32_db"] > 100
    assert isinstance(d["dc_cpu_seed_db"], float)
    steps = {r["dtype"]: r for r in d["train_step"]}
    rtf = {(r["head"], r["dtype"]): r["rtf"] for r in d["separation_rtf"]}
    assert steps["float32"]["sepkit_frames_per_sec"] > 0 and steps["float32"]["lstm_frames_per_sec"] > 0
    assert {("mi", "float32"), ("dc", "float32")} <= set(rtf) and all(v > 0 for v in rtf.values())
    if d["env"]["bf16"]:  # this CPU runs a bf16 LSTM: the bf16 rows are there too
        assert d["train"]["bfloat16"]["train_loss"][-1] < d["train"]["bfloat16"]["train_loss"][0]
        assert ("mi", "bfloat16") in seps and "bfloat16" in steps and ("dc", "bfloat16") in rtf
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("# sepkit GPU check: cpu") and "**PASS**" in md
    assert "| train float32: loss falls | PASS |" in md
    assert "| dtype | sepkit | bare nn.LSTM | ratio | peak MiB |" in md and "| mi | float32 |" in md
    assert (out / "gpu_check.log").read_text().count("PASS") >= len(names)
    assert not list(out.glob(".*tmp*"))  # written through temporary names, none left


@needs_venv
def test_a_failed_check_exits_1_and_says_which(tmp_path):
    """A speed target no implementation reaches: the timing check fails, the script exits 1."""
    proc = run_check(tmp_path / "out", "--only", "timing", "--speed-target", "1000")
    assert proc.returncode == 1, proc.stdout[-3000:]
    d = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert d["ok"] is False and d["sections"] == ["timing"]
    failed = [c["name"] for c in d["checks"] if not c["ok"]]
    assert failed and all(n.startswith("train step") and "1000 x bare nn.LSTM" in n for n in failed)
    assert "**FAIL**" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_bad_wheels_folder_is_one_clear_line(tmp_path):
    proc = run_check(tmp_path / "out", work=tmp_path / "work", pre=["--wheels", str(tmp_path / "none")])
    assert proc.returncode == 1
    assert proc.stdout.strip().splitlines() == [f"gpu_check.sh: --wheels {tmp_path / 'none'}: no such folder"]
    assert not (tmp_path / "work").exists()


# ------------------------------------------------------------------ the DDP switches of the GPU run
def test_dist_backend_override(monkeypatch):
    from sepkit.train.distributed import _backend

    monkeypatch.delenv("SEPKIT_DIST_BACKEND", raising=False)
    assert _backend(torch.device("cpu")) == "gloo" and _backend(torch.device("cuda", 0)) == "nccl"
    monkeypatch.setenv("SEPKIT_DIST_BACKEND", "gloo")
    assert _backend(torch.device("cuda", 0)) == "gloo"  # gloo on CUDA tensors (NCCL refuses 2 ranks on 1 GPU)
    monkeypatch.setenv("SEPKIT_DIST_BACKEND", "nccl")
    with pytest.raises(SystemExit, match="needs CUDA"):
        _backend(torch.device("cpu"))
    monkeypatch.setenv("SEPKIT_DIST_BACKEND", "mpi")
    with pytest.raises(SystemExit, match="must be nccl or gloo"):
        _backend(torch.device("cpu"))


def test_share_gpu_maps_extra_ranks_round_robin(monkeypatch):
    """Two local ranks on a one-GPU machine: refused by default, both on cuda:0 with SEPKIT_SHARE_GPU=1."""
    from sepkit.train import distributed

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("SEPKIT_SHARE_GPU", raising=False)
    with pytest.raises(SystemExit, match="local rank 1 has no GPU"):
        distributed._pick_device("cuda", 1)
    monkeypatch.setenv("SEPKIT_SHARE_GPU", "1")
    assert distributed._pick_device("cuda", 1) == torch.device("cuda", 0)
    assert distributed._pick_device("cuda", 0) == torch.device("cuda", 0)
    assert chosen == [0, 0]
