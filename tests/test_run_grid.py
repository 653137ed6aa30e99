"""utils/run_grid.sh on a tiny synthetic grid (egs/folder/chimera, 2 systems x 2 seeds, a 16-unit network).

Checked: every run goes through the recipe's own stages (training, separation, scoring) into
exp/<grid>/<system>/seed<S>, the extra test sets are separated and scored too, the seed changes
the weights and the scores while the same seed gives identical ones, a second call skips every run,
the comparison (COMPARE.md, compare.png) is written, and bad grids fail with one clear line.
"""
import os
import re
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
    assert re.search(r"^\| A > B \| test \| SI-SDRi \| vocals \|.*\*\*(holds|reversed|inconclusive)\*\*", text, re.M)
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
