"""Oracle reference rows (sepkit.bin.oracle) and BSS eval v4 (sepkit.metrics_v4, sepkit.bin.score_v4)."""
import csv
import json

import numpy as np
import pytest

from sepkit.audio import write_audio
from sepkit.data.datadir import DataDir, write_scp
from sepkit.metrics_v4 import aggregate_v4, bss_eval_v4, frame_bounds, track_medians

SR = 8000


def _noise(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


# ------------------------------------------------------------------------------------------- v4 metric

def test_frame_bounds_drop_partial_last_window():
    assert frame_bounds(10, 3, 3) == [(0, 3), (3, 6), (6, 9)]
    assert frame_bounds(5, 8, 8) == [(0, 5)]  # shorter than one window: the whole signal
    assert frame_bounds(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]


def test_v4_gain_error_is_spatial_distortion():
    """Images version: est = 0.5 ref has SDR = ISR = 20 log10(1 / 0.5) = 6.02 dB, no interference/artifacts."""
    ref = _noise(0, (2, 3 * SR, 2))
    out = bss_eval_v4(ref, 0.5 * ref, SR, filters_len=32)
    assert out["sdr"].shape == (2, 3)
    np.testing.assert_allclose(out["sdr"], 20 * np.log10(2), atol=1e-6)
    np.testing.assert_allclose(out["isr"], 20 * np.log10(2), atol=1e-6)
    assert np.all(out["sir"] > 100) and np.all(out["sar"] > 100)


def test_v4_interference_and_artifacts_levels():
    """White, independent signals: leakage of the other source at -20 dB gives SIR ~ 20 dB, noise at
    -10 dB gives SAR ~ 10 dB; SDR combines both."""
    n = 4 * SR
    ref = _noise(1, (2, n))
    noise = _noise(2, n)
    est = np.stack([ref[0] + 0.1 * ref[1], ref[1] + np.sqrt(0.1) * noise])
    out = bss_eval_v4(ref, est, SR, filters_len=16)
    assert np.median(out["sir"][0]) == pytest.approx(20.0, abs=0.5)
    assert np.all(out["sar"][0] > 35)
    assert np.median(out["sar"][1]) == pytest.approx(10.0 + 10 * np.log10(1.0), abs=0.5)
    assert np.median(out["sdr"][1]) == pytest.approx(10.0, abs=0.5)
    assert np.all(out["sir"][1] > 35)


def test_v4_filters_are_fitted_on_the_whole_track():
    """A global time-invariant filter: a delayed copy is projected exactly (no artifacts) in every frame,
    and the distortion shows as spatial error only (SDR = ISR, both low)."""
    ref = _noise(3, (2, 3 * SR))
    est = np.roll(ref, 5, axis=1)
    est[:, :5] = 0
    out = bss_eval_v4(ref, est, SR, filters_len=16)
    assert np.all(out["sar"] > 25) and np.all(out["sir"] > 25)  # only window-edge effects remain
    assert np.all(out["sdr"] < 1) and np.allclose(out["sdr"], out["isr"], atol=0.1)


def test_v4_silent_window_is_nan_and_medians_ignore_it():
    ref = _noise(4, (2, 3 * SR))
    ref[1, :SR] = 0  # source 1 silent in the first window: the window is undefined for every source
    est = ref + 0.1 * _noise(5, ref.shape)
    out = bss_eval_v4(ref, est, SR, filters_len=16)
    assert np.isnan(out["sdr"][:, 0]).all() and np.isfinite(out["sdr"][:, 1:]).all()
    med = track_medians(out)
    np.testing.assert_allclose(med["sdr"], np.median(out["sdr"][:, 1:], axis=1))
    # median over tracks of per-track medians; a NaN track is left out of its source's median
    agg = aggregate_v4([{"sdr": np.array([1.0, np.nan]), "isr": np.zeros(2), "sir": np.zeros(2), "sar": np.zeros(2)},
                        {"sdr": np.array([3.0, 2.0]), "isr": np.zeros(2), "sir": np.zeros(2), "sar": np.zeros(2)},
                        {"sdr": np.array([10.0, 4.0]), "isr": np.zeros(2), "sir": np.zeros(2), "sar": np.zeros(2)}])
    np.testing.assert_allclose(agg["sdr"], [3.0, 3.0])


def test_v4_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        bss_eval_v4(np.zeros((2, 100, 2)), np.zeros((2, 100, 1)), SR)


# ------------------------------------------------------------------------------------------- fixtures

def _tone(freq, n, sr, seed):
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t) ** 2
    return env * sum(np.sin(2 * np.pi * freq * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))


