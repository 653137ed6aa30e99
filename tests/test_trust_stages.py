"""Issue 23: stale stages, a corrupt ark, a full disk during features, two runs of one recipe.

* A stage is done when its inputs are what they were (DESIGN.md section 6): utils/lib.sh's stamps
  record the size and time of input files and the fingerprint of input data dirs; utils/train.sh
  refuses to resume or skip a run whose features changed (features: tests/test_compute_feats.py).
* A truncated or overwritten ark under a dump: one line naming the ark and the utterance.
* The disk filling up during feature extraction: one line; earlier dumps intact; nothing
  half-written taken for done.
* Two runs of one recipe in one folder: the second refuses, naming the folder and the pid.
"""
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_compute_feats import CONF, _make_data  # noqa: E402
from test_train_helpers import make_corpus, subprocess_env, train_args  # noqa: E402

from sepkit.bin import compute_feats  # noqa: E402
from sepkit.data.dataset import DumpError, FeatureDump, read_dump_scp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
UTILS = REPO / "utils"


def _env():
    env = subprocess_env(1)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["SEPKIT_PYTHON"] = sys.executable
    return env


def _bash(script, cwd, **kw):
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=120, **kw)


# --------------------------------------------------------------------------------------------------
# stamps of utils/lib.sh: inputs as they were, not "older than the marker"

def test_stamp_records_inputs_not_times(tmp_path):
    data = _make_data(tmp_path, clips={"x1": (8000, 1, 0.2)})
    scp = tmp_path / "in.scp"
    scp.write_text("a 1\n")
    lib = f". {UTILS}/lib.sh; "
    marker = tmp_path / "m" / ".done"
    ok = f"stamp_ok {marker} SIG {scp} {data} && echo fresh || echo stale"
    assert _bash(lib + f"stamp_write {marker} SIG {scp} {data}", tmp_path).returncode == 0
    assert _bash(lib + ok, tmp_path).stdout.strip() == "fresh"
    # an input replaced by an older file of the same size (restored from a copy, moved back): stale
    scp.write_text("b 2\n")
    os.utime(scp, ns=(1_000_000_000, 1_000_000_000))
    assert _bash(lib + ok, tmp_path).stdout.strip() == "stale"
    assert _bash(lib + f"stamp_write {marker} SIG {scp} {data}; " + ok, tmp_path).stdout.strip() == "fresh"
    # audio of the data dir rewritten in place, its scp files untouched (a remix with another seed)
    wav = Path(next(iter((data / "wav.scp").read_text().split()[1:2])))
    x, sr = sf.read(wav, dtype="float32")
    sf.write(wav, x[::-1], sr, subtype="FLOAT")
    os.utime(wav, ns=(1_000_000_000, 1_000_000_000))  # even with an old time
    assert _bash(lib + ok, tmp_path).stdout.strip() == "stale"
    # a marker of an older sepkit (no records): the "not newer" rule still holds
    marker.write_text("SIG\n")
    assert _bash(lib + ok, tmp_path).stdout.strip() == "fresh"
    scp.touch()
    assert _bash(lib + ok, tmp_path).stdout.strip() == "stale"


# --------------------------------------------------------------------------------------------------
# training on features that changed since its checkpoints were made

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("trust"), n_train=3, n_valid=2, seconds=0.6)


def _train_sh(corpus, out):
    args = train_args(corpus, out, "--epochs", "1", "--tensorboard", "false")
    return subprocess.run(["bash", str(UTILS / "train.sh"), "--ngpu", "0", "--", *args], env=_env(),
                          capture_output=True, text=True, timeout=300)


