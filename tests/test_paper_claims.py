"""egs/mir1k/chimera/local/paper_claims.sh, the command of its header and of RESULTS.md, on the script's own
defaults (its --config, the recipe's default settings) with a tiny MIR-1K-like corpus and training budget.

A change of the recipe's default (its training config, hence its features) must not break the command: stage 0
makes the features paired with the grid's config, which every run of stage 1 trains on.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "recipes"))
from recipe_common import VENV_PYTHON, make_workspace  # noqa: E402

pytestmark = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="tools/venv not built (make venv)")

TINY_TRAIN = ("--epochs 3 --steps_per_epoch 2 --hidden 16 --layers 1 --emb_dim 8 --batch_size 4 --segment_frames 50 "
              "--tensorboard false")
TINY_DATA = "--aug_hours 0 --valid_fraction 0.25 --oracle false"


def test_paper_claims_command_runs_on_its_defaults(tmp_path):
    from sepkit.data.synth_layouts import make_corpus

    make_corpus("mir1k", tmp_path / "MIR-1K", num_songs=6, num_test_songs=3, duration=2.0, seed=3, progress=False)
    rec = make_workspace(tmp_path, "mir1k/chimera")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), SEPKIT_BACKEND="local")
    # the header's command ("a part of it"), with a small budget through the script's own options
    proc = subprocess.run(["local/paper_claims.sh", "--mir1k", str(tmp_path / "MIR-1K"), "--systems", "MI", "--seeds", "0", "--nj", "1", "--score_bss", "false",
                           "--recipe_opts", TINY_DATA, "--train_args", TINY_TRAIN],
                          cwd=rec, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:]
    config = re.search(r"^config=(\S+)", (rec / "local" / "paper_claims.sh").read_text(), re.M).group(1)
    feat_conf = subprocess.run([str(rec / "utils" / "feat_conf_of.sh"), config, "conf/feats.yaml"], cwd=rec,
                               capture_output=True, text=True, check=True).stdout.strip()
    dump = rec / "dump" / Path(feat_conf).stem / "mir1k_train"
    assert (dump / "cmvn.ark").is_file()
    run = rec / "exp" / "paper_claims" / "MI" / "seed0"
    assert f"--train-dump {dump.relative_to(rec)} " in (run / "log" / "train.log").read_text()
    assert (run.parent / "seed0_avg3" / "score_mir1k_test_mi" / "per_utt.csv").is_file()  # the recipe's --average_last 3
    compare = (rec / "exp" / "paper_claims" / "COMPARE.md").read_text()
    assert re.search(r"^\| MI \| 1 \|", compare, re.M), compare