def _make_dir(tmp_path, channels):
    """Two 0.6 s utterances at 16 kHz: vocals = 900 Hz harmonics, accompaniment = 110 Hz harmonics."""
    sr, n = 16000, 9600
    wav, voc, acc = {}, {}, {}
    for i in range(2):
        v = 0.2 * np.stack([_tone(900 + 50 * i, n, sr, i), 0.8 * _tone(900 + 50 * i, n, sr, i)])[:channels]
        a = 0.2 * np.stack([_tone(110, n, sr, 10 + i), _tone(110, n, sr, 20 + i)])[:channels]
        for name, x, table in (("vocals", v, voc), ("accompaniment", a, acc), ("mix", v + a, wav)):
            path = tmp_path / "audio" / f"{name}{i}.wav"
            write_audio(path, x.astype(np.float32), sr, subtype="FLOAT")
            table[f"utt{i}"] = str(path)
    DataDir.create(tmp_path / "data" / "tiny", wav, {"vocals": voc, "accompaniment": acc})
    conf = tmp_path / "feats.yaml"
    conf.write_text("sample_rate: 16000\nn_fft: 512\nhop_length: 128\nn_mels: 40\nuse_delta: true\n")
    return tmp_path / "data" / "tiny", conf


@pytest.fixture
def stereo_dir(tmp_path):
    return _make_dir(tmp_path, 2)


@pytest.fixture
def mono_dir(tmp_path):
    return _make_dir(tmp_path, 1)


# ------------------------------------------------------------------------------------------- oracle bin

def test_oracle_rows(mono_dir, tmp_path):
    from sepkit.bin import oracle

    data, conf = mono_dir
    exp = tmp_path / "exp" / "oracle_feats"
    assert oracle.main(["--feat-conf", str(conf), "--v4", "true", str(data), str(exp)]) == 0
    res = {h: json.loads((exp / f"score_tiny_{h}" / "result.json").read_text()) for h in ("ibm", "wlm", "mix")}
    for r in res.values():  # the schema of sepkit.bin.score, so show_results can list the rows
        assert {"vocals", "accompaniment", "n_files", "seconds"} <= set(r)
        assert set(r["vocals"]) == {"si_sdri", "gnsdr", "gsir", "gsar"}
        assert r["n_files"] == 2 and r["seconds"] == pytest.approx(1.2)
    assert res["mix"]["vocals"]["si_sdri"] == pytest.approx(0, abs=1e-6)
    assert res["mix"]["accompaniment"]["gnsdr"] == pytest.approx(0, abs=1e-6)
    for head in ("ibm", "wlm"):  # well separated in frequency: oracle masks recover the sources
        for src in ("vocals", "accompaniment"):
            assert res[head][src]["si_sdri"] > 10, (head, src, res[head][src])
            assert res[head][src]["gnsdr"] > 10
    rows = list(csv.DictReader((exp / "score_tiny_ibm" / "per_utt.csv").open()))
    assert [r["utt"] for r in rows] == ["utt0", "utt1"]
    v4 = json.loads((exp / "score_tiny_wlm" / "result_v4.json").read_text())
    assert v4["n_tracks"] == 2 and set(v4["vocals"]) == {"sdr", "isr", "sir", "sar"}
    assert v4["vocals"]["sdr"] > 10
    mix_v4 = json.loads((exp / "score_tiny_mix" / "result_v4.json").read_text())
    assert mix_v4["vocals"]["sdr"] < v4["vocals"]["sdr"] - 10

    from sepkit.bin import show_results

    lines = show_results.table(show_results.collect([str(tmp_path / "exp")]))
    assert any(line.startswith("| oracle_feats | tiny | ibm |") for line in lines)


