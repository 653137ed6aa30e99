"""Scoring any number of sources (issue 20): per-source rows of sepkit.bin.score and sepkit.bin.score_v4 for a
data dir of 3 sources, the mean over the sources (SiSEC) in result_v4.json, one results table per source list in
RESULTS_v4.md and RESULTS.md, oracle rows of 3 sources; a separation of other sources than the data dir's, or a
model asked for sources it does not know, refused in one line with nothing written."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sepkit.audio import write_audio
from sepkit.bin import oracle, score, score_v4, separate_data, show_results
from sepkit.data.datadir import DataDir

SR = 8000
SOURCES = ("vox", "drums", "keys")  # no vocals/accompaniment: nothing may assume those names


def _band_noise(rng, channels, n, k, count):
    """Noise in the k-th of ``count`` equal frequency bands: sources that a mask can tell apart."""
    spec = np.fft.rfft(rng.standard_normal((channels, n)), axis=1)
    f = np.arange(spec.shape[1]) / spec.shape[1]
    spec[:, (f < k / count) | (f >= (k + 1) / count)] = 0
    x = np.fft.irfft(spec, n, axis=1)
    return (0.2 * x / x.std()).astype(np.float32)


def _three_source_set(tmp_path, tag="x", sources=SOURCES, noise=(0.05, 0.2, 0.5), seconds=2.0, channels=2):
    """Noise sources in bands of their own, their sum as the mixture, estimates = references + white noise of a
    level per source."""
    rng = np.random.default_rng(len(sources))
    n = int(seconds * SR)
    wav, refs = {}, {s: {} for s in sources}
    sepdir = tmp_path / "exp" / tag / "separate_test_mi"
    for utt in ("song_a", "song_b"):
        sig = {s: _band_noise(rng, channels, n, k, len(sources)) for k, s in enumerate(sources)}
        mix = sum(sig.values())
        write_audio(tmp_path / "audio" / f"{utt}_mix.wav", mix, SR, subtype="FLOAT")
        wav[utt] = str(tmp_path / "audio" / f"{utt}_mix.wav")
        for s, level in zip(sources, noise):
            write_audio(tmp_path / "audio" / f"{utt}_{s}.wav", sig[s], SR, subtype="FLOAT")
            refs[s][utt] = str(tmp_path / "audio" / f"{utt}_{s}.wav")
            est = sig[s] + level * 0.2 * rng.standard_normal((channels, n)).astype(np.float32)
            write_audio(separate_data.wav_path(sepdir, s, utt), est, SR, subtype="FLOAT")
    data = DataDir.create(tmp_path / "data" / "test", wav, refs, overwrite=True)
    assert separate_data.main(["--finalize", str(data.path), str(sepdir)]) == 0  # writes sepdir/sources
    return data, sepdir


def test_three_sources_scored_per_source_with_their_mean(tmp_path, capsys):
    data, sepdir = _three_source_set(tmp_path)
    out = sepdir.parent / "score_test_mi"
    assert score.main([str(data.path), str(sepdir), str(out)]) == 0
    assert score_v4.main([str(data.path), str(sepdir), str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert set(result) == set(SOURCES) | {"n_files", "seconds", "order_is_best_fraction"}
    si = [result[s]["si_sdri"] for s in SOURCES]
    assert si[0] > si[1] > si[2]  # less noise, better: each row is its own source's
    header = next(csv.reader((out / "per_utt.csv").open()))
    assert [c for c in header if c.endswith("_si_sdr")] == [f"{s}_si_sdr" for s in SOURCES]
    v4 = json.loads((out / "result_v4.json").read_text())
    assert set(v4) == set(SOURCES) | {score_v4.MEAN_KEY, "n_tracks", "metric", "order_is_best_fraction"}
    assert v4["n_tracks"] == 2
    sdr = [v4[s]["sdr"] for s in SOURCES]
    assert sdr[0] > sdr[1] > sdr[2]
    for m in ("sdr", "isr", "sir", "sar"):  # SiSEC: the mean over the sources of their medians over tracks
        assert v4[score_v4.MEAN_KEY][m] == pytest.approx(np.mean([v4[s][m] for s in SOURCES]), abs=1e-3)
    per_track = list(csv.DictReader((out / "per_track_v4.csv").open()))
    assert [r["utt"] for r in per_track] == ["song_a", "song_b"]
    assert float(per_track[0]["keys_sdr"]) < float(per_track[0]["vox_sdr"])
    # a 2-source run beside it: one table per source list, in RESULTS_v4.md and RESULTS.md
    two, two_sep = _three_source_set(tmp_path / "two", sources=("vocals", "accompaniment"), noise=(0.1, 0.1))
    for cmd in (score, score_v4):
        assert cmd.main([str(two.path), str(two_sep), str(tmp_path / "exp" / "y" / "score_test_mi")]) == 0
    capsys.readouterr()
    assert score_v4.main(["--show", "--out", str(tmp_path / "R4.md"), str(tmp_path / "exp")]) == 0
    text = (tmp_path / "R4.md").read_text()
    assert "Sources: vox, drums, keys" in text and "Sources: vocals, accompaniment" in text
    header3 = next(ln for ln in text.splitlines() if "SDR vox" in ln)
    assert header3.split(" | ")[3:7] == ["SDR vox", "SIR vox", "SAR vox", "ISR vox"] and "SDR mean" in header3
    row = next(ln for ln in text.splitlines() if ln.startswith("| x | test | mi |"))
    assert len(row.split("|")) == len(header3.split("|"))
    assert f"{v4[score_v4.MEAN_KEY]['sdr']:.2f}" in row and f"{v4['keys']['sdr']:.2f}" in row
    header2 = next(ln for ln in text.splitlines() if "SDR V " in ln)
    assert "SDR M" in header2 and "mean" in header2  # 2 sources: also their mean
    assert show_results.main(["--out", str(tmp_path / "R.md"), str(tmp_path / "exp")]) == 0
    text = (tmp_path / "R.md").read_text()
    assert text.count("| exp | set | head |") == 2 and "Sources: vox, drums, keys" in text
    vox_table = text[text.index("Sources: vox, drums, keys"):]
    assert "SI-SDRi keys" in vox_table.split("\n\n\n")[0] and "SI-SDRi M" not in vox_table.split("\n\n\n")[0]


def test_a_separation_of_other_sources_is_refused(tmp_path, capsys):
    data, sepdir = _three_source_set(tmp_path)
    (sepdir / "sources").write_text("vox\ndrums\nkeys\nbass\n")  # a separation by a model of 4 sources
    (sepdir / "bass.scp").write_text((sepdir / "keys.scp").read_text())
    out = tmp_path / "score"
    for cmd, name in ((score, "score"), (score_v4, "score_v4")):
        assert cmd.main([str(data.path), str(sepdir), str(out)]) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith(f"{name}: {sepdir / 'sources'}: the estimates are of "
                                                             "vox drums keys bass"), err
        assert f"{data.path / 'sources'} lists vox drums keys" in err
    assert not out.exists()
    (sepdir / "sources").write_text("keys\nvox\ndrums\n")  # the same sources in another order: scored by name
    assert score.main([str(data.path), str(sepdir), str(out), "--bss", "false"]) == 0


def test_oracle_rows_of_three_sources(tmp_path):
    """The oracle masks and the mixture row over 3 sources: per-source rows in result.json and result_v4.json,
    with the mean over the sources; the ideal masks well above the mixture for every source."""
    data, _ = _three_source_set(tmp_path, channels=1)  # mono: BSS eval v4 of 3 sources costs a quarter
    feats = tmp_path / "feats.yaml"
    feats.write_text("sample_rate: 8000\nn_fft: 256\nhop_length: 64\nn_mels: 40\n")
    assert oracle.main(["--feat-conf", str(feats), "--masks", "ibm,mix", "--v4", "true", str(data.path),
                        str(tmp_path / "exp" / "oracle")]) == 0
    res = {h: json.loads((tmp_path / "exp" / "oracle" / f"score_test_{h}" / "result.json").read_text())
           for h in ("ibm", "mix")}
    v4 = {h: json.loads((tmp_path / "exp" / "oracle" / f"score_test_{h}" / "result_v4.json").read_text())
          for h in ("ibm", "mix")}
    for s in SOURCES:
        assert res["ibm"][s]["si_sdri"] > 3 and res["mix"][s]["si_sdri"] == pytest.approx(0, abs=1e-3)
        assert v4["ibm"][s]["sdr"] > v4["mix"][s]["sdr"] + 3
    assert v4["ibm"][score_v4.MEAN_KEY]["sdr"] == pytest.approx(np.mean([v4["ibm"][s]["sdr"] for s in SOURCES]),
                                                                abs=1e-3)


def test_a_model_asked_for_sources_it_does_not_know(tmp_path):
    """utils/separate.sh with a 2-source model on a data dir of 3 other sources: one line naming the model and
    the data dir's sources file, exit 1, and no separation dir (for one head or both)."""
    import torch

    from sepkit.frontend import CMVN, FeatureConfig
    from sepkit.model_io import make_model_dict, save_model_dict
    from sepkit.nets import ChimeraNet

    data, _ = _three_source_set(tmp_path, channels=1)
    torch.manual_seed(0)
    fc = FeatureConfig(sample_rate=SR, n_fft=256, hop_length=64, n_mels=20)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": 20, "hidden": 8, "layers": 1, "emb_dim": 4}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    model = tmp_path / "two.pt"
    save_model_dict(model, make_model_dict(net, conf, fc.to_dict(), CMVN(torch.zeros(fc.input_dim),
                                                                         torch.ones(fc.input_dim)),
                                           ["vocals", "accompaniment"], {}))
    utils = Path(__file__).resolve().parents[1] / "utils"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for head in ("mi", "both"):
        res = subprocess.run([str(utils / "separate.sh"), "--nj", "1", "--head", head, str(model), str(data.path),
                              str(tmp_path / "sepexp")], capture_output=True, text=True, env=env)
        assert res.returncode == 1
        assert res.stderr.strip().splitlines() == [
            f"separate_data: {model}: the model separates vocals accompaniment, but {data.path}/sources asks for "
            "vox drums keys"], res.stderr
        assert not (tmp_path / "sepexp").exists()
