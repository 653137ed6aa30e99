"""utils/run_grid.sh on a tiny synthetic grid (egs/folder/chimera, 2 systems x 2 seeds, a 16-unit network).

Checked: every run goes through the recipe's own stages (training, separation, scoring) into
exp/<grid>/<system>/seed<S>, the extra test sets are separated and scored too, the seed changes
the weights and the scores while the same seed gives identical ones, a second call skips every run,
the comparison (COMPARE.md, compare.png) is written, and bad grids fail with one clear line.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "recipes"))
from recipe_common import VENV_PYTHON, make_workspace, run_recipe  # noqa: E402
from test_folder_recipe import ccm_corpus  # noqa: E402

pytestmark = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="tools/venv not built (make venv)")

TINY = ("hidden: 16\nlayers: 1\nemb_dim: 8\nalpha: 0.5\noptimizer: adam\nlr: 0.01\nbatch_size: 4\nepochs: 1\n"
        "segment_frames: 50\nmax_steps_per_epoch: 3\nnum_workers: 0\ntensorboard: false\n")
RUN_OPTS = "--stage 3 --oracle false --score_bss false"


def grid(rec, *args):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), SEPKIT_BACKEND="local")
    return subprocess.run(["utils/run_grid.sh", *map(str, args)], cwd=rec, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    base = tmp_path_factory.mktemp("grid")
    corpus = ccm_corpus(base / "ccm", n=6, seconds=2.0)
    rec = make_workspace(base, "folder/chimera")
    prep = run_recipe(rec, "--corpus_dir", corpus, "--mixture", "mix.wav", "--valid_fraction", "0.2",
                      "--test_fraction", "0.34", "--sources", "vocals=source-01.wav accompaniment=source-02.wav",
                      "--stop_stage", 2, "--nj", 1)
    assert prep.returncode == 0, prep.stdout[-3000:]
    (base / "tiny.yaml").write_text(TINY)
    systems = [f"A={base / 'tiny.yaml'}", f"B={base / 'tiny.yaml'} --alpha 0"]
    opts = ["--seeds", "0 1", "--nj", 1, "--head", "mi", "--run_opts", RUN_OPTS, "--score_bss", "false",
            "--compare_opts", '--pair "A > B" --n_boot 200']
    first = grid(rec, *opts, "g", *systems)
    return rec, base, opts, systems, first


def test_every_run_is_trained_separated_and_scored(done):
    rec, _, _, _, first = done
    assert first.returncode == 0, first.stdout[-5000:]
    assert len(re.findall(r"\(run\.sh:\d+\) Stage 3: training", first.stdout)) == 4
    rows = (rec / "exp" / "g" / "runs.tsv").read_text().splitlines()
    mask = os.umask(0)
    os.umask(mask)
    assert (rec / "exp" / "g" / "runs.tsv").stat().st_mode & 0o777 == 0o666 & ~mask  # not mktemp's 0600
    assert rows[0].split("\t") == ["system", "seed", "decode_dir", "seconds", "config", "overrides"]
    assert [r.split("\t")[:3] for r in rows[1:]] == [["A", "0", "A/seed0"], ["A", "1", "A/seed1"],
                                                     ["B", "0", "B/seed0"], ["B", "1", "B/seed1"]]
    assert rows[3].split("\t")[5] == "--alpha 0"
    for system in ("A", "B"):
        for seed in (0, 1):
            run = rec / "exp" / "g" / system / f"seed{seed}"
            conf = (run / "config.yaml").read_text()
            assert f"seed: {seed}\n" in conf and ("alpha: 0.0" in conf) == (system == "B")
            assert (run / "score_test_mi" / "per_utt.csv").is_file() and not (run / "score_test_dc").exists()
    text = (rec / "exp" / "g" / "COMPARE.md").read_text()
    assert "# Grid g: A B x seeds 0 1" in text and "## test: SI-SDRi" in text
    for label in ("A", "B"):
        assert re.search(rf"^\| {label} \| 2 \|", text, re.M), label
    v = r"(holds|reversed|inconclusive) \*\(few files\)\*"  # 2 test files: no bold verdicts, raw then Holm
    assert re.search(rf"^\| A > B \| test \| SI-SDRi \| vocals \|.* \| {v} \| [0-9.]+ \| {v} \| n/a \|$", text, re.M)
    assert "**Warning: 2 seed(s) per system.**" in text
    assert (rec / "exp" / "g" / "compare.png").stat().st_size > 1000


def _weights(run):
    return torch.load(run / "model.pt", map_location="cpu", weights_only=True)["model_state"]


def test_seeds_change_the_run_and_the_same_seed_repeats_it(done):
    rec, base, opts, systems, first = done
    assert first.returncode == 0
    g = rec / "exp" / "g"
    w0, w1 = _weights(g / "A" / "seed0"), _weights(g / "A" / "seed1")
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)  # different initialisation and data order
    s0 = (g / "A" / "seed0" / "score_test_mi" / "per_utt.csv").read_text()
    assert s0 != (g / "A" / "seed1" / "score_test_mi" / "per_utt.csv").read_text()
    # the same system and seed in another grid, with a mismatched test set (--extra_sets) as well
    again = grid(rec, "--seeds", "0", *opts[2:10], "--extra_sets", "data/valid", "h", systems[0])
    assert again.returncode == 0, again.stdout[-4000:]
    h = rec / "exp" / "h" / "A" / "seed0"
    w0b = _weights(h)
    assert w0.keys() == w0b.keys() and all(torch.equal(w0[k], w0b[k]) for k in w0)
    assert (h / "score_test_mi" / "per_utt.csv").read_text() == s0
    assert (h / "score_valid_mi" / "per_utt.csv").is_file()
    assert "## valid: SI-SDRi" in (rec / "exp" / "h" / "COMPARE.md").read_text()


def test_a_second_call_skips_every_run(done):
    rec, _, opts, systems, first = done
    assert first.returncode == 0
    model = rec / "exp" / "g" / "B" / "seed1" / "model.pt"
    before = model.stat().st_mtime_ns
    again = grid(rec, *opts, "g", *systems)
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count("already done") == 4 and "Stage 3" not in again.stdout
    assert model.stat().st_mtime_ns == before and (rec / "exp" / "g" / "COMPARE.md").is_file()


@pytest.mark.parametrize("bad,message", [
    (["g2", "A=nowhere.yaml"], "system A: training config nowhere.yaml not found"),
    (["g2", "no config"], "system 'no config': expected NAME=CONFIG"),
    (["bad/name", "A=conf/feats.yaml"], "grid name 'bad/name'"),
    (["--seeds", "0 x", "g2", "A=conf/feats.yaml"], "--seeds: 'x' is not a non-negative integer"),
    (["g2", "A=conf/feats.yaml", "A=conf/feats.yaml"], "system A is given twice"),
])
def test_bad_grids_fail_with_one_line(done, bad, message):
    rec = done[0]
    res = grid(rec, *bad)
    assert res.returncode != 0 and message in res.stdout and len(res.stdout.strip().splitlines()) == 1, res.stdout
    assert not (rec / "exp" / "g2").exists()


# ------------------------------------------------------------------ a fake recipe: what a run leaves, fast

FAKE_RUN = r"""#!/usr/bin/env bash
# A recipe's run.sh as run_grid.sh calls it: records the call, writes a model, a separation and a score.
set -euo pipefail
while [ $# -gt 0 ]; do
  case $1 in --tag) tag=$2; shift 2 ;; --train_args) train_args=$2; shift 2 ;; *) shift ;; esac