def test_oracle_estimates_mix_is_sum_of_heads(stereo_dir):
    """The estimates of both sources add up to the mixture for the Wiener-like mask (masks sum to one)."""
    from sepkit.audio import read_audio
    from sepkit.bin.oracle import oracle_estimates
    from sepkit.frontend import FeatureConfig, Frontend

    data, _ = stereo_dir
    d = DataDir(data)
    mix, sr = read_audio(d.wav["utt0"])
    refs = np.stack([read_audio(d.source(s)["utt0"])[0] for s in d.sources]).astype(np.float64)
    est = oracle_estimates(mix.astype(np.float64), refs, sr, Frontend(FeatureConfig(n_mels=40)), ["wlm", "ibm"])
    assert est["wlm"].shape == (2, 2, mix.shape[1])
    np.testing.assert_allclose(est["wlm"].sum(0), mix, atol=2e-3)
    np.testing.assert_allclose(est["ibm"].sum(0), mix, atol=2e-3)


def test_oracle_errors_and_skip(mono_dir, tmp_path, capsys):
    from sepkit.bin import oracle

    data, conf = mono_dir
    exp = tmp_path / "exp" / "o"
    assert oracle.main(["--feat-conf", str(conf), "--masks", "ibm,nope", str(data), str(exp)]) == 2
    assert "unknown --masks nope" in capsys.readouterr().err
    assert oracle.main(["--feat-conf", str(conf), str(tmp_path / "missing"), str(exp)]) == 1
    assert "missing: not a directory" in capsys.readouterr().err
    assert oracle.main(["--feat-conf", str(conf), "--masks", "mix", "--bss", "false", str(data), str(exp)]) == 0
    first = (exp / "score_tiny_mix" / "result.json").stat().st_mtime_ns
    assert oracle.main(["--feat-conf", str(conf), "--masks", "mix", str(data), str(exp)]) == 0  # already done
    assert (exp / "score_tiny_mix" / "result.json").stat().st_mtime_ns == first
    assert json.loads((exp / "score_tiny_mix" / "result.json").read_text())["vocals"]["gnsdr"] is None  # --bss false
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_mel: 40\n")
    with pytest.raises(SystemExit, match="unknown feature setting"):
        oracle.main(["--feat-conf", str(bad), str(data), str(exp)])


# ------------------------------------------------------------------------------------------- score_v4 bin

def test_score_v4_bin(stereo_dir, tmp_path, capsys):
    from sepkit.audio import read_audio
    from sepkit.bin import score_v4

    data, _ = stereo_dir
    d = DataDir(data)
    sep = tmp_path / "exp" / "sys" / "separate_tiny_mi"
    for src in d.sources:
        table = {}
        for utt in d.utts:
            x, sr = read_audio(d.source(src)[utt])
            path = sep / "wav" / src / f"{utt}.wav"
            write_audio(path, 0.5 * x, sr, subtype="FLOAT")
            table[utt] = str(path)
        write_scp(sep / f"{src}.scp", table)
    out = tmp_path / "exp" / "sys" / "score_tiny_mi"
    assert score_v4.main(["--nj", "2", str(data), str(sep), str(out)]) == 0
    res = json.loads((out / "result_v4.json").read_text())
    assert res["vocals"]["sdr"] == pytest.approx(20 * np.log10(2), abs=1e-3)  # gain error only (images)
    assert res["accompaniment"]["isr"] == pytest.approx(20 * np.log10(2), abs=1e-3)
    assert res["n_tracks"] == 2 and "median" in res["metric"]
    rows = list(csv.DictReader((out / "per_track_v4.csv").open()))
    assert [r["utt"] for r in rows] == ["utt0", "utt1"] and rows[0]["frames"] == "1"
    assert score_v4.main([str(data), str(sep), str(out)]) == 1  # exists without --overwrite
    assert "exists" in capsys.readouterr().err
    assert score_v4.main(["--show", "--out", str(tmp_path / "v4.md"), str(tmp_path / "exp")]) == 0
    assert "| sys | tiny | mi | 6.02 |" in capsys.readouterr().out
    # a mono estimate of a stereo reference is refused (one line naming the file), unless --mono
    write_audio(sep / "wav" / "vocals" / "utt0.wav", np.zeros((1, 9600), np.float32) + 0.1, 16000)
    assert score_v4.main(["--overwrite", str(data), str(sep), str(out)]) == 1
    assert "utt0.wav has 1 channel(s), the reference 2" in capsys.readouterr().err
    assert score_v4.main(["--overwrite", "--mono", "true", str(data), str(sep), str(out)]) == 0

