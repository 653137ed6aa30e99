"""egs/ikala/eval on a tiny synthetic iKala with a small untrained model: stages 0-2, both heads, re-run skips."""
import csv
import json
import re

import pytest

from recipe_common import VENV_PYTHON, make_workspace, run_recipe, snapshot

pytestmark = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="tools/venv not built (make venv)")


def _tiny_model(path):
    """A randomly initialised 2-head Chimera model file (the recipe only needs a valid model)."""
    import torch

    from sepkit.frontend import CMVN, FeatureConfig
    from sepkit.model_io import make_model_dict, save_model_dict
    from sepkit.nets import build_model

    torch.manual_seed(0)
    conf = FeatureConfig()
    model_conf = {"type": "chimera", "input_dim": conf.input_dim, "n_freq": conf.n_mels, "hidden": 8, "layers": 1,
                  "emb_dim": 4, "n_sources": 2, "heads": ["dc", "mi"]}
    model = build_model(model_conf)
    cmvn = CMVN(torch.zeros(conf.input_dim), torch.ones(conf.input_dim))
    d = make_model_dict(model, model_conf, conf.to_dict(), cmvn, ["vocals", "accompaniment"], {"segment_frames": 50})
    save_model_dict(path / "model.pt", d)
    return path


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from sepkit.data.synth_layouts import make_corpus

    base = tmp_path_factory.mktemp("ikala_eval")
    make_corpus("ikala", base / "iKala", num_songs=3, duration=3.0, seed=11, progress=False)
    model_dir = _tiny_model(base / "train_tiny")
    rec = make_workspace(base, "ikala/eval")
    args = ["--ikala", base / "iKala", "--model_dir", model_dir, "--nj", "2"]
    return rec, args, run_recipe(rec, *args)


def test_ikala_eval_stages(recipe):
    rec, _, first = recipe
    assert first.returncode == 0, first.stdout[-4000:]
    for stage in range(3):
        assert re.search(rf"\(run\.sh:\d+\) Stage {stage}:", first.stdout), f"no stage {stage} log line"
    from sepkit.data.datadir import DataDir

    data = DataDir(rec / "data" / "ikala")
    assert len(data.utts) == 3 and data.sources == ["vocals", "accompaniment"]
    exp = rec / "exp" / "train_tiny"  # tag = the name of --model_dir
    for head in ("mi", "dc"):
        assert DataDir(exp / f"separate_ikala_{head}").utts == data.utts
        result = json.loads((exp / f"score_ikala_{head}" / "result.json").read_text())
        assert set(result) == {"vocals", "accompaniment", "n_files", "seconds", "order_is_best_fraction"}
        assert result["n_files"] == 3 and result["seconds"] == pytest.approx(9.0, abs=0.01)
        assert set(result["vocals"]) == {"si_sdri", "gnsdr", "gsir", "gsar"}
        rows = list(csv.DictReader((exp / f"score_ikala_{head}" / "per_utt.csv").open()))
        assert len(rows) == 3
    table = (rec / "exp" / "RESULTS.md").read_text()
    assert "| train_tiny | ikala | mi |" in table and "| train_tiny | ikala | dc |" in table
    assert "| oracle_feats | ikala | ibm |" in table


def test_ikala_rerun_skips(recipe):
    rec, args, first = recipe
    assert first.returncode == 0
    before = snapshot(rec)
    again = run_recipe(rec, *args)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "already prepared" in again.stdout and "already separated" in again.stdout
    assert "already scored" in again.stdout and "separating " not in again.stdout
    assert snapshot(rec) == before


def test_ikala_needs_a_model(recipe):
    rec, args, _ = recipe
    res = run_recipe(rec, "--ikala", args[1], "--stage", 1)
    assert res.returncode != 0 and "--model_dir is required" in res.stdout
    res = run_recipe(rec, "--ikala", args[1], "--stage", 1, "--model_dir", rec / "no_model")
    assert res.returncode != 0 and "no_model" in res.stdout
