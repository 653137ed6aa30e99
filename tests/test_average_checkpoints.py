"""python -m sepkit.bin.average_checkpoints: weights averaged exactly, selection, refusals, --update."""
import os
import time

import pytest
import torch

from sepkit.bin import average_checkpoints as avg
from sepkit.frontend import CMVN, FeatureConfig
from sepkit.model_io import load_model_dict, make_model_dict, save_model_dict
from sepkit.nets import ChimeraNet
from sepkit.separate import Separator


def _conf(hidden=8):
    fc = FeatureConfig(n_mels=16)
    return fc, {"type": "chimera", "input_dim": fc.input_dim, "n_freq": 16, "hidden": hidden, "layers": 1, "emb_dim": 4,
                "batch_norm": True}


def _exp(tmp_path, epochs=(1, 2, 3), hidden=None, hop=None, cmvn_mean=None):
    """Checkpoints of epochs ``epochs``; per epoch optionally another hidden size, STFT hop or CMVN mean."""
    hidden = hidden or (8,) * len(epochs)
    hop = hop or (128,) * len(epochs)
    cmvn_mean = cmvn_mean or (0.0,) * len(epochs)
    exp = tmp_path / "exp" / "run"
    (exp / "checkpoints").mkdir(parents=True)
    states = {}
    for e, h, hp, mu in zip(epochs, hidden, hop, cmvn_mean):
        torch.manual_seed(e)
        fc, conf = _conf(h)
        fc = FeatureConfig(n_mels=16, hop_length=hp)
        mean = torch.zeros(fc.input_dim)
        mean[5] = mu
        net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
        d = make_model_dict(net, conf, fc.to_dict(), CMVN(mean, torch.ones(fc.input_dim)),
                            ["vocals", "accompaniment"], {"epoch": e})
        d["checkpoint"] = {"epoch": e, "step": 10 * e}
        save_model_dict(exp / "checkpoints" / f"ckpt-epoch{e}.pt", d)
        states[e] = d["model_state"]
    return exp, states


def test_average_of_last_n_is_the_mean(tmp_path):
    exp, states = _exp(tmp_path, epochs=(1, 2, 3, 4))
    out = tmp_path / "avg.pt"
    assert avg.main(["--last", "3", str(exp), str(out)]) == 0
    d = load_model_dict(out)
    assert "checkpoint" not in d and d["train"]["averaged_epochs"] == [2, 3, 4]
    for name, w in d["model_state"].items():
        if w.is_floating_point():
            want = (states[2][name].double() + states[3][name].double() + states[4][name].double()) / 3
            assert torch.allclose(w.double(), want, atol=1e-7), name
        else:  # batch norm's step counter: the newest checkpoint's
            assert torch.equal(w, states[4][name])
    assert set(Separator(d).heads) == {"mi", "dc"}  # a usable model file
    assert avg.main(["--epochs", "1,3", "--overwrite", str(exp), str(out)]) == 0
    d = load_model_dict(out)
    name = next(k for k, v in d["model_state"].items() if v.is_floating_point())
    assert torch.allclose(d["model_state"][name], (states[1][name] + states[3][name]) / 2, atol=1e-7)


def test_refusals(tmp_path, capsys):
    exp, _ = _exp(tmp_path, hidden=(8, 8, 12))
    out = tmp_path / "avg.pt"
    assert avg.main(["--last", "3", str(exp), str(out)]) == 1
    assert "differ in model_conf" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit, match="no checkpoint of epoch"):
        avg.main(["--epochs", "7", str(exp), str(out)])
    assert avg.main(["--last", "2", str(exp), str(out)]) == 1  # epochs 2 and 3 differ too
    assert avg.main(["--epochs", "1,2", str(exp), str(out)]) == 0
    with pytest.raises(SystemExit, match="exists"):
        avg.main(["--epochs", "1,2", str(exp), str(out)])
    with pytest.raises(SystemExit, match="no ckpt-epoch"):
        avg.main([str(tmp_path), str(tmp_path / "x.pt")])


@pytest.mark.parametrize("what", ["feat_conf", "cmvn"])
def test_checkpoints_of_other_features_or_cmvn_are_refused(tmp_path, capsys, what):
    # the same network on other features (another STFT hop) or other normalisation statistics: the
    # average would be weights no single front end fits; refused in one line naming both files and the field
    exp, _ = _exp(tmp_path, hop=(128, 128, 64) if what == "feat_conf" else None,
                  cmvn_mean=(0.0, 0.0, 0.5) if what == "cmvn" else None)
    out = tmp_path / "avg.pt"
    assert avg.main(["--last", "2", str(exp), str(out)]) == 1
    err = capsys.readouterr().err.strip()
    field = "feat_conf.hop_length: 128 vs 64" if what == "feat_conf" else "cmvn.mean[5]: 0.0 vs 0.5"
    # one short line: under 300 characters with the two checkpoint paths counted as under a plain pytest
    # tmp folder (~60 characters each), whatever the length of this run's (xdist workers add popen-gwN/)
    assert "\n" not in err and len(err.replace(str(tmp_path), "")) < 300 - 2 * 63 and not out.exists(), err
    assert f"ckpt-epoch2.pt and {exp / 'checkpoints' / 'ckpt-epoch3.pt'} differ in {field}" in err, err
    assert avg.main(["--epochs", "1,2", str(exp), str(out)]) == 0  # those two agree


def test_update_skips_when_up_to_date_and_redoes_when_stale(tmp_path):
    exp, _ = _exp(tmp_path)
    out = tmp_path / "avg.pt"
    assert avg.main(["--last", "2", "--update", str(exp), str(out)]) == 0
    first = out.stat().st_mtime_ns
    time.sleep(0.01)
    assert avg.main(["--last", "2", "--update", str(exp), str(out)]) == 0
    assert out.stat().st_mtime_ns == first  # skipped
    newer = time.time() + 5
    os.utime(exp / "checkpoints" / "ckpt-epoch3.pt", (newer, newer))  # retrained since
    assert avg.main(["--last", "2", "--update", str(exp), str(out)]) == 0
    assert out.stat().st_mtime_ns != first
    assert avg.main(["--last", "3", "--update", str(exp), str(out)]) == 0  # other epochs: rewritten
    assert load_model_dict(out)["train"]["averaged_epochs"] == [1, 2, 3]
