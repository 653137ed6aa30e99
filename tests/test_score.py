"""sepkit.bin.score (result.json schema, length weighting, permutation), show_results, separate_data --finalize."""
import csv
import json

import numpy as np
import pytest

from sepkit.audio import write_audio
from sepkit.bin import score, separate_data, show_results
from sepkit.data.datadir import DataDir
from sepkit.metrics import bss_eval, si_sdr

SR = 8000


def _make_set(tmp_path, lengths=(1.0, 2.0), swap=(False, True), noise=0.1, seed=0):
    """A data dir of noise 'vocals' + 'accompaniment' and estimates = refs + noise (some swapped)."""
    rng = np.random.default_rng(seed)
    wav, voc, acc, est = {}, {}, {}, {}
    truth = {}
    for i, (sec, sw) in enumerate(zip(lengths, swap)):
        utt = f"song{i}"
        n = int(sec * SR)
        v = 0.3 * rng.standard_normal(n).astype(np.float32)
        a = 0.3 * rng.standard_normal((2, n)).astype(np.float32)  # stereo accompaniment -> mono by mean
        a_mono = a.mean(0)
        mix = v[None] + a_mono[None]
        for name, sig, table in (("mix", mix, wav), ("vocals", v, voc), ("accompaniment", a, acc)):
            path = tmp_path / "audio" / name / f"{utt}.wav"
            write_audio(path, sig, SR, subtype="FLOAT")
            table[utt] = str(path)
        ev = v + noise * rng.standard_normal(n).astype(np.float32)
        ea = a_mono + 2 * noise * rng.standard_normal(n).astype(np.float32)
        est[utt] = (ea, ev) if sw else (ev, ea)
        truth[utt] = (np.stack([v, a_mono]).astype(np.float64), np.stack([ev, ea]).astype(np.float64),
                      mix[0].astype(np.float64), sec)
    data = DataDir.create(tmp_path / "data" / "test", wav, {"vocals": voc, "accompaniment": acc})
    sepdir = tmp_path / "exp" / "x" / "separate_test_mi"
    scps = {"vocals": {}, "accompaniment": {}}
    for utt, (e0, e1) in est.items():
        for name, sig in (("vocals", e0), ("accompaniment", e1)):
            path = sepdir / "wav" / name / f"{utt}.wav"
            write_audio(path, sig, SR, subtype="FLOAT")
            scps[name][utt] = str(path)
    return data, sepdir, scps, truth


