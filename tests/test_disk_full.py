"""The disk filling up mid-write: separation and training checkpoints end in one line, earlier outputs intact.

A small tmpfs is mounted over the output folder (root can mount; elsewhere the tests skip, saying so).
The features stage has its own full-disk test (tests/test_trust_stages.py).
"""
import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_separate_cli import exp_dir, outputs, write  # noqa: E402,F401  (exp_dir: a module fixture)
from test_train_helpers import PYTHON, REPO, make_corpus, subprocess_env, train_args  # noqa: E402

from sepkit.bin import separate as separate_bin  # noqa: E402


@contextlib.contextmanager
def tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"sepkit-test-{uuid.uuid4().hex[:6]}",
                        str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder, leave=0):
    """Fill the file system of ``folder`` up to ``leave`` bytes free."""
    with open(folder / "filler.bin", "wb") as f:
        chunk = b"\0" * 4096
        try:
            while True:
                st = os.statvfs(folder)
                if st.f_bavail * st.f_frsize <= leave + 4096:
                    break
                f.write(chunk)
                f.flush()
        except OSError:
            pass


def test_separation_on_a_full_disk(tmp_path, capsys, exp_dir):  # noqa: F811
    small = write(tmp_path / "small.wav", (1, 4000), 16000)  # 2 x 16 kB of float outputs: fits
    big = write(tmp_path / "big.wav", (2, 44100 * 3), 44100)  # 2 x 1 MB: does not
    with tmpfs(tmp_path / "disk", "400k") as disk:
        rc = separate_bin.main(["--no-progress", "--quiet", "--model", str(exp_dir), "--outdir", str(disk / "sep"),
                                str(small), str(big)])
        lines = capsys.readouterr().err.splitlines()
        assert rc == 1 and len(lines) == 1, lines
        assert "big.wav" in lines[0] and "No space left on device" in lines[0], lines
        assert outputs(disk / "sep") == ["small", "small/accompaniment.wav", "small/vocals.wav"]  # no partial, no temp
        assert sf.info(disk / "sep" / "small" / "vocals.wav").frames == 4000
        assert [p.name for p in (disk / "sep").iterdir()] == ["small"]


def test_training_checkpoint_on_a_full_disk(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_train=4, n_valid=2)
    env = subprocess_env(threads=1)
    with tmpfs(tmp_path / "disk", "16m") as disk:
        exp = disk / "exp"
        args = train_args(corpus, exp, "--max_steps_per_epoch", "2", "--tensorboard", "false")
        first = subprocess.run([PYTHON, "-m", "sepkit.bin.train", *args, "--epochs", "1"], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr[-2000:]
        ck1 = exp / "checkpoints" / "ckpt-epoch1.pt"
        before = ck1.read_bytes()
        fill(disk, leave=0)
        second = subprocess.run([PYTHON, "-m", "sepkit.bin.train", *args, "--epochs", "3"], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        errors = [ln for ln in second.stderr.splitlines() if " ERROR: " in ln or "Traceback" in ln or "Error" in ln]
        assert second.returncode == 1, second.stderr[-3000:]
        assert len(errors) == 1 and "No space left on device" in errors[0] and "run the same command again" in \
            errors[0], second.stderr[-3000:]
        assert "Logging error" not in second.stderr
        assert ck1.read_bytes() == before  # the complete checkpoint is untouched
        assert sorted(p.name for p in (exp / "checkpoints").iterdir()) == ["ckpt-epoch1.pt"]  # no partial file
        assert not [p for p in exp.rglob(".*.tmp")]
        torch.load(ck1, weights_only=True)
        (disk / "filler.bin").unlink()  # space again: the same command resumes and finishes
        third = subprocess.run([PYTHON, "-m", "sepkit.bin.train", *args, "--epochs", "3"], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=300)
        assert third.returncode == 0, third.stderr[-2000:]
        assert (exp / "checkpoints" / "ckpt-epoch3.pt").is_file() and np.isfinite(
            torch.load(exp / "model.pt", weights_only=True)["model_state"]["linear.weight"].numpy()).all()
