"""egs/mir1k/chimera: data preparation (Huang et al. 2014 split), cross-clip augmentation, and all stages
end to end on a tiny synthetic MIR-1K; data preparation on ../shared/data/MIR-1K when present.

The end-to-end run is one module-scoped fixture (11 clips of 2 s, a 1-layer 16-unit network, 3 steps);
most of its time is the start-up of the ~15 python processes of the stages.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sepkit.model_io import load_model_dict

sys.path.insert(0, str(Path(__file__).resolve().parent / "recipes"))
from recipe_common import REPO, VENV_PYTHON, make_workspace, run_recipe  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="tools/venv not built (make venv)")

TAG = "tiny"
DECODE = "tiny_avg2"  # --average_last 2: stages 4-5 use the average of the 2 checkpoints
FEATS = "feats_w1024_mel200"  # the default config's paired features (conf/tuning/<default>.feat_conf)
TINY = ["--nj", "1", "--head", "mi", "--tag", TAG, "--average_last", "2", "--valid_fraction", "0.25", "--aug_hours", "0.003", "--aug_segment_seconds", "1",
        "--train_args", "--epochs 2 --hidden 16 --layers 1 --emb_dim 8 --batch_size 4 --segment_frames 50 "
                        "--max_steps_per_epoch 3 --tensorboard false"]


def _singers(data_dir):
    from sepkit.data.datadir import DataDir

    return {u.split("_")[0] for u in DataDir(data_dir).utts}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from sepkit.data.synth_layouts import make_corpus

    base = tmp_path_factory.mktemp("mir1k_recipe")
    make_corpus("mir1k", base / "MIR-1K", num_songs=8, num_test_songs=3, duration=2.0, seed=3, progress=False)
    rec = make_workspace(base, "mir1k/chimera")
    first = run_recipe(rec, "--mir1k", base / "MIR-1K", *TINY)
    return rec, base, first


def test_split_and_specs(recipe):
    from sepkit.data.datadir import DataDir, load_audio, validate_data_dir

    rec, base, first = recipe
    assert first.returncode == 0, first.stdout[-4000:]
    data = rec / "data"
    for name in ("mir1k_train", "mir1k_valid", "mir1k_test"):
        assert validate_data_dir(data / name, check_audio=True) == [], name
    assert _singers(data / "mir1k_train") | _singers(data / "mir1k_valid") == {"abjones", "amy"}
    assert _singers(data / "mir1k_test") == {"annar", "yifen", "synth1"}  # every other singer present
    songs = {n: {u.rsplit("_", 1)[0] for u in DataDir(data / n).utts} for n in ("mir1k_train", "mir1k_valid")}
    assert songs["mir1k_valid"] and not songs["mir1k_train"] & songs["mir1k_valid"]  # held out by song
    all_clips = {p.stem for p in (base / "MIR-1K" / "Wavfile").glob("*.wav")}
    got = set().union(*(DataDir(data / n).utts for n in ("mir1k_train", "mir1k_valid", "mir1k_test")))
    assert got == all_clips
    test = DataDir(data / "mir1k_test")
    assert test.sources == ["vocals", "accompaniment"]
    utt = test.utts[0]
    assert json.loads(test.wav[utt])["channel"] == "sum"
    assert json.loads(test.source("vocals")[utt])["channel"] == 1  # right = voice
    assert json.loads(test.source("accompaniment")[utt])["channel"] == 0  # left = accompaniment
    mix = load_audio(test.wav[utt])[0]
    parts = sum(load_audio(test.source(s)[utt])[0] for s in test.sources)
    np.testing.assert_allclose(mix, parts, atol=1e-6)  # mixture = left + right


def test_cross_clip_augmentation(recipe):
    from sepkit.data.datadir import DataDir, validate_data_dir

    rec, _, first = recipe
    assert first.returncode == 0, first.stdout[-4000:]
    data = rec / "data"
    aug = DataDir(data / "mir1k_train_aug0.003h")
    remix = DataDir(data / "mir1k_train_remix0.003h")
    train = DataDir(data / "mir1k_train")
    assert validate_data_dir(aug.path) == []
    assert set(aug.utts) == set(train.utts) | set(remix.utts) and len(remix.utts) == 11  # ceil(10.8 s / 1 s)
    rows = [line.split("\t") for line in (remix.path / "remix.tsv").read_text().splitlines()[1:]]
    assert rows and all(r[1] != r[3] for r in rows)  # voice and accompaniment from different clips
    assert all(r[1] in train.utts and r[3] in train.utts for r in rows)  # only training clips are remixed
    assert (rec / "dump" / FEATS / "mir1k_train_aug0.003h" / "cmvn.ark").is_file()


def test_all_stages_and_reference_rows(recipe):
    rec, _, first = recipe
    assert first.returncode == 0, first.stdout[-4000:]
    for stage in range(6):
        assert re.search(rf"\(run\.sh:\d+\) Stage {stage}:", first.stdout), f"no stage {stage} log line"
    exp = rec / "exp"
    assert load_model_dict(exp / DECODE / "model.pt")["train"]["averaged_epochs"] == [1, 2]
    result = json.loads((exp / DECODE / "score_mir1k_test_mi" / "result.json").read_text())
    assert set(result["vocals"]) == {"si_sdri", "gnsdr", "gsir", "gsar"} and result["n_files"] == 3
    oracle = {h: json.loads((exp / f"oracle_{FEATS}" / f"score_mir1k_test_{h}" / "result.json").read_text())
              for h in ("ibm", "wlm", "mix")}
    assert oracle["mix"]["vocals"]["gnsdr"] == pytest.approx(0, abs=1e-6)
    assert oracle["ibm"]["vocals"]["gnsdr"] > 5 and oracle["wlm"]["vocals"]["gnsdr"] > 5
    table = (exp / "RESULTS.md").read_text()
    for row in (f"| {DECODE} | mir1k_test | mi |", f"| oracle_{FEATS} | mir1k_test | ibm |",
                f"| oracle_{FEATS} | mir1k_test | wlm |", f"| oracle_{FEATS} | mir1k_test | mix |"):
        assert row in table


def test_rerun_skips(recipe):
    rec, base, first = recipe
    assert first.returncode == 0
    again = run_recipe(rec, "--mir1k", base / "MIR-1K", *TINY, "--stop_stage", "2")
    assert again.returncode == 0, again.stdout[-4000:]
    assert "already prepared" in again.stdout and "already made" in again.stdout
    assert "already done" in again.stdout or "skipping" in again.stdout


def test_stage0_needs_the_corpus(tmp_path):
    rec = make_workspace(tmp_path, "mir1k/chimera")
    out = run_recipe(rec, "--stop_stage", "0")
    assert out.returncode != 0 and "--mir1k DIR is required" in out.stdout
    out = run_recipe(rec, "--mir1k", tmp_path / "nowhere", "--stop_stage", "0")
    assert out.returncode != 0 and "is not a directory" in out.stdout


def test_combine_data_refuses_clashes(tmp_path):
    from sepkit.data.datadir import DataDir

    wav = tmp_path / "a.wav"
    from sepkit.audio import write_audio

    write_audio(wav, np.zeros((1, 800), np.float32), 8000)
    DataDir.create(tmp_path / "d1", {"u1": str(wav)}, {"vocals": {"u1": str(wav)}, "accompaniment": {"u1": str(wav)}})
    DataDir.create(tmp_path / "d2", {"u1": str(wav)}, {"vocals": {"u1": str(wav)}, "accompaniment": {"u1": str(wav)}})
    DataDir.create(tmp_path / "d3", {"u3": str(wav)}, {"accompaniment": {"u3": str(wav)}, "vocals": {"u3": str(wav)}})
    script = REPO / "utils" / "combine_data.sh"
    out = subprocess.run([str(script), str(tmp_path / "o"), str(tmp_path / "d1"), str(tmp_path / "d2")],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "'u1' is in more than one input" in out.stderr
    out = subprocess.run([str(script), str(tmp_path / "o"), str(tmp_path / "d1"), str(tmp_path / "d3")],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "d3/sources differs" in out.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not (SHARED / "MIR-1K" / "Wavfile").is_dir(), reason="../shared/data/MIR-1K not present")
def test_prepare_shared_mir1k(tmp_path):
    from sepkit.data.datadir import DataDir

    rec = make_workspace(tmp_path, "mir1k/chimera")
    out = run_recipe(rec, "--mir1k", SHARED / "MIR-1K", "--stop_stage", "0")
    assert out.returncode == 0, out.stdout[-4000:]
    data = rec / "data"
    sizes = {n: len(DataDir(data / n).utts) for n in ("mir1k_train", "mir1k_valid", "mir1k_test")}
    n_train = len(list((SHARED / "MIR-1K" / "Wavfile").glob("abjones_*.wav"))) + \
        len(list((SHARED / "MIR-1K" / "Wavfile").glob("amy_*.wav")))
    assert sizes["mir1k_train"] + sizes["mir1k_valid"] == n_train
    assert 0 < sizes["mir1k_valid"] < 0.2 * n_train
    assert _singers(data / "mir1k_test") == ({p.name.split("_")[0] for p in (SHARED / "MIR-1K" / "Wavfile").glob("*.wav")}
                                             - {"abjones", "amy"})