def test_training_refuses_features_that_changed(corpus, tmp_path):
    """Issue 23 item 4, stage 3: after the features were recomputed, the finished run was taken for
    done ("training already finished") with a model of the old features."""
    dumps = tmp_path / "dumps"
    shutil.copytree(corpus["train_dump"].parent, dumps)
    corpus = dict(corpus, train_dump=dumps / corpus["train_dump"].name, valid_dump=dumps / corpus["valid_dump"].name)
    out = tmp_path / "exp"
    res = _train_sh(corpus, out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "model.pt").is_file()
    res = _train_sh(corpus, out)  # same features: finished, nothing to do
    assert res.returncode == 0 and "already finished" in res.stderr, res.stderr[-2000:]
    model = (out / "model.pt").read_bytes()

    # the training dump recomputed (same names, other numbers): refused, nothing touched
    ark = Path(next(iter(read_dump_scp(corpus["train_dump"] / "mix.scp").values()))[0])
    data = bytearray(ark.read_bytes())
    data[-4:] = np.float32(7.0).tobytes()
    ark.write_bytes(bytes(data))
    res = _train_sh(corpus, out)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{out}: its checkpoints/model were trained on other features" in lines[0], res.stderr
    assert str(corpus["train_dump"].resolve()) in lines[0]
    assert (out / "model.pt").read_bytes() == model
    # its outputs moved aside (what utils/train_exp.sh --overwrite true does): a fresh run records anew
    for name in ("model.pt", "checkpoints"):
        os.rename(out / name, tmp_path / f"{name}.aside")
    res = _train_sh(corpus, out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "already finished" not in res.stderr and (out / "model.pt").is_file() and (out / "train_inputs").is_file()


# --------------------------------------------------------------------------------------------------
# a truncated or corrupt ark under a dump

def _first_offset(dump, stream, utt):
    return read_dump_scp(dump / f"{stream}.scp")[utt]


@pytest.mark.parametrize("damage", ["truncated", "cut_before", "garbage", "empty"])
def test_corrupt_ark_is_one_line_naming_ark_and_utterance(corpus, tmp_path, caplog, damage):
    from sepkit.bin.train import main

    dump = tmp_path / "train"
    shutil.copytree(corpus["train_dump"], dump)
    for scp in dump.glob("*.scp"):  # point the copy at its own arks
        scp.write_text(scp.read_text().replace(str(corpus["train_dump"]), str(dump)))
    table = read_dump_scp(dump / "vocals.scp")
    utt = sorted(table)[-1]  # the last matrix of its ark
    ark, offset = Path(table[utt][0]), table[utt][1]
    raw = ark.read_bytes()
    if damage == "truncated":  # the disk filled up while it was written: the matrix is cut short
        ark.write_bytes(raw[: offset + 15 + 100])
    elif damage == "cut_before":
        ark.write_bytes(raw[: offset - len(utt) - 1])
    elif damage == "garbage":
        ark.write_bytes(raw[:offset] + b"\x00Bxx" + os.urandom(64) + raw[offset + 68:])
    else:
        ark.write_bytes(b"")
    with pytest.raises(DumpError) as err:
        FeatureDump(dump)
    msg = str(err.value)
    assert "\n" not in msg and str(ark) in msg and (f"utterance {utt}" in msg or damage == "empty"), msg
    if damage == "empty":
        assert "utterance " in msg
    args = train_args(dict(corpus, train_dump=dump), tmp_path / "exp", "--epochs", "1", "--tensorboard", "false")
    caplog.set_level("INFO")
    assert main(args) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(ark) in errors[0] and "\n" not in errors[0], errors
    assert not (tmp_path / "exp" / "model.pt").exists()


# --------------------------------------------------------------------------------------------------
# the disk filling up during feature extraction

@pytest.fixture
def small_disk(tmp_path):
    """A 320 KiB tmpfs (root only), or None where it cannot be mounted (then RLIMIT_FSIZE is used;
    SEPKIT_TEST_NO_MOUNT=1 forces that fallback)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mnt)],
                            capture_output=True).returncode == 0
    except OSError:  # no mount command
        ok = False
    if not ok or os.environ.get("SEPKIT_TEST_NO_MOUNT"):
        if ok:
            subprocess.run(["umount", str(mnt)], check=False)
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_features(tmp_path, small_disk):
    clips = {"a1": (8000, 1, 2.0), "b2": (8000, 1, 2.0), "c3": (8000, 1, 2.0), "d4": (8000, 1, 2.0)}
    data_small = _make_data(tmp_path / "s", clips={"e5": (8000, 1, 0.5)})
    data_big = _make_data(tmp_path / "b", clips=clips)
    conf = tmp_path / "feats.yaml"
    conf.write_text(yaml.safe_dump(CONF))
    root = small_disk or (tmp_path / "disk")
    limit = {}
    if small_disk is None:  # no mount: each file may grow to 96 KiB only (writes then fail with EFBIG)
        def limit_fsize():
            resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))
        limit = {"preexec_fn": limit_fsize}

    def run(data, dump):
        cmd = [str(UTILS / "compute_feats.sh"), "--nj", "1", "--cmd", str(UTILS / "run.py"), "--feat-conf", str(conf),
               str(data), str(root / dump)]
        return subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, **limit)

    res = run(data_small, "small")
    assert res.returncode == 0, res.stderr
    before = {p.name: p.read_bytes() for p in (root / "small").iterdir() if p.is_file()}
    res = run(data_big, "big")  # ~3 x 4 x 2 s of 126-frame x 40 float32 rows: does not fit
    assert res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if ln.strip()]
    why = "No space left on device" if small_disk else "File too large"
    assert any(why in ln and "compute_feats: " in ln for ln in errors), res.stderr
    assert len([ln for ln in errors if why in ln]) == 1, res.stderr
    assert errors[-1] == f"compute_feats.sh: feature extraction failed for {data_big}", res.stderr
    big = root / "big"
    assert not (big / "mix.scp").exists()
    assert not [p.name for p in big.iterdir() if p.name.endswith(".tmp") or p.name.endswith(".ark")]
    assert {p.name: p.read_bytes() for p in (root / "small").iterdir() if p.is_file()} == before
    assert FeatureDump(root / "small").utts == ["e5"]
    # not taken for done: the next run prepares to compute it again
    args = ["--feat-conf", str(conf), "--prepare", str(data_big), str(big)]
    assert compute_feats.main(args) == compute_feats.NOT_DONE


# --------------------------------------------------------------------------------------------------
# two runs of one recipe in one folder

def test_second_run_of_a_recipe_in_one_folder_refuses(tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "recipes"))
    from recipe_common import make_workspace

    recipe = make_workspace(tmp_path, "dsd100/chimera")
    # the first run: the helper every run.sh calls at start, held by a process that lives on
    first = subprocess.Popen(["bash", "-c", ". utils/lib.sh; lock_recipe_dir; exec sleep 60"], cwd=recipe, env=_env(),
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not (recipe / "exp" / ".run.lock").is_file() or not (recipe / "exp" / ".run.lock").read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        res = subprocess.run(["./run.sh", "--stage", "9", "--stop_stage", "9"], cwd=recipe, env=_env(),
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 1
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, res.stderr
        assert f"{recipe}: another run of this recipe holds it (pid {first.pid}" in lines[0]
        os.kill(first.pid, signal.SIGKILL)  # the holder dies without cleaning up: the lock goes with it
        first.wait()
        res = subprocess.run(["./run.sh", "--stage", "9", "--stop_stage", "9"], cwd=recipe, env=_env(),
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
            first.wait()


def test_every_recipe_takes_the_lock_before_its_stages():
    for run_sh in sorted(REPO.glob("egs/*/*/run.sh")) + [REPO / "egs" / "TEMPLATE" / "run.sh"]:
        lines = run_sh.read_text().splitlines()
        lock = [i for i, ln in enumerate(lines) if ln.startswith("lock_recipe_dir")]
        stages = [i for i, ln in enumerate(lines) if "stage" in ln and ln.startswith("if ")]
        assert lock and stages and lock[0] < stages[0], run_sh