done
seed=${train_args##*--seed }
echo "$tag" >> calls.txt
ddir=exp/$tag
mkdir -p "exp/$tag"
[ -f "exp/$tag/model.pt" ] || echo "model $tag $RANDOM" > "exp/$tag/model.pt"
if [ -n "${FAKE_AVG:-}" ]; then
  ddir=exp/${tag}_avg2
  mkdir -p "$ddir" && cp "exp/$tag/model.pt" "$ddir/model.pt"
fi
mkdir -p "$ddir/separate_test_mi/wav" "$ddir/score_test_mi"
echo "u1 $ddir/separate_test_mi/wav/u1.wav" > "$ddir/separate_test_mi/vocals.scp"
printf 'utt,seconds,vocals_si_sdri,accompaniment_si_sdri\n' > "$ddir/score_test_mi/per_utt.csv"
for u in 1 2 3 4; do echo "u$u,1.0,$((u + seed)).0,$((u * 2)).0" >> "$ddir/score_test_mi/per_utt.csv"; done
"""


@pytest.fixture
def fake_recipe(tmp_path):
    (tmp_path / "run.sh").write_text(FAKE_RUN)
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "utils").symlink_to(Path(__file__).resolve().parents[1] / "utils")
    (tmp_path / "a.yaml").write_text("alpha: 0.5\n")
    return tmp_path


def fake_grid(rec, *args, env=None):
    proc = subprocess.run(["utils/run_grid.sh", "--compare_opts", "--n_boot 50", *args], cwd=rec,
                          env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=120)
    calls = (rec / "calls.txt").read_text().split() if (rec / "calls.txt").is_file() else []
    (rec / "calls.txt").unlink(missing_ok=True)
    return proc, calls


def test_a_missing_or_changed_run_is_run_again(fake_recipe):
    rec, systems = fake_recipe, ["A=a.yaml", "B=a.yaml --alpha 0"]
    first, calls = fake_grid(rec, "--seeds", "0 1", "g", *systems)
    assert first.returncode == 0, first.stdout[-3000:]
    assert calls == ["g/A/seed0", "g/A/seed1", "g/B/seed0", "g/B/seed1"]
    _, calls = fake_grid(rec, "--seeds", "0 1", "g", *systems)
    assert calls == []  # everything done
    shutil.rmtree(rec / "exp" / "g" / "A" / "seed1")  # a deleted run folder
    (rec / "exp" / "g" / "B" / "seed0" / "score_test_mi" / "per_utt.csv").unlink()  # a run half there
    with open(rec / "exp" / "g" / "B" / "seed1" / "model.pt", "a") as f:  # a model changed since
        f.write("retrained elsewhere\n")
    again, calls = fake_grid(rec, "--seeds", "0 1", "g", *systems)
    assert again.returncode == 0, again.stdout[-3000:]
    assert calls == ["g/A/seed1", "g/B/seed0", "g/B/seed1"], again.stdout
    assert "exp/g/A/seed1/model.pt is missing or changed since the run was done: running it again" in again.stdout
    assert again.stdout.count("already done") == 1
    compare = (rec / "exp" / "g" / "COMPARE.md").read_text()
    assert re.search(r"^\| A \| 2 \|", compare, re.M) and re.search(r"^\| B \| 2 \|", compare, re.M), compare
    # a marker of an older grid (no list of outputs) does not make a run done
    marker = rec / "exp" / "g" / ".runs" / "A.seed0.done"
    marker.write_text("".join(line for line in marker.read_text().splitlines(True) if not line.startswith("output ")))
    again, calls = fake_grid(rec, "--seeds", "0", "g", systems[0])
    assert again.returncode == 0 and calls == ["g/A/seed0"], again.stdout[-3000:]


def test_overwrite_moves_the_runs_aside(fake_recipe):
    rec = fake_recipe
    first, _ = fake_grid(rec, "--seeds", "0", "g", "A=a.yaml", env={"FAKE_AVG": "1"})
    assert first.returncode == 0, first.stdout[-3000:]
    run, avg = rec / "exp" / "g" / "A" / "seed0", rec / "exp" / "g" / "A" / "seed0_avg2"
    (run / "notes.txt").write_text("mine\n")
    old_model = (run / "model.pt").read_text()
    again, calls = fake_grid(rec, "--seeds", "0", "--overwrite", "true", "g", "A=a.yaml", env={"FAKE_AVG": "1"})
    assert again.returncode == 0 and calls == ["g/A/seed0"], again.stdout[-3000:]
    [run_old] = run.parent.glob("seed0.old.*")
    [avg_old] = run.parent.glob("seed0_avg2.old.*")
    assert (run_old / "notes.txt").read_text() == "mine\n" and (run_old / "model.pt").read_text() == old_model
    assert (avg_old / "score_test_mi" / "per_utt.csv").is_file()
    assert (avg_old / "separate_test_mi" / "vocals.scp").read_text().split()[1].startswith(
        f"exp/g/A/{avg_old.name}/separate_test_mi/")  # the moved separation reads its own files
    assert f"moved exp/g/A/seed0 aside to exp/g/A/{run_old.name}" in again.stdout
    assert (run / "model.pt").read_text() != old_model and not (run / "notes.txt").exists()
    # the moved-aside averaged model is not taken for a second one of the run
    third, calls = fake_grid(rec, "--seeds", "0", "g", "A=a.yaml", env={"FAKE_AVG": "1"})
    assert third.returncode == 0 and calls == [] and "already done" in third.stdout, third.stdout[-3000:]
    rows = (rec / "exp" / "g" / "runs.tsv").read_text().splitlines()
    assert rows[1].split("\t")[:3] == ["A", "0", "A/seed0_avg2"]
