"""Tests of sepkit-separate and sepkit-export: formats, bad inputs, atomic outputs, exported models."""
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from sepkit.bin import export as export_bin
from sepkit.bin import separate as separate_bin
from sepkit.frontend import CMVN, FeatureConfig
from sepkit.model_io import load_model_dict, make_model_dict, save_model_dict
from sepkit.nets import ChimeraNet

N_MELS = 20


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory):
    """``exp/<tag>`` of a random tiny Chimera network: model.pt + config.yaml."""
    torch.manual_seed(0)
    fc = FeatureConfig(n_mels=N_MELS)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": N_MELS, "hidden": 8, "layers": 1, "emb_dim": 4}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    cmvn = CMVN(torch.randn(fc.input_dim) * 0.1 - 3.0, torch.rand(fc.input_dim) + 0.5)
    d = make_model_dict(net, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"], {"segment_frames": 20})
    d["optimizer"] = {"state": {}}  # resume state of a checkpoint: must not reach an export
    path = tmp_path_factory.mktemp("exp") / "tiny"
    save_model_dict(path / "model.pt", d)
    (path / "config.yaml").write_text("model_conf:\n  hidden: 8\n")
    return path


def write(path, shape, sr, subtype=None, seed=0):
    wav = (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(np.float32)
    sf.write(path, np.atleast_2d(wav).T, sr, subtype=subtype)
    return path


def run(capsys, *argv):
    rc = separate_bin.main(["--no-progress", *map(str, argv)])
    return rc, [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]


def outputs(out):
    """Everything under ``out`` but the manifests that mark sepkit-separate's folders (tested on their own)."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name != separate_bin.MANIFEST)


@pytest.mark.parametrize("sr,channels,ext", [(8000, 1, "wav"), (16000, 2, "flac"), (22050, 1, "flac"),
                                             (44100, 2, "wav"), (48000, 2, "wav")])
def test_outputs_keep_rate_channels_and_length(tmp_path, capsys, exp_dir, sr, channels, ext):
    n = int(0.4 * sr) + 7
    src = write(tmp_path / f"song.x.{ext}", (channels, n), sr)
    rc, errors = run(capsys, "--model", exp_dir, "--outdir", tmp_path / "out", src)
    assert rc == 0 and errors == []
    assert outputs(tmp_path / "out") == ["song.x", "song.x/accompaniment.wav", "song.x/vocals.wav"]
    ys = [sf.read(tmp_path / "out" / "song.x" / f"{s}.wav", always_2d=True) for s in ("vocals", "accompaniment")]
    for y, y_sr in ys:
        assert y_sr == sr and y.shape == (n, channels)
    if sr == 16000:  # at the model's rate the masks sum to one: the estimates add up to the input
        x, _ = sf.read(src, always_2d=True)
        np.testing.assert_allclose(ys[0][0] + ys[1][0], x, atol=2e-4)


def zero_channel_wav(path):
    fmt = struct.pack("<HHIIHH", 1, 0, 16000, 0, 0, 16)  # PCM, 0 channels
    path.write_bytes(b"RIFF" + struct.pack("<I", 36) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", 0))
    return path


def bad_inputs(d):
    """Every kind of bad input, each with the words its error line must contain."""
    full = write(d / "full.wav", (2, 16000), 16000).read_bytes()
    (d / "truncated.wav").write_bytes(full[:len(full) // 2])
    fl = write(d / "full.flac", (2, 16000), 16000).read_bytes()
    (d / "truncated2.flac").write_bytes(fl[:len(fl) // 2])
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.wav").write_text("these are my lyrics, not audio\n" * 20)
    nan = np.zeros((1000, 2), np.float32)
    nan[10, 1] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = np.zeros((1000, 1), np.float32)
    inf[3] = np.inf
    sf.write(d / "inf.wav", inf, 16000, subtype="FLOAT")
    return {d / "missing.wav": "no such file", d / "empty.wav": "empty",
            d / "truncated.wav": "truncated", d / "truncated2.flac": "truncated",
            d / "notes.wav": "not a readable audio file", d / "nan.wav": "NaN or infinite",
            d / "inf.wav": "NaN or infinite", zero_channel_wav(d / "zero.wav"): "channel"}


def test_bad_inputs_one_line_each_others_still_separated(tmp_path, capsys, exp_dir):
    bad = bad_inputs(tmp_path)
    good = [write(tmp_path / "a.wav", (2, 4000), 44100), write(tmp_path / "z.flac", (1, 3000), 16000)]
    files = [good[0], *bad, good[1]]
    rc, errors = run(capsys, "--model", exp_dir, "--outdir", tmp_path / "out", *files)
    assert rc == 1
    assert len(errors) == len(bad)
    for (path, words), line in zip(bad.items(), errors):
        assert str(path) in line and words.lower() in line.lower(), line
    assert outputs(tmp_path / "out") == ["a", "a/accompaniment.wav", "a/vocals.wav",
                                         "z", "z/accompaniment.wav", "z/vocals.wav"]  # nothing partial, no temp


def test_fail_fast_stops_at_the_first_failure(tmp_path, capsys, exp_dir):
    good = write(tmp_path / "b.wav", (1, 4000), 16000)
    rc, errors = run(capsys, "--fail-fast", "--model", exp_dir, "--outdir", tmp_path / "out",
                     tmp_path / "missing.wav", good)
    assert rc == 1 and len(errors) == 1 and "missing.wav" in errors[0]
    assert outputs(tmp_path / "out") == []


def test_unwritable_output_directory(tmp_path, capsys, exp_dir):
    good = write(tmp_path / "b.wav", (1, 4000), 16000)
    (tmp_path / "plainfile").write_text("x")
    rc, errors = run(capsys, "--model", exp_dir, "--outdir", tmp_path / "plainfile" / "out", good)
    assert rc == 1 and len(errors) == 1 and "plainfile" in errors[0] and "cannot be written" in errors[0]


def test_unwritable_per_file_output_leaves_nothing(tmp_path, capsys, exp_dir, monkeypatch):
    good = [write(tmp_path / "a.wav", (1, 4000), 16000), write(tmp_path / "b.wav", (1, 4000), 16000)]
    real_write = sf.SoundFile.write  # the outputs are written in blocks (sepkit.stream)

    def failing_write(f, data):  # disk full while writing b's second file
        if "accompaniment" in str(f.name) and "/.b." in str(f.name):
            raise OSError(28, "No space left on device")
        return real_write(f, data)

    monkeypatch.setattr(sf.SoundFile, "write", failing_write)
    rc, errors = run(capsys, "--model", exp_dir, "--outdir", tmp_path / "out", *good)
    assert rc == 1 and len(errors) == 1 and "b.wav" in errors[0] and "No space left" in errors[0]
    assert outputs(tmp_path / "out") == ["a", "a/accompaniment.wav", "a/vocals.wav"]


def test_existing_outputs_need_overwrite(tmp_path, capsys, exp_dir):
    src = write(tmp_path / "a.wav", (1, 4000), 16000)
    assert run(capsys, "--model", exp_dir, "--outdir", tmp_path / "out", src)[0] == 0
    (tmp_path / "out" / "a" / "vocals.wav").write_bytes(b"old")
    rc, errors = run(capsys, "--model", exp_dir, "--outdir", tmp_path / "out", src)
    assert rc == 1 and len(errors) == 1 and "exists" in errors[0] and str(tmp_path / "out" / "a") in errors[0]
    assert (tmp_path / "out" / "a" / "vocals.wav").read_bytes() == b"old"
    rc, errors = run(capsys, "--overwrite", "--model", exp_dir, "--outdir", tmp_path / "out", src)
    assert rc == 0 and sf.info(tmp_path / "out" / "a" / "vocals.wav").frames == 4000
    assert outputs(tmp_path / "out") == ["a", "a/accompaniment.wav", "a/vocals.wav"]


def test_two_inputs_with_the_same_name(tmp_path, capsys, exp_dir):
    (tmp_path / "x").mkdir()
    a = write(tmp_path / "song.wav", (1, 4000), 16000)
    b = write(tmp_path / "x" / "song.flac", (1, 4000), 16000)
    rc, errors = run(capsys, "--model", exp_dir, "--outdir", tmp_path / "out", a, b)
    assert rc == 1 and len(errors) == 1 and str(b) in errors[0] and str(a) in errors[0]


def test_model_errors(tmp_path, capsys, exp_dir):
    src = write(tmp_path / "a.wav", (1, 4000), 16000)
    rc, errors = run(capsys, "--model", tmp_path / "nomodel", "--outdir", tmp_path / "out", src)
    assert rc == 1 and len(errors) == 1 and "nomodel" in errors[0]
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    rc, errors = run(capsys, "--model", tmp_path / "junk.pt", "--outdir", tmp_path / "out", src)
    assert rc == 1 and len(errors) == 1 and "junk.pt" in errors[0]


def test_export_gives_identical_outputs(tmp_path, capsys, exp_dir):
    exported = tmp_path / "model" / "tiny.pt"
    assert export_bin.main([str(exp_dir), str(exported)]) == 0
    d = load_model_dict(exported)
    assert "optimizer" not in d and d["sources"] == ["vocals", "accompaniment"] and d["train"]["segment_frames"] == 20
    assert torch.load(exported, weights_only=True)["format"] == "sepkit-model/1"
    src = write(tmp_path / "a.flac", (2, 30000), 44100)
    for head in ("mi", "dc"):
        for name, model in (("dir", exp_dir), ("file", exported)):
            assert run(capsys, "--head", head, "--model", model, "--outdir", tmp_path / name / head, src)[0] == 0
        for s in ("vocals", "accompaniment"):
            a, _ = sf.read(tmp_path / "dir" / head / "a" / f"{s}.wav")  # bytes differ: PEAK chunk time stamp
            np.testing.assert_array_equal(a, sf.read(tmp_path / "file" / head / "a" / f"{s}.wav")[0])
    capsys.readouterr()
    assert export_bin.main([str(exp_dir), str(exported)]) == 1  # exists
    assert "exists" in capsys.readouterr().err
    assert export_bin.main([str(tmp_path / "none"), str(tmp_path / "o.pt")]) == 1
    assert "none" in capsys.readouterr().err and not (tmp_path / "o.pt").exists()
    d["model_conf"]["hidden"] = 9  # settings that do not fit the weights
    save_model_dict(tmp_path / "bad" / "model.pt", d)
    assert export_bin.main([str(tmp_path / "bad"), str(tmp_path / "o.pt")]) == 1
    assert "do not fit" in capsys.readouterr().err and not (tmp_path / "o.pt").exists()


def test_options_reach_the_separator(tmp_path, capsys, exp_dir):
    src = write(tmp_path / "a.wav", (2, 20000), 44100)
    rc, errors = run(capsys, "--segment", "7", "--overlap", "0.5", "--batch-size", "2", "--dtype", "float32",
                     "--residual", "--subtype", "PCM_24", "--model", exp_dir, "--outdir", tmp_path / "out", src)
    assert rc == 0 and errors == []
    v, _ = sf.read(tmp_path / "out" / "a" / "vocals.wav", always_2d=True)
    a, _ = sf.read(tmp_path / "out" / "a" / "accompaniment.wav", always_2d=True)
    assert sf.info(tmp_path / "out" / "a" / "vocals.wav").subtype == "PCM_24"
    np.testing.assert_allclose(v + a, sf.read(src, always_2d=True)[0], atol=1e-5)  # residual: sums to the input
    argv = ["--segment", "0", "--model", str(exp_dir), "--outdir", str(tmp_path / "o"), str(src)]
    assert separate_bin.main(argv) == 2
    assert "--segment" in capsys.readouterr().err


def test_python_module_entry_point(tmp_path, exp_dir):
    src = write(tmp_path / "a.wav", (2, 4000), 22050)
    res = subprocess.run([sys.executable, "-m", "sepkit.bin.separate", "--model", str(exp_dir), "--head", "dc",
                          "--outdir", str(tmp_path / "out"), str(src), str(tmp_path / "gone.wav")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert [ln for ln in res.stderr.splitlines() if "error" in ln] == \
        [f"sepkit-separate: error: {tmp_path / 'gone.wav'}: no such file"]
    assert sf.info(tmp_path / "out" / "a" / "vocals.wav").channels == 2
    assert callable(separate_bin.console_main) and callable(export_bin.console_main)
