"""python -m sepkit.bin.dtype_parity and the bf16 emulation it falls back to (sepkit.bf16)."""
import json

import numpy as np
import pytest
import torch

from sepkit import Separator
from sepkit.audio import write_audio
from sepkit.bf16 import emulate_bf16, round_bf16
from sepkit.bin import dtype_parity
from sepkit.data.datadir import DataDir
from sepkit.frontend import CMVN, FeatureConfig
from sepkit.model_io import make_model_dict, save_model_dict
from sepkit.nets import ChimeraNet

SR = 8000


def _model_file(tmp_path):
    torch.manual_seed(0)
    fc = FeatureConfig(sample_rate=SR, n_fft=256, hop_length=64, n_mels=24)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": 24, "hidden": 16, "layers": 2, "emb_dim": 4}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    cmvn = CMVN(torch.full((fc.input_dim,), -3.0), torch.ones(fc.input_dim))
    d = make_model_dict(net, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"], {"segment_frames": 50})
    path = tmp_path / "model.pt"
    save_model_dict(path, d)
    return path, d


def _data(tmp_path, n=2):
    rng = np.random.default_rng(1)
    t = np.arange(SR) / SR
    wav, voc, acc = {}, {}, {}
    for i in range(n):
        v = (0.3 * np.sin(2 * np.pi * (300 + 50 * i) * t) * (t % 0.25 < 0.15)).astype(np.float32)
        a = (0.2 * rng.standard_normal(SR)).astype(np.float32)
        for name, sig, table in (("mix", v + a, wav), ("vocals", v, voc), ("accompaniment", a, acc)):
            path = tmp_path / "audio" / name / f"utt{i}.wav"
            write_audio(path, sig, SR, subtype="FLOAT")
            table[f"utt{i}"] = str(path)
    return DataDir.create(tmp_path / "data" / "test", wav, {"vocals": voc, "accompaniment": acc}).path


def test_round_bf16_keeps_8_bits_of_mantissa():
    x = torch.tensor([1.0, 1.0 + 2 ** -8, 1.0 + 2 ** -7, 3.14159265])
    r = round_bf16(x)
    assert r.dtype == torch.float32
    assert r[0] == 1.0 and r[1] == 1.0 and r[2] == 1.0 + 2 ** -7  # ties to even; 2^-7 is representable
    assert abs(r[3].item() - 3.140625) < 1e-9


def test_emulation_changes_outputs_slightly(tmp_path):
    _, d = _model_file(tmp_path)
    mix = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.3
    f32 = Separator(d, dtype="float32").separate(mix, SR, head="mi")["vocals"]
    bf = emulate_bf16(Separator(d, dtype="float32")).separate(mix, SR, head="mi")["vocals"]
    rel = np.abs(bf - f32).max() / np.abs(f32).max()
    assert 0 < rel < 0.05, rel  # not a no-op, and not a different network


def test_cli_table_json_and_tolerance(tmp_path, capsys):
    model, _ = _model_file(tmp_path)
    data = _data(tmp_path)
    out = tmp_path / "parity.json"
    rc = dtype_parity.main([str(model), str(data), "--bf16", "emulated", "--out", str(out), "--tolerance", "0.5"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    res = json.loads(out.read_text())
    assert res["bf16"] == "emulated" and res["n_files"] == 2 and abs(res["seconds"] - 2.0) < 1e-6
    for head in ("mi", "dc"):
        for src in ("vocals", "accompaniment"):
            r = res["heads"][head][src]
            assert np.isfinite(r["si_sdri_float32"]) and np.isfinite(r["nsdr_bfloat16"])
            assert r["si_sdri_diff"] == pytest.approx(r["si_sdri_bfloat16"] - r["si_sdri_float32"])
            assert f"| {head} | {src} |" in printed
    assert res["max_abs_diff"] < 0.5
    # a tolerance below the measured difference fails with a one-line reason
    rc = dtype_parity.main([str(model), str(data), "--bf16", "emulated", "--heads", "mi", "--tolerance", "-1"])
    assert rc == 1 and "exceeds --tolerance" in capsys.readouterr().err


def test_cli_rejects_unknown_head(tmp_path):
    model, _ = _model_file(tmp_path)
    data = _data(tmp_path, n=1)
    with pytest.raises(SystemExit, match="no xx head"):
        dtype_parity.main([str(model), str(data), "--bf16", "emulated", "--heads", "mi,xx"])
