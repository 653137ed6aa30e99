"""utils/separate.sh never removes a separation it did not make for these inputs: it refuses with
one line naming the dir and --overwrite true, which moves the old dir aside (docs/recipes.md)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sepkit.audio import write_audio
from sepkit.data.datadir import DataDir
from sepkit.frontend import CMVN, FeatureConfig
from sepkit.model_io import make_model_dict, save_model_dict
from sepkit.nets import ChimeraNet

UTILS = Path(__file__).resolve().parents[1] / "utils"


def _tiny_model(path):
    torch.manual_seed(0)
    fc = FeatureConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=20)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": 20, "hidden": 8, "layers": 1, "emb_dim": 4}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    cmvn = CMVN(torch.zeros(fc.input_dim), torch.ones(fc.input_dim))
    save_model_dict(path, make_model_dict(net, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"], {}))
    return path


def _data(root):
    rng = np.random.default_rng(0)
    wav, voc, acc = {}, {}, {}
    for utt in ("u1", "u2"):
        v, a = rng.uniform(-0.3, 0.3, (2, 1, 1600)).astype(np.float32)
        for name, x, table in (("vocals", v, voc), ("accompaniment", a, acc), ("mix", v + a, wav)):
            table[utt] = str(root / "audio" / f"{utt}_{name}.wav")
            write_audio(table[utt], x, 8000)
    return DataDir.create(root / "data" / "test", wav, {"vocals": voc, "accompaniment": acc}).path


def _separate(root, model, data, *opts):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run([str(UTILS / "separate.sh"), "--nj", "1", "--head", "mi", *opts, str(model), str(data),
                           str(root / "exp")], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_separate_sh_keeps_results_of_another_model(tmp_path):
    model, data = _tiny_model(tmp_path / "model.pt"), _data(tmp_path)
    res = _separate(tmp_path, model, data)
    assert res.returncode == 0, res.stderr
    sep = tmp_path / "exp" / "separate_test_mi"
    wavs = {p: p.read_bytes() for p in sorted((sep / "wav").rglob("*.wav"))}
    assert len(wavs) == 4

    # the data dir prepared again from the same files: still the same data, nothing to do
    d = DataDir(data)
    DataDir.create(data, d.wav, {s: d.source(s) for s in d.sources}, overwrite=True)
    res = _separate(tmp_path, model, data)
    assert res.returncode == 0 and "already separated" in res.stderr, res.stderr

    # a mixture rewritten in place: other data, refused
    mix = Path(d.wav["u2"])
    os.utime(mix, ns=(mix.stat().st_atime_ns, mix.stat().st_mtime_ns + 10**9))
    res = _separate(tmp_path, model, data)
    assert res.returncode == 1 and "another model file, head, --separate-opts or data" in res.stderr
    os.utime(mix, ns=(mix.stat().st_atime_ns, mix.stat().st_mtime_ns - 10**9))

    # the model file changes (retrained, or another one copied there): refused, nothing removed
    stamp = time.time() + 5
    os.utime(model, (stamp, stamp))
    res = _separate(tmp_path, model, data)
    assert res.returncode == 1
    err = [ln for ln in res.stderr.splitlines() if "separate.sh" in ln]
    assert len(err) == 1 and str(sep) in err[0] and "another model file" in err[0] and "--overwrite true" in err[0]
    assert {p: p.read_bytes() for p in sorted((sep / "wav").rglob("*.wav"))} == wavs
    assert (sep / ".done").is_file()

    # a dir that separate.sh did not make: refused too
    mine = tmp_path / "exp" / "separate_test_mi"
    (tmp_path / "keep").mkdir()
    os.rename(mine / "model_id", tmp_path / "keep" / "model_id")
    res = _separate(tmp_path, model, data)
    assert res.returncode == 1 and "not made by separate.sh" in res.stderr
    os.rename(tmp_path / "keep" / "model_id", mine / "model_id")

    # --overwrite true: the old separation is moved aside (still a data dir of its own wavs), then redone
    res = _separate(tmp_path, model, data, "--overwrite", "true")
    assert res.returncode == 0, res.stderr
    aside = list((tmp_path / "exp").glob("separate_test_mi.old.*"))
    assert len(aside) == 1 and f"moved {sep} aside to {aside[0]}" in res.stderr
    old = DataDir(aside[0])
    assert [Path(old.source("vocals")[u]).parent.parent.parent for u in old.utts] == [aside[0]] * 2
    assert {p: p.read_bytes() for p in sorted((aside[0] / "wav").rglob("*.wav"))} == \
        {aside[0] / p.relative_to(sep): b for p, b in wavs.items()}
    assert (sep / ".done").is_file() and len(list((sep / "wav").rglob("*.wav"))) == 4


def test_score_sh_scores_again_when_the_references_change(tmp_path):
    """Issue 23 item 4, stage 5: a reference rewritten in place (wav.scp and the separation untouched)
    left the scores "already scored" against the old references."""
    import json

    model, data = _tiny_model(tmp_path / "model.pt"), _data(tmp_path)
    assert _separate(tmp_path, model, data).returncode == 0
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    def score():
        return subprocess.run([str(UTILS / "score.sh"), "--nj", "1", "--head", "mi", "--bss", "false", str(data),
                               str(tmp_path / "exp")], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)

    result = tmp_path / "exp" / "score_test_mi" / "result.json"
    assert score().returncode == 0
    before = json.loads(result.read_text())
    res = score()
    assert res.returncode == 0 and "already scored" in res.stderr, res.stderr
    ref = Path(DataDir(data).source("vocals")["u1"])
    write_audio(ref, np.random.default_rng(5).uniform(-0.3, 0.3, (1, 1600)).astype(np.float32), 8000)
    os.utime(ref, ns=(10**9, 10**9))  # even with an old time
    res = score()
    assert res.returncode == 0 and "already scored" not in res.stderr, res.stderr
    assert json.loads(result.read_text())["vocals"] != before["vocals"]
