"""A folder corpus of 3 stems end to end (issue 20): egs/folder/chimera with sources vocals, drums and bass
(no accompaniment anywhere) through data preparation, features, 2 epochs of a tiny Chimera network (DC
one-hot targets and MI masks over 3 sources), separation with both heads (one file per source),
sepkit-separate on a song, and scoring with per-source rows (the oracle rows of 3 sources:
tests/test_score_sources.py)."""
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent / "recipes"))
from recipe_common import VENV_PYTHON, make_workspace, run_recipe  # noqa: E402

pytestmark = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="tools/venv not built (make venv)")

SR = 16000
STEMS = ["vocals", "drums", "bass"]
TINY = ["--nj", "1", "--tag", "tiny3", "--oracle", "false",  # oracle rows of 3 sources: test_score_sources.py
        "--train_args", "--epochs 2 --hidden 16 --layers 1 --emb_dim 8 --batch_size 4 --segment_frames 50 "
                        "--max_steps_per_epoch 2 --num_workers 0 --tensorboard false"]


def three_stem_corpus(root, songs=5, seconds=2.0):
    """``<song>/{vocals,drums,bass,other}.wav`` (mono, 16 kHz) from sepkit's synthetic songs; ``other`` is in
    every folder but in no source (the mixture is the sum of the three)."""
    from sepkit.data.synth import make_song

    for i in range(songs):
        stems, _ = make_song(np.random.default_rng([7, i]), seconds, SR, channels=1)
        for name in STEMS + ["other"]:
            path = Path(root) / f"song{i}" / f"{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), stems[name].T, SR, subtype="FLOAT")
    return Path(root)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder_stems")
    corpus = three_stem_corpus(base / "stems")
    rec = make_workspace(base, "folder/chimera")
    out = run_recipe(rec, "--corpus_dir", corpus, "--mixture", "sum", "--valid_fraction", 0.2, "--test_fraction", 0.2,
                     "--sources", " ".join(f"{s}={s}.wav" for s in STEMS), *TINY)
    return rec, base, out


def test_three_stems_prepared_dumped_and_trained(recipe):
    import torch

    from sepkit.data.datadir import DataDir

    rec, _, out = recipe
    assert out.returncode == 0, out.stdout[-4000:]
    for name in ("train", "valid", "test"):
        assert DataDir(rec / "data" / name).sources == STEMS
    assert (rec / "dump" / "feats" / "train" / "sources").read_text().split() == STEMS
    model = torch.load(rec / "exp" / "tiny3" / "model.pt", weights_only=True)
    assert model["sources"] == STEMS and model["model_conf"]["n_sources"] == 3
    assert model["model_state"]["mi_head.weight"].shape[-1] == 3  # an MI mask per source: (F, D, C)
    log = (rec / "exp" / "tiny3" / "train.log").read_text()
    num = r"([-+0-9.eE]+|nan|inf)"
    done = re.findall(rf"epoch (\d) done: train loss {num}, valid loss {num} dc {num} mi {num}", log)
    assert [e for e, *_ in done] == ["1", "2"], log[-2000:]
    assert all(np.isfinite(float(x)) for _, *losses in done for x in losses)  # DC and MI over 3 sources


def test_one_file_per_source_and_per_source_scores(recipe):
    rec, _, out = recipe
    assert out.returncode == 0, out.stdout[-4000:]
    exp = rec / "exp" / "tiny3"
    utt = (rec / "data" / "test" / "wav.scp").read_text().split()[0]
    for head in ("mi", "dc"):
        sep = exp / f"separate_test_{head}"
        assert sorted(p.name for p in (sep / "wav").iterdir()) == sorted(STEMS)
        assert (sep / "sources").read_text().split() == STEMS
        result = json.loads((exp / f"score_test_{head}" / "result.json").read_text())
        assert set(result) == set(STEMS) | {"n_files", "seconds", "order_is_best_fraction"} and result["n_files"] == 1
        assert all(isinstance(result[s]["si_sdri"], float) and result[s]["gnsdr"] is not None for s in STEMS)
        header = next(csv.reader((exp / f"score_test_{head}" / "per_utt.csv").open()))
        assert [c[:-len("_si_sdri")] for c in header if c.endswith("_si_sdri")] == STEMS
    table = (rec / "exp" / "RESULTS.md").read_text()
    assert "| tiny3 | test | mi |" in table and "SI-SDRi drums" in table and "SI-SDRi bass" in table
    # sepkit-separate on a song: one file per source the model knows
    mix = sum(sf.read(str(rec.parents[2] / "stems" / utt / f"{s}.wav"), dtype="float32")[0] for s in STEMS)
    song = rec.parents[2] / "song.wav"
    sf.write(str(song), mix, SR, subtype="FLOAT")
    res = subprocess.run([str(VENV_PYTHON), "-m", "sepkit.bin.separate", "--model", str(exp), "--outdir",
                          str(rec.parents[2] / "sep"), str(song)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    written = sorted(p.name for p in (rec.parents[2] / "sep" / "song").glob("*.wav"))
    assert written == sorted(f"{s}.wav" for s in STEMS)
