"""Tests of the recipe utilities in utils/: parse_options.sh, run.py, slurm.py, split_scp.py,
validate_data_dir.sh."""
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sepkit.audio import write_audio
from sepkit.data.datadir import DataDir

UTILS = Path(__file__).resolve().parents[1] / "utils"


def _run(args, cwd, env=None, check_rc=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stdout + proc.stderr
    return proc


def test_scripts_are_executable():
    for name in ["run.py", "slurm.py", "split_scp.py", "validate_data_dir.sh"]:
        assert os.stat(UTILS / name).st_mode & stat.S_IXUSR, name
    for name in ["run.py", "slurm.py", "split_scp.py"]:
        assert (UTILS / name).read_text().startswith("#!/usr/bin/env python3\n")


# ------------------------------------------------------------------------------------ parse_options.sh

RECIPE = """#!/usr/bin/env bash
# Demo recipe for parse_options.sh.
# Usage: run.sh [options] <data-dir> <exp-dir>

stage=0          # first stage to run
stop_stage=100
train_set=train_clean
use_gpu=false    # train on a GPU
. {utils}/parse_options.sh
set -euo pipefail
echo "stage=$stage stop_stage=$stop_stage train_set=$train_set use_gpu=$use_gpu"
echo "nargs=$#"
for a in "$@"; do echo "arg=$a"; done
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "run.sh"
    path.write_text(RECIPE.format(utils=UTILS))
    return path


def test_parse_options_hyphen_and_underscore(recipe):
    out = _run(["bash", str(recipe), "--stop-stage", "3", "--train_set", "my set", "--use-gpu", "true",
                "data/x", "exp dir"], recipe.parent, check_rc=0).stdout.splitlines()
    assert out[0] == "stage=0 stop_stage=3 train_set=my set use_gpu=true"
    assert out[1:] == ["nargs=2", "arg=data/x", "arg=exp dir"]


def test_parse_options_equals_form_and_double_dash(recipe):
    out = _run(["bash", str(recipe), "--stage=2", "--", "--not-an-option"], recipe.parent, check_rc=0).stdout
    assert "stage=2 " in out and "arg=--not-an-option" in out and "nargs=1" in out


def test_parse_options_config_then_command_line(recipe, tmp_path):
    (tmp_path / "my.conf").write_text("stage=7\ntrain_set=from_conf\n")
    out = _run(["bash", str(recipe), "--stage", "1", "--config", "my.conf"], tmp_path, check_rc=0).stdout
    assert "stage=1 stop_stage=100 train_set=from_conf" in out  # the command line wins over --config
    err = _run(["bash", str(recipe), "--config", "none.conf"], tmp_path, check_rc=1).stderr
    assert "config file none.conf not found" in err


@pytest.mark.parametrize("args,message", [
    (["--no-such-option", "1"], "unknown option --no-such-option"),
    (["--use-gpu", "yes"], "option --use-gpu is boolean"),
    (["--stage"], "option --stage needs a value"),
])
def test_parse_options_errors(recipe, args, message):
    proc = _run(["bash", str(recipe)] + args, recipe.parent, check_rc=1)
    assert message in proc.stderr
    assert "stage=" not in proc.stdout  # the recipe body never ran


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_parse_options_help(recipe, flag):
    out = _run(["bash", str(recipe), "--stage", "4", flag], recipe.parent, check_rc=0).stdout
    assert out.startswith("Demo recipe for parse_options.sh.\nUsage: run.sh [options] <data-dir> <exp-dir>\n")
    assert re.search(r"--stage 4 +# first stage to run", out)  # current value, not the default
    assert "--stop-stage 100" in out and "--use-gpu false" in out and "--train-set train_clean" in out
    assert "nargs=" not in out


# ------------------------------------------------------------------------------------ run.py

def test_run_job_substitution_and_log_format(tmp_path):
    _run([str(UTILS / "run.py"), "JOB=1:3", "exp/log/a.JOB.log", "echo", "job JOB of 3", "|", "tr", "a-z", "A-Z"],
         tmp_path, check_rc=0)
    for j in (1, 2, 3):
        lines = (tmp_path / "exp" / "log" / f"a.{j}.log").read_text().splitlines()
        assert lines[0] == f'# echo "job {j} of 3" | tr a-z A-Z'
        assert lines[1].startswith("# Started at ")
        assert lines[2] == f"JOB {j} OF 3"
        assert re.fullmatch(r"# Accounting: time=\d+ threads=1", lines[3])
        assert lines[4].startswith("# Ended (code 0) at ")


def test_run_single_quoted_command_and_no_range(tmp_path):
    _run([str(UTILS / "run.py"), "--num-threads", "2", "exp/log/one.log",
          "echo 'a b' | tr a-z A-Z > out.txt; echo to-stderr >&2"], tmp_path, check_rc=0)
    assert (tmp_path / "out.txt").read_text() == "A B\n"
    log = (tmp_path / "exp" / "log" / "one.log").read_text()
    assert "to-stderr\n" in log and re.search(r"# Accounting: time=\d+ threads=2", log)


def test_run_parallel_and_max_jobs_run(tmp_path):
    # Each job waits (up to 20 s) until all four have started: only possible when they run together.
    cmd = "touch started.JOB; for i in $(seq 200); do [ $(ls started.* | wc -l) -ge 4 ] && exit 0; sleep 0.1; done; exit 1"
    _run([str(UTILS / "run.py"), "JOB=1:4", "log/p.JOB.log", cmd], tmp_path, check_rc=0)
    # With --max-jobs-run 2 no more than two jobs are ever running at once.
    cmd = "touch run.JOB; ls run.* | wc -l >> counts.JOB; sleep 0.3; rm run.JOB"
    _run([str(UTILS / "run.py"), "--max-jobs-run", "2", "JOB=1:5", "log/m.JOB.log", cmd], tmp_path, check_rc=0)
    counts = [int(x) for j in range(1, 6) for x in (tmp_path / f"counts.{j}").read_text().split()]
    assert len(counts) == 5 and max(counts) <= 2


def test_run_failure_names_failing_log(tmp_path):
    proc = _run([str(UTILS / "run.py"), "JOB=1:4", "exp/log/f.JOB.log", "echo JOB; [ JOB -ne 3 ] || exit 5"],
                tmp_path, check_rc=1)
    assert "run.py: 1/4 jobs failed, log is in exp/log/f.3.log" in proc.stderr
    assert (tmp_path / "exp/log/f.3.log").read_text().splitlines()[-1].startswith("# Ended (code 5) at")
    assert "# Ended (code 0)" in (tmp_path / "exp/log/f.4.log").read_text()


@pytest.mark.parametrize("args,message", [
    (["exp/log/x.JOB.log", "true"], "contains JOB but no JOB=a:b range"),
    (["JOB=1:2", "exp/log/x.log", "true"], "put JOB in its name"),
    (["--bogus", "1", "x.log", "true"], "unknown option --bogus"),
    (["JOB=3:2", "x.JOB.log", "true"], "empty job range"),
])
def test_run_usage_errors(tmp_path, args, message):
    assert message in _run([str(UTILS / "run.py")] + args, tmp_path, check_rc=1).stderr


def _alive(pid):
    """True while ``pid`` runs (a zombie, killed but not yet reaped by init, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def _default_signals():
    """The runner under test starts with default signal dispositions, as from a terminal: a suite run under
    nohup (SIGHUP ignored, inherited) would otherwise test a nohup'ed runner, which keeps ignoring SIGHUP."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _start_jobs(tmp_path, runner, command, env=None):
    """Start ``runner JOB=1:2 log/j.JOB.log command`` (each job writes its pids to pid.JOB and
    sleeps); return the runner and the job pids once both jobs run."""
    proc = subprocess.Popen([str(UTILS / runner), "JOB=1:2", "log/j.JOB.log", command], cwd=tmp_path,
                            env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_default_signals)
    files = [tmp_path / "pid.1", tmp_path / "pid.2"]
    _wait_for(lambda: all(f.is_file() and f.read_text().endswith("\n") for f in files), 30, "running jobs")
    return proc, [int(p) for f in files for p in f.read_text().split()]


def _cleanup(proc, pids):
    """Kill whatever a test left running (the old runner let its jobs outlive it)."""
    for kill, pid in [(os.killpg, proc.pid)] + [(os.kill, p) for p in pids]:
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.communicate()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP, signal.SIGTERM])
def test_run_jobs_die_with_the_runner(tmp_path, signum):
    # the job leader is the job itself (exec), as for `python -m ...` jobs; SIGKILL reaches it by the
    # parent-death signal, SIGHUP and SIGTERM are passed on to it
    proc, pids = _start_jobs(tmp_path, "run.py", "echo $$ > pid.JOB; exec sleep 60")
    try:
        proc.send_signal(signum)
        _wait_for(lambda: not any(_alive(p) for p in pids), 5, "end of the jobs")
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL if signum == signal.SIGKILL else 128 + signum
        if signum != signal.SIGKILL:
            assert f"run.py: interrupted by {signum.name}; stopped 2 running job(s)" in err
            log = (tmp_path / "log" / "j.2.log").read_text()
            assert f"# Ended (code {128 + signum})" in log
    finally:
        _cleanup(proc, pids)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
def test_run_signal_reaches_what_a_job_started(tmp_path):
    proc, pids = _start_jobs(tmp_path, "run.py", "sleep 60 & echo $! $$ > pid.JOB; wait")
    try:
        assert len(pids) == 4
        proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: not any(_alive(p) for p in pids), 5, "end of the jobs and their children")
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        _cleanup(proc, pids)


def _processes_in(cwd):
    """The pids of the processes whose working directory is ``cwd`` (a test's: its runner, jobs, watchers)."""
    out = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(entry) != os.getpid() and os.readlink(f"/proc/{entry}/cwd") == str(cwd):
                out.append(int(entry))
        except OSError:
            pass
    return [p for p in out if _alive(p)]


def _start_runner(tmp_path, args, files):
    """Start ``run.py args`` in its own session (a stage's process group); return it once ``files`` exist."""
    proc = subprocess.Popen([str(UTILS / "run.py")] + args, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_signals)
    _wait_for(lambda: all((tmp_path / f).is_file() and (tmp_path / f).read_text().endswith("\n") for f in files),
              60, "running jobs")
    return proc


def _sigkill_and_check(tmp_path, proc, kill, pids):
    """SIGKILL the runner (or its process group); every process of the test must be gone within 5 s."""
    try:
        running = set(_processes_in(tmp_path)) | set(pids)
        assert all(_alive(p) for p in pids)
        if kill == "group":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        assert proc.wait(timeout=10) == -signal.SIGKILL
        _wait_for(lambda: not any(_alive(p) for p in running), 5, "end of every process of the jobs")
        assert not _processes_in(tmp_path)
    finally:  # what the old runner left running
        _cleanup(proc, set(pids) | set(_processes_in(tmp_path)))


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("kill", ["runner", "group"])
@pytest.mark.parametrize("job", ["compound", "new_session"])
def test_run_sigkill_stops_every_process_a_job_started(tmp_path, job, kill):
    # a compound job's children (sleep; echo), and a child in a session of its own (as torchrun's workers)
    command = {"compound": "echo $$ > pid.JOB; sleep 300; echo",
               "new_session": "setsid sleep 300 & echo $! $$ > pid.JOB; wait"}[job]
    proc = _start_runner(tmp_path, ["JOB=1:2", "log/j.JOB.log", command], ["pid.1", "pid.2"])
    time.sleep(0.2)  # the compound job's sleep has started
    pids = [int(p) for f in ("pid.1", "pid.2") for p in (tmp_path / f).read_text().split()]
    _sigkill_and_check(tmp_path, proc, kill, pids)


WORKER = """import os, sys, time
rank = os.environ["RANK"]
with open(f"worker.{rank}.tmp", "w") as f:
    f.write(f"{os.getpid()}\\n")
os.rename(f"worker.{rank}.tmp", f"worker.{rank}")
while True:  # 'trains': writes a checkpoint every 0.1 s
    with open(f"ckpt.{rank}", "w") as f:
        f.write(str(time.time()))
    time.sleep(0.1)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("kill", ["runner", "group"])
def test_run_sigkill_stops_torchrun_workers(tmp_path, kill):
    # torchrun's workers run in sessions of their own, as grandchildren of the runner's job
    (tmp_path / "worker.py").write_text(WORKER)
    command = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2 worker.py"
    proc = _start_runner(tmp_path, ["log/train.log", command], ["worker.0", "worker.1"])
    pids = [int((tmp_path / f"worker.{r}").read_text()) for r in (0, 1)]
    _sigkill_and_check(tmp_path, proc, kill, pids)
    stamps = [(tmp_path / f"ckpt.{r}").read_text() for r in (0, 1)]
    time.sleep(0.3)
    assert stamps == [(tmp_path / f"ckpt.{r}").read_text() for r in (0, 1)]  # no more checkpoints


# ------------------------------------------------------------------------------------ slurm.py

FAKE_SBATCH = """#!/usr/bin/env bash
# Fake sbatch: record the arguments, then run the batch script here with its output in -o.
script="${!#}"
printf '%s\\n' "$@" > "$FAKE_SBATCH_DIR/$(basename "$script").args"
out=/dev/null
while [ $# -gt 1 ]; do
  case "$1" in -o) out=${2//%%/%}; shift 2 ;; *) shift ;; esac
done
echo "Submitted batch job $$"
bash "$script" > "$out" 2>&1
"""


@pytest.fixture
def fake_sbatch(tmp_path):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(FAKE_SBATCH)
    (bindir / "sbatch").chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_SBATCH_DIR": str(bindir),
            "SEPKIT_SLURM_OPTS": "-p gpu --account 'my acct'"}


def test_slurm_options_flow_through(tmp_path, fake_sbatch):
    _run([str(UTILS / "slurm.py"), "--gpu", "2", "--mem", "4G", "--time", "1:00:00", "--num-threads", "3",
          "JOB=1:2", "exp/log/t.JOB.log", "echo hello JOB"], tmp_path, env=fake_sbatch, check_rc=0)
    args = (Path(fake_sbatch["FAKE_SBATCH_DIR"]) / "t.2.sh.args").read_text().splitlines()
    assert "--wait" in args and "--gres=gpu:2" in args and "--mem=4G" in args
    assert "--time=1:00:00" in args and "--cpus-per-task=3" in args
    assert args[args.index("-o") + 1] == str(tmp_path / "exp" / "log" / "t.2.log")
    assert args[args.index("-p") + 1] == "gpu" and args[args.index("--account") + 1] == "my acct"
    assert args[-1] == str(tmp_path / "exp" / "log" / "q" / "t.2.sh")
    log = (tmp_path / "exp" / "log" / "t.2.log").read_text().splitlines()
    assert log[0] == "# echo hello 2" and "hello 2" in log
    assert re.fullmatch(r"# Accounting: time=\d+ threads=3", log[-2]) and log[-1].startswith("# Ended (code 0)")


def test_slurm_no_gpu_no_gres_and_failure(tmp_path, fake_sbatch):
    proc = _run([str(UTILS / "slurm.py"), "JOB=1:3", "exp/log/f.JOB.log", "exit $((JOB == 2 ? 9 : 0))"],
                tmp_path, env=fake_sbatch, check_rc=1)
    assert "slurm.py: 1/3 jobs failed, log is in exp/log/f.2.log" in proc.stderr
    assert "# Ended (code 9)" in (tmp_path / "exp/log/f.2.log").read_text()
    args = (Path(fake_sbatch["FAKE_SBATCH_DIR"]) / "f.1.sh.args").read_text()
    assert "--gres" not in args and "--mem" not in args and "--cpus-per-task" not in args


FAKE_SCANCEL = """#!/usr/bin/env bash
printf '%s\\n' "$@" >> "$FAKE_SBATCH_DIR/scancel.args"
"""


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_slurm_scancels_on_a_signal(tmp_path, fake_sbatch, signum):
    bindir = Path(fake_sbatch["FAKE_SBATCH_DIR"])
    (bindir / "scancel").write_text(FAKE_SCANCEL)
    (bindir / "scancel").chmod(0o755)
    # job 1 ends at once, job 2 runs until it is cancelled
    proc, pids = _start_jobs(tmp_path, "slurm.py", "echo $$ > pid.JOB; [ JOB = 1 ] && exit 0; exec sleep 60",
                             env=fake_sbatch)
    try:
        _wait_for(lambda: "# Ended (code 0)" in (tmp_path / "log" / "j.1.log").read_text(), 10, "end of job 1")
        time.sleep(0.3)  # slurm.py sees that sbatch of job 1 returned
        job2 = re.search(r"Submitted batch job (\d+)", (tmp_path / "log" / "q" / "j.2.sbatch").read_text()).group(1)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 128 + signum, err
        assert (bindir / "scancel.args").read_text().split() == [job2]
        assert f"slurm.py: interrupted by {signum.name}; scancel {job2}\n" in err
        assert not any(_alive(p) for p in pids)  # the (fake) sbatch --wait client of job 2 is stopped too
    finally:
        _cleanup(proc, pids)


def test_slurm_submission_failure_is_logged(tmp_path):
    proc = _run([str(UTILS / "slurm.py"), "exp/log/x.log", "true"], tmp_path,
                env={"SEPKIT_SBATCH": str(tmp_path / "no-sbatch")}, check_rc=1)
    assert "1/1 jobs failed, log is in exp/log/x.log" in proc.stderr
    assert "job not run" in (tmp_path / "exp/log/x.log").read_text()


# ------------------------------------------------------------------------------------ split_scp.py

def _write_scp(path, n):
    path.write_text("".join(f"utt{i:02d} /audio/utt{i:02d}.wav\n" for i in range(n)))


def test_split_scp_equal_parts(tmp_path):
    _write_scp(tmp_path / "in.scp", 10)
    outs = [str(tmp_path / "split" / f"out.{k}.scp") for k in (1, 2, 3)]
    _run([str(UTILS / "split_scp.py"), "in.scp"] + outs, tmp_path, check_rc=0)
    parts = [Path(o).read_text().splitlines() for o in outs]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sum(parts, []) == (tmp_path / "in.scp").read_text().splitlines()  # contiguous, in order


def test_split_scp_by_duration(tmp_path):
    _write_scp(tmp_path / "in.scp", 8)
    durs = [30, 1, 1, 1, 1, 1, 1, 24]
    (tmp_path / "utt2dur").write_text("".join(f"utt{i:02d} {d}\n" for i, d in enumerate(durs)))
    outs = [str(tmp_path / f"o.{k}") for k in (1, 2, 3)]
    _run([str(UTILS / "split_scp.py"), "--utt2dur", "utt2dur", "in.scp"] + outs, tmp_path, check_rc=0)
    parts = [Path(o).read_text().splitlines() for o in outs]
    assert [len(p) for p in parts] == [1, 6, 1]  # 30 s | 6 x 1 s | 24 s instead of 3/3/2 lines
    assert sum(parts, []) == (tmp_path / "in.scp").read_text().splitlines()


def test_split_scp_errors(tmp_path):
    _write_scp(tmp_path / "in.scp", 2)
    proc = _run([str(UTILS / "split_scp.py"), "in.scp", "a", "b", "c"], tmp_path, check_rc=1)
    assert "2 lines cannot be split into 3 parts" in proc.stderr
    assert not (tmp_path / "a").exists()
    (tmp_path / "utt2dur").write_text("utt00 1.0\n")
    proc = _run([str(UTILS / "split_scp.py"), "--utt2dur", "utt2dur", "in.scp", "a", "b"], tmp_path, check_rc=1)
    assert "no duration for utterance 'utt01'" in proc.stderr


# ------------------------------------------------------------------------------------ validate_data_dir.sh

def _data_dir(tmp_path):
    wav, voc, acc = {}, {}, {}
    rng = np.random.default_rng(0)
    for utt in ("s1", "s2", "s3"):
        v, a = rng.uniform(-0.3, 0.3, (2, 1, 400)).astype(np.float32)
        for name, x in (("vocals", v), ("accompaniment", a), ("mix", v + a)):
            write_audio(tmp_path / "audio" / f"{utt}_{name}.wav", x, 8000, subtype="FLOAT")
        wav[utt] = str(tmp_path / "audio" / f"{utt}_mix.wav")
        voc[utt] = str(tmp_path / "audio" / f"{utt}_vocals.wav")
        acc[utt] = str(tmp_path / "audio" / f"{utt}_accompaniment.wav")
    return DataDir.create(tmp_path / "data" / "train", wav, {"vocals": voc, "accompaniment": acc}).path


def _validate(tmp_path, *args):
    # python3 on PATH is the interpreter running the tests, so the wrapper finds sepkit.
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return _run([str(UTILS / "validate_data_dir.sh")] + list(args), tmp_path, env=env)


def test_validate_data_dir_sh_good_and_broken(tmp_path):
    d = _data_dir(tmp_path)
    proc = _validate(tmp_path, "--check-audio", str(d))
    assert proc.returncode == 0 and "OK (3 utterances" in proc.stdout, proc.stderr

    breakages = {
        "unsorted": lambda d: (d / "wav.scp").write_text("".join(reversed((d / "wav.scp").read_text().splitlines(True)))),
        "missing source scp": lambda d: (d / "vocals.scp").unlink(),
        "mismatched utts": lambda d: (d / "accompaniment.scp").write_text(
            (d / "accompaniment.scp").read_text().replace("s2 ", "s9 ")),
        "missing file": lambda d: Path(DataDir(d).wav["s3"]).unlink(),
    }
    expected = {"unsorted": "wav.scp: not sorted", "missing source scp": "vocals.scp: missing",
                "mismatched utts": "accompaniment.scp: 1 utterance(s) of wav.scp missing (e.g. s2); "
                                   "1 utterance(s) not in wav.scp (e.g. s9)",
                "missing file": "wav.scp: utterance s3: audio file not found"}
    for name, breakage in breakages.items():
        d = _data_dir(tmp_path / name)
        breakage(d)
        proc = _validate(tmp_path, str(d))
        assert proc.returncode == 1, name
        assert expected[name] in proc.stderr, (name, proc.stderr)


# ------------------------------------------------------------------------------------ combine_data.sh

def _two_data_dirs(tmp_path):
    d = DataDir(_data_dir(tmp_path))
    dirs = []
    for name, utts in (("d1", d.utts[:2]), ("d2", d.utts[2:])):
        srcs = {s: {u: d.source(s)[u] for u in utts} for s in d.sources}
        dirs.append(str(DataDir.create(tmp_path / name, {u: d.wav[u] for u in utts}, srcs).path))
    return dirs


def test_combine_data_never_removes_what_it_did_not_make(tmp_path):
    d1, d2 = _two_data_dirs(tmp_path)
    script = str(UTILS / "combine_data.sh")
    mine = tmp_path / "my_results"
    mine.mkdir()
    (mine / "paper_numbers.txt").write_text("42.0 dB\n")
    proc = _run([script, str(mine), d1, d2], tmp_path, check_rc=1)
    assert proc.stderr.count("\n") == 1 and str(mine) in proc.stderr and "--overwrite true" in proc.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["paper_numbers.txt"]
    assert not list(tmp_path.glob("my_results.*"))  # no temp dir left behind

    out = tmp_path / "combined"
    _run([script, str(out), d1, d2], tmp_path, check_rc=0)
    assert DataDir(out).utts == ["s1", "s2", "s3"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0700
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    proc = _run([script, str(out), d1, d2], tmp_path, check_rc=0)  # its own output, same inputs: kept
    assert "already holds this combination" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    _run([script, str(out), d1, d1.replace("d1", "d2")], tmp_path, check_rc=0)
    (out / "notes.txt").write_text("mine\n")  # a file it did not write: refused again
    proc = _run([script, str(out), d2, d1], tmp_path, check_rc=1)
    assert "notes.txt" in proc.stderr and (out / "notes.txt").is_file()

    proc = _run([script, "--overwrite", "true", str(mine), d1, d2], tmp_path, check_rc=0)
    aside = list(tmp_path.glob("my_results.old.*"))
    assert len(aside) == 1 and (aside[0] / "paper_numbers.txt").read_text() == "42.0 dB\n"
    assert f"moved {mine} aside to {aside[0]}" in proc.stderr
    assert DataDir(mine).utts == ["s1", "s2", "s3"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ids_data_dir(path, wav, utts):
    return str(DataDir.create(path, {u: wav for u in utts}, {s: {u: wav for u in utts} for s in ("vocals", "accompaniment")},
                              utt2dur={u: 0.1 for u in utts}).path)


def test_combine_data_sorts_in_c_order_and_finds_any_repeated_id(tmp_path):
    # inputs whose concatenation is not sorted, and ids whose C order differs from a dictionary order
    wav = str(tmp_path / "a.wav")
    write_audio(wav, np.zeros((1, 800), np.float32), 8000)
    d1 = _ids_data_dir(tmp_path / "d1", wav, ["b_1", "b_2"])
    d2 = _ids_data_dir(tmp_path / "d2", wav, ["B_9", "a_1"])
    out = tmp_path / "combined"
    _run([str(UTILS / "combine_data.sh"), str(out), d1, d2], tmp_path, env={"LC_ALL": "", "LANG": "en_US.UTF-8"},
         check_rc=0)
    for name in ("wav.scp", "utt2dur", "vocals.scp", "accompaniment.scp"):
        ids = [line.split()[0] for line in (out / name).read_text().splitlines()]
        assert ids == ["B_9", "a_1", "b_1", "b_2"], name
    # a repeated id that is not in adjacent inputs is found too
    d3 = _ids_data_dir(tmp_path / "d3", wav, ["b_2"])
    proc = _run([str(UTILS / "combine_data.sh"), str(tmp_path / "o2"), d1, d2, d3], tmp_path, check_rc=1)
    assert "utterance id 'b_2' is in more than one input" in proc.stderr
    assert not (tmp_path / "o2").exists()


# ------------------------------------------------------------------------------------ train_exp.sh

FAKE_TRAIN_CMD = """#!/usr/bin/env bash
# A job runner whose 'training' writes <outdir>/model.pt (what utils/train_exp.sh checks), fast.
while [ $# -gt 0 ]; do [ "$1" = --outdir ] && outdir=$2; shift; done
mkdir -p "$outdir" && echo "model $RANDOM$RANDOM" > "$outdir/model.pt"
"""


def _fake_train_exp(tmp_path):
    """A fake job runner, two tiny dumps (one ark each) and a config; returns train_exp.sh's command line."""
    cmd = tmp_path / "fake_cmd.sh"
    cmd.write_text(FAKE_TRAIN_CMD)
    cmd.chmod(0o755)
    for d in ("train", "valid"):
        (tmp_path / "dump" / d).mkdir(parents=True)
        (tmp_path / "dump" / d / "mix.scp").write_text(f"u1 dump/{d}/feats.1.ark:10\n")
        (tmp_path / "dump" / d / "feats.1.ark").write_bytes(b"\0" * 100)
    (tmp_path / "dump" / "train" / "cmvn.ark").write_text("x")
    (tmp_path / "c.yaml").write_text("alpha: 0.5\n")
    return [str(UTILS / "train_exp.sh"), "--cmd", str(cmd), "c.yaml", "dump/train", "dump/valid", "exp/x"]


def test_train_exp_overwrite_moves_the_exp_dir_aside(tmp_path):
    args = _fake_train_exp(tmp_path)
    _run(args, tmp_path, check_rc=0)
    exp = tmp_path / "exp" / "x"
    old_model = (exp / "model.pt").read_text()
    (exp / "checkpoints").mkdir()
    (exp / "checkpoints" / "epoch3.pt").write_text("ckpt\n")
    (exp / "notes.txt").write_text("mine\n")
    (exp / "separate_test_mi").mkdir()
    (exp / "separate_test_mi" / "vocals.scp").write_text("u1 exp/x/separate_test_mi/wav/u1.wav\n")
    proc = _run(args[:1] + ["--overwrite", "true"] + args[1:], tmp_path, check_rc=0)
    [old] = (tmp_path / "exp").glob("x.old.*")
    assert f"moved exp/x aside to exp/{old.name}" in proc.stderr
    assert (old / "model.pt").read_text() == old_model and (old / "notes.txt").read_text() == "mine\n"
    assert (old / "checkpoints" / "epoch3.pt").read_text() == "ckpt\n"
    assert (old / "separate_test_mi" / "vocals.scp").read_text() == f"u1 exp/{old.name}/separate_test_mi/wav/u1.wav\n"
    assert (exp / "model.pt").read_text() != old_model and not (exp / "notes.txt").exists()
    assert (exp / ".done").is_file()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
def test_slurm_sigkill_stops_the_client_and_scancels(tmp_path, fake_sbatch):
    bindir = Path(fake_sbatch["FAKE_SBATCH_DIR"])
    (bindir / "scancel").write_text(FAKE_SCANCEL)
    (bindir / "scancel").chmod(0o755)
    proc, pids = _start_jobs(tmp_path, "slurm.py", "echo $$ > pid.JOB; exec sleep 60", env=fake_sbatch)
    try:
        jobs = [re.search(r"Submitted batch job (\d+)", (tmp_path / "log" / "q" / f"j.{j}.sbatch").read_text()).group(1)
                for j in (1, 2)]
        proc.kill()
        assert proc.wait(timeout=10) == -signal.SIGKILL
        _wait_for(lambda: (bindir / "scancel.args").is_file() and len((bindir / "scancel.args").read_text().split()) == 2,
                  10, "scancel of both jobs")
        assert sorted((bindir / "scancel.args").read_text().split()) == sorted(jobs)
        _wait_for(lambda: not any(_alive(p) for p in pids), 5, "end of the sbatch clients")
    finally:
        _cleanup(proc, pids)


def test_train_exp_is_not_done_when_a_dump_changed_in_place(tmp_path):
    """A dump recomputed with the same file names (another remix seed) makes a finished training stale."""
    args = _fake_train_exp(tmp_path)
    _run(args, tmp_path, check_rc=0)
    first = (tmp_path / "exp" / "x" / "model.pt").read_text()
    assert "already finished" in _run(args, tmp_path, check_rc=0).stderr
    ark = tmp_path / "dump" / "valid" / "feats.1.ark"
    st = ark.stat()
    ark.write_bytes(b"\1" * 120)  # other features under the same names; scp files untouched, older times kept
    os.utime(ark, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    proc = _run(args, tmp_path, check_rc=0)
    assert "already finished" not in proc.stderr and (tmp_path / "exp" / "x" / "model.pt").read_text() != first
