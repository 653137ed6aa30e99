"""SIGKILL in the middle of an epoch, re-run the same command: the run ends with the weights of
an uninterrupted run (bit for bit on the CPU) and says in its log where it resumed."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import one_thread, PYTHON, REPO, make_corpus, subprocess_env, train_args  # noqa: E402,F401  (one_thread: a fixture)

from sepkit.bin.train import main  # noqa: E402

# Many small steps per epoch, so that the kill lands well inside epoch 2.
ARGS = ["--epochs", "3", "--batch_size", "2", "--segment_frames", "10", "--log_interval", "1",
        "--max_steps_per_epoch", "40", "--dropout", "0.2", "--tensorboard", "false"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _final_state(outdir):
    d = torch.load(Path(outdir) / "checkpoints" / "ckpt-epoch3.pt", weights_only=True)
    return d["model_state"], d["checkpoint"]


def test_sigkill_mid_epoch_then_resume_gives_uninterrupted_weights(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_train=6, n_valid=2)
    env = subprocess_env(threads=1)
    killed = tmp_path / "killed"
    cmd = [PYTHON, "-m", "sepkit.bin.train", *train_args(corpus, killed, *ARGS)]
    victim = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "train.log"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and victim.poll() is None:
            if log.is_file() and "epoch 2 step 44 (4/40)" in log.read_text():
                os.kill(victim.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-epoch"
    text = log.read_text()
    assert "epoch 2 done" not in text and "ckpt-epoch1.pt" in text
    assert not (killed / "checkpoints" / "ckpt-epoch2.pt").exists()

    rerun = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # meanwhile, the uninterrupted run, in this process (one thread, as the subprocesses)
    assert main(train_args(corpus, tmp_path / "full", *ARGS)) == 0
    assert rerun.wait(timeout=180) == 0, rerun.stderr.read()[-3000:]
    resumed_log = log.read_text()
    assert f"resuming from {killed / 'checkpoints' / 'ckpt-epoch1.pt'}: 1 epochs done, step 40" in resumed_log

    state_a, ck_a = _final_state(tmp_path / "full")
    state_b, ck_b = _final_state(killed)
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name
    assert ck_a["step"] == ck_b["step"] == 120
    assert [h["valid_loss"] for h in ck_a["history"]] == [h["valid_loss"] for h in ck_b["history"]]
    for a, b in zip(ck_a["optimizer"]["state"].values(), ck_b["optimizer"]["state"].values()):
        assert torch.equal(a["square_avg"], b["square_avg"])