def test_score_schema_and_values(tmp_path):
    data, sepdir, scps, truth = _make_set(tmp_path)
    (sepdir / "vocals.scp").write_text("".join(f"{u} {p}\n" for u, p in scps["vocals"].items()))
    (sepdir / "accompaniment.scp").write_text("".join(f"{u} {p}\n" for u, p in scps["accompaniment"].items()))
    out = tmp_path / "exp" / "x" / "score_test_mi"
    assert score.main([str(data.path), str(sepdir), str(out), "--nj", "2"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert set(result) == {"vocals", "accompaniment", "n_files", "seconds", "order_is_best_fraction"}
    for s in ("vocals", "accompaniment"):
        assert set(result[s]) == {"si_sdri", "gnsdr", "gsir", "gsar"}
    assert result["n_files"] == 2
    assert result["seconds"] == pytest.approx(3.0, abs=1e-3)
    # expected: length-weighted mean of per-file improvements, estimates in the right order
    imp, nsdr, w = [], [], []
    for ref, est, mix, sec in truth.values():
        imp.append(si_sdr(est, ref) - si_sdr(np.broadcast_to(mix, ref.shape), ref))
        sdr, _, _ = bss_eval(est, ref)
        sdr_mix, _, _ = bss_eval(np.broadcast_to(mix, ref.shape), ref)
        nsdr.append(sdr - sdr_mix)
        w.append(sec)
    imp = np.average(np.array(imp), axis=0, weights=w)
    nsdr = np.average(np.array(nsdr), axis=0, weights=w)
    assert result["vocals"]["si_sdri"] == pytest.approx(imp[0], abs=1e-3)
    assert result["accompaniment"]["si_sdri"] == pytest.approx(imp[1], abs=1e-3)
    assert result["vocals"]["gnsdr"] == pytest.approx(nsdr[0], abs=1e-3)
    assert result["vocals"]["si_sdri"] > 5  # 0 dB mixture, 20 dB estimates
    rows = list(csv.DictReader((out / "per_utt.csv").open()))
    assert [r["utt"] for r in rows] == ["song0", "song1"]
    assert rows[1]["perm"] == "1 0"  # the swapped file was scored with the best permutation
    assert float(rows[0]["seconds"]) == pytest.approx(1.0)
    # refuses to overwrite without --overwrite; SI-SDR only mode gives nulls for BSS eval
    assert score.main([str(data.path), str(sepdir), str(out)]) == 1
    assert score.main([str(data.path), str(sepdir), str(out), "--overwrite", "--bss", "false"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["vocals"]["gnsdr"] is None and result["vocals"]["si_sdri"] == pytest.approx(imp[0], abs=1e-3)


def test_score_errors_name_the_file(tmp_path, capsys):
    data, sepdir, scps, _ = _make_set(tmp_path)
    (sepdir / "vocals.scp").write_text("".join(f"{u} {p}\n" for u, p in scps["vocals"].items()))
    out = tmp_path / "score"
    assert score.main([str(data.path), str(sepdir), str(out)]) == 1
    assert "accompaniment.scp: no such file" in capsys.readouterr().err
    (sepdir / "accompaniment.scp").write_text(f"song0 {scps['accompaniment']['song0']}\n")
    assert score.main([str(data.path), str(sepdir), str(out)]) == 1
    assert "song1" in capsys.readouterr().err
    (sepdir / "accompaniment.scp").write_text("song0 /nonexistent/a.wav\nsong1 /nonexistent/b.wav\n")
    assert score.main([str(data.path), str(sepdir), str(out)]) == 1
    assert "/nonexistent/a.wav" in capsys.readouterr().err
    assert not (out / "result.json").exists()


def test_finalize_and_show_results(tmp_path, capsys):
    data, sepdir, _, _ = _make_set(tmp_path)
    assert separate_data.main(["--finalize", str(data.path), str(sepdir)]) == 0
    sep = DataDir(sepdir)
    assert sep.sources == ["vocals", "accompaniment"] and sep.utts == data.utts
    assert sep.wav == data.wav and sep.source("vocals")["song1"].endswith("wav/vocals/song1.wav")
    out = sepdir.parent / "score_test_mi"
    assert score.main([str(data.path), str(sepdir), str(out), "--bss", "false"]) == 0
    capsys.readouterr()
    md = tmp_path / "RESULTS.md"
    assert show_results.main(["--out", str(md), str(tmp_path / "exp")]) == 0
    printed = capsys.readouterr().out
    row = [line for line in printed.splitlines() if line.startswith("| x ")]
    assert len(row) == 1 and "| test | mi |" in row[0]
    si = json.loads((out / "result.json").read_text())["vocals"]["si_sdri"]
    assert f"{si:.2f}" in row[0]
    assert md.read_text().startswith("# Results") and row[0] in md.read_text()
    assert show_results.split_score_dir("score_test_remix_dc") == ("test_remix", "dc")
    # a missing estimate is caught by --finalize
    (sepdir / "wav" / "vocals" / "song0.wav").unlink()
    assert separate_data.main(["--finalize", str(data.path), str(sepdir)]) == 1
    assert "song0.wav: missing" in capsys.readouterr().err


def _stereo_set(tmp_path, mono_estimates=False):
    """Stereo references (vocals left-heavy, accompaniment right-heavy) and stereo estimates whose two
    channels have different errors; the second file's estimates are swapped."""
    rng = np.random.default_rng(5)
    n = SR
    wav, voc, acc, scps, truth = {}, {}, {}, {"vocals": {}, "accompaniment": {}}, {}
    for i, swap in enumerate((False, True)):
        utt = f"song{i}"
        v = 0.3 * rng.standard_normal(n) * np.array([[1.0], [0.3]])
        a = 0.3 * rng.standard_normal((2, n)) * np.array([[0.4], [1.0]])
        ev = v + np.array([[0.02], [0.2]]) * rng.standard_normal((2, n))  # right channel much worse
        ea = a + np.array([[0.1], [0.05]]) * rng.standard_normal((2, n))
        est = (ea, ev) if swap else (ev, ea)
        for name, sig, table in (("mix", v + a, wav), ("vocals", v, voc), ("accompaniment", a, acc)):
            write_audio(tmp_path / "audio" / name / f"{utt}.wav", sig.astype(np.float32), SR, subtype="FLOAT")
            table[utt] = str(tmp_path / "audio" / name / f"{utt}.wav")
        for name, sig in zip(("vocals", "accompaniment"), est):
            path = tmp_path / "sep" / "wav" / name / f"{utt}.wav"
            write_audio(path, (sig.mean(0, keepdims=True) if mono_estimates else sig).astype(np.float32), SR,
                        subtype="FLOAT")
            scps[name][utt] = str(path)
        truth[utt] = (np.stack([v, a]), np.stack([ev, ea]), v + a)
    data = DataDir.create(tmp_path / "data", wav, {"vocals": voc, "accompaniment": acc})
    for name, table in scps.items():
        (tmp_path / "sep" / f"{name}.scp").write_text("".join(f"{u} {p}\n" for u, p in table.items()))
    return data, tmp_path / "sep", truth


def test_score_each_channel_of_stereo_references(tmp_path, capsys):
    data, sepdir, truth = _stereo_set(tmp_path)
    each, mono = tmp_path / "exp" / "x" / "score_test_mi", tmp_path / "exp" / "y" / "score_test_mi"
    assert score.main([str(data.path), str(sepdir), str(each), "--channels", "each", "--bss", "false"]) == 0
    assert score.main([str(data.path), str(sepdir), str(mono), "--bss", "false"]) == 0
    r_each, r_mono = (json.loads((d / "result.json").read_text()) for d in (each, mono))
    assert r_each["channels"] == "each" and "channels" not in r_mono  # the mono schema is unchanged
    # expected: per channel SI-SDR improvement (estimates in the right order), mean over the 2 channels
    per_file = [np.mean([si_sdr(est[:, c], ref[:, c]) - si_sdr(np.broadcast_to(mix[c], (2, SR)), ref[:, c])
                         for c in (0, 1)], axis=0) for ref, est, mix in truth.values()]
    expected = np.mean(per_file, axis=0)  # equal lengths: plain mean over files
    assert r_each["vocals"]["si_sdri"] == pytest.approx(expected[0], abs=1e-3)
    assert r_each["accompaniment"]["si_sdri"] == pytest.approx(expected[1], abs=1e-3)
    assert abs(r_each["vocals"]["si_sdri"] - r_mono["vocals"]["si_sdri"]) > 1  # a different measurement
    rows = list(csv.DictReader((each / "per_utt.csv").open()))
    assert [r["perm"] for r in rows] == ["0 1", "1 0"]
    # the results table says which rows are mono downmixes and which are not
    assert show_results.main(["--out", str(tmp_path / "R.md"), str(tmp_path / "exp")]) == 0
    printed = capsys.readouterr().out
    assert "| x | test | mi (each channel) |" in printed and "| y | test | mi |" in printed
    assert "mono downmixes" in printed and "mono downmixes" in (tmp_path / "R.md").read_text()


def test_score_each_channel_needs_the_channels_everywhere(tmp_path, capsys):
    data, sepdir, _ = _stereo_set(tmp_path, mono_estimates=True)
    out = tmp_path / "score"
    assert score.main([str(data.path), str(sepdir), str(out), "--channels", "each", "--bss", "false"]) == 1
    err = capsys.readouterr().err
    assert "utterance song0: estimate 0 has 1 channel(s), the mixture 2" in err and len(err.splitlines()) == 1
    assert not (out / "result.json").exists()
    assert score.main([str(data.path), str(sepdir), str(out), "--bss", "false"]) == 0  # mono: fine


def test_score_sh_passes_channels_through(tmp_path):
    """utils/score.sh --channels each reaches the scorer, and switching it re-scores instead of skipping."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    data, sepdir, _ = _stereo_set(tmp_path)
    exp = tmp_path / "exp"
    sep = exp / "separate_data_mi"  # where utils/separate.sh puts the separation of data dir "data"
    sep.mkdir(parents=True)
    for name in ("vocals.scp", "accompaniment.scp"):  # absolute paths to the estimates
        (sep / name).write_text((sepdir / name).read_text())
    (sep / ".done").write_text("done\n")

    def run(*opts):
        res = subprocess.run(["bash", str(repo / "utils" / "score.sh"), "--nj", "1", "--bss", "false", "--head", "mi",
                              *opts, str(data.path), str(exp)], cwd=repo, capture_output=True, text=True,
                             env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        assert res.returncode == 0, res.stderr
        return json.loads((exp / "score_data_mi" / "result.json").read_text()), res.stdout + res.stderr

    r, _ = run("--channels", "each")
    assert r["channels"] == "each"
    r, out = run()  # mono now: not "already scored"
    assert "channels" not in r and "already scored" not in out
