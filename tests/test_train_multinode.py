"""Two "nodes" on loopback: utils/train.sh inside a (fake) SLURM job starts itself on each node with
srun, and the two torchrun agents meet through the static rendezvous at node 0; the MI-only
objective (alpha = 0) trains under DDP."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import PYTHON, REPO, free_port, make_corpus, subprocess_env, train_args  # noqa: E402

FAKE_SRUN = """#!/usr/bin/env bash
# test double of srun: runs the command once per task on this machine, SLURM_NODEID = task index
n=1
while [[ "$1" == --* ]]; do
  case "$1" in --ntasks=*) n=${1#--ntasks=} ;; esac
  echo "$1" >> "$(dirname "$0")/srun.args"
  shift
done
pids=()
for ((i = 0; i < n; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i "$@" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
[ "$1 $2" = "show hostnames" ] || exit 1
echo 127.0.0.1
echo 127.0.0.2
"""


def _script(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_two_node_rendezvous_through_slurm_and_mi_only(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_train=4, n_valid=2)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _script(bindir / "srun", FAKE_SRUN)
    _script(bindir / "scontrol", FAKE_SCONTROL)
    env = subprocess_env()
    env.update(PATH=f"{bindir}{os.pathsep}{env['PATH']}", SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="node[1-2]",
               SEPKIT_PYTHON=PYTHON)
    env.pop("SEPKIT_TRAIN_SRUN", None)
    out = tmp_path / "exp"
    cmd = ["bash", str(REPO / "utils" / "train.sh"), "--ngpu", "0", "--num_nodes", "2",
           "--master_port", str(free_port()), "--",
           *train_args(corpus, out, "--alpha", "0", "--epochs", "1", "--batch_size", "4", "--tensorboard", "false")]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "srun on 2 nodes, master 127.0.0.1" in proc.stderr
    assert "--ntasks-per-node=1" in (bindir / "srun.args").read_text().split()
    log = (out / "train.log").read_text()
    assert "2 process(es) on cpu (gloo)" in log and "parameters identical on 2 ranks" in log
    d = torch.load(out / "model.pt", weights_only=True)
    assert d["model_conf"]["heads"] == ["mi"]
    assert not any("dc" in k for k in d["model_state"])


def test_launcher_rejects_bad_options(tmp_path):
    env = subprocess_env()
    proc = subprocess.run(["bash", str(REPO / "utils" / "train.sh"), "--ngpu", "0", "--num_nodes", "2",
                           "--node_rank", "2", "--", "--outdir", str(tmp_path)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "--node_rank 2 is not below --num_nodes 2" in proc.stderr
    proc = subprocess.run(["bash", str(REPO / "utils" / "train.sh"), "--gpus", "2"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "unknown option --gpus" in proc.stderr
