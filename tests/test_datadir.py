"""Tests of sepkit.data.datadir: scp I/O, audio specs, DataDir, validate_data_dir."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepkit.audio import AudioError, read_audio, write_audio
from sepkit.bin import validate_data_dir as validate_bin
from sepkit.data.datadir import (DataDir, DataDirError, load_audio, read_scp, spec_files,
                                 validate_data_dir, write_scp)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SR = 8000


def _wav(path, n=800, channels=1, sr=SR, seed=0):
    wav = np.random.default_rng(seed).uniform(-0.3, 0.3, (channels, n)).astype(np.float32)
    write_audio(path, wav, sr, subtype="FLOAT")
    return wav


def _make_dir(tmp_path, utts=("b_utt", "a_utt", "c utt".replace(" ", "_"))):
    """Synthetic data dir with mixture = vocals + accompaniment; returns (DataDir, arrays)."""
    wav, voc, acc, arrays = {}, {}, {}, {}
    for i, utt in enumerate(utts):
        v = _wav(tmp_path / "audio" / f"{utt} vocals.wav", n=800 + 80 * i, seed=2 * i)
        a = _wav(tmp_path / "audio" / f"{utt}_acc.wav", n=800 + 80 * i, seed=2 * i + 1)
        write_audio(tmp_path / "audio" / f"{utt}_mix.wav", v + a, SR, subtype="FLOAT")
        wav[utt] = str(tmp_path / "audio" / f"{utt}_mix.wav")
        voc[utt] = str(tmp_path / "audio" / f"{utt} vocals.wav")  # a path with a space
        acc[utt] = str(tmp_path / "audio" / f"{utt}_acc.wav")
        arrays[utt] = (v, a)
    data = DataDir.create(tmp_path / "data" / "train", wav, {"vocals": voc, "accompaniment": acc})
    return data, arrays


# ------------------------------------------------------------------------------------ scp files

def test_read_scp_keeps_order_and_spaces(tmp_path):
    p = tmp_path / "x.scp"
    p.write_text("u2 /a b/c.wav\nu1   {\"path\": \"/x y.wav\", \"channel\": 1}  \n")
    out = read_scp(p)
    assert list(out) == ["u2", "u1"]
    assert out["u2"] == "/a b/c.wav"
    assert json.loads(out["u1"]) == {"path": "/x y.wav", "channel": 1}


@pytest.mark.parametrize("text,line,what", [
    ("u1 a\nu1 b\n", 2, "duplicate"),
    ("u1 a\nu2\n", 2, "malformed"),
    ("u1 a\n\nu2 b\n", 2, "empty line"),
])
def test_read_scp_errors_name_file_and_line(tmp_path, text, line, what):
    p = tmp_path / "bad.scp"
    p.write_text(text)
    with pytest.raises(DataDirError, match=f"bad.scp:{line}: {what}"):
        read_scp(p)


def test_read_scp_missing_file(tmp_path):
    with pytest.raises(DataDirError, match="nope.scp: no such file"):
        read_scp(tmp_path / "nope.scp")


def test_write_scp_sorted_c_order_and_atomic(tmp_path):
    p = tmp_path / "sub" / "out.scp"
    write_scp(p, {"b": "2", "a": "x y", "B": 3.5, "a-b": "4", "a_b": "5"})
    keys = [ln.split()[0] for ln in p.read_text().splitlines()]
    assert keys == ["B", "a", "a-b", "a_b", "b"]  # byte order: 'B' < 'a', '-' < '_'
    assert read_scp(p)["a"] == "x y"
    assert sorted(x.name for x in p.parent.iterdir()) == ["out.scp"]  # no temp file left
    with pytest.raises(DataDirError, match="invalid key"):
        write_scp(tmp_path / "bad.scp", {"a b": "x"})
    with pytest.raises(DataDirError, match="invalid value"):
        write_scp(tmp_path / "bad.scp", {"a": "x\ny"})
    assert not (tmp_path / "bad.scp").exists()


# ------------------------------------------------------------------------------------ audio specs

def test_load_audio_plain_and_channel_specs(tmp_path):
    stereo = _wav(tmp_path / "st.wav", n=500, channels=2)
    wav, sr = load_audio(str(tmp_path / "st.wav"))
    assert sr == SR and wav.shape == (2, 500) and wav.dtype == np.float32
    np.testing.assert_allclose(wav, stereo, atol=1e-7)
    one, _ = load_audio(json.dumps({"path": str(tmp_path / "st.wav"), "channel": 1}))
    assert one.shape == (1, 500)
    np.testing.assert_allclose(one[0], stereo[1], atol=1e-7)
    both, _ = load_audio({"path": str(tmp_path / "st.wav"), "channel": "sum"})
    np.testing.assert_allclose(both[0], stereo[0] + stereo[1], atol=1e-6)
    with pytest.raises(AudioError, match="st.wav: channel 2 requested but the file has 2"):
        load_audio({"path": str(tmp_path / "st.wav"), "channel": 2})


def test_load_audio_sum_and_resample(tmp_path):
    a = _wav(tmp_path / "a.wav", n=1000, seed=1)
    b = _wav(tmp_path / "b.wav", n=1000, seed=2)
    spec = json.dumps({"sum": [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]})
    wav, sr = load_audio(spec)
    np.testing.assert_allclose(wav, a + b, atol=1e-6)
    assert spec_files(spec) == [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]
    wav16, sr16 = load_audio(spec, sample_rate=16000)
    assert sr16 == 16000 and wav16.shape == (1, 2000)


def test_load_audio_sum_trims_small_length_differences(tmp_path):
    a = _wav(tmp_path / "a.wav", n=1000, seed=1)
    b = _wav(tmp_path / "b.wav", n=995, seed=2)  # 0.5% shorter
    wav, _ = load_audio({"sum": [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]})
    assert wav.shape == (1, 995)
    np.testing.assert_allclose(wav, a[:, :995] + b, atol=1e-6)


@pytest.mark.parametrize("kw_b,what", [
    (dict(n=900), "lengths differ"),
    (dict(sr=16000), "sample rates differ"),
    (dict(channels=2), "channel counts differ"),
])
def test_load_audio_sum_mismatch_names_files(tmp_path, kw_b, what):
    _wav(tmp_path / "bass.wav", n=1000)
    _wav(tmp_path / "drums.wav", **{"n": 1000, **kw_b})
    spec = {"sum": [str(tmp_path / "bass.wav"), str(tmp_path / "drums.wav")]}
    with pytest.raises(AudioError, match=what) as err:
        load_audio(spec)
    assert "bass.wav" in str(err.value) and "drums.wav" in str(err.value)


@pytest.mark.parametrize("spec,what", [
    ('{"path": "/x.wav", "chan": 1}', "unknown keys"),
    ('{"path": "/x.wav", "channel": -1}', "channel"),
    ('{"sum": []}', "non-empty list"),
    ('{"path": ', "invalid JSON"),
    ("/definitely/not/here.wav", "no such file"),
])
def test_load_audio_bad_specs(spec, what):
    with pytest.raises(AudioError, match=what):
        load_audio(spec)


# ------------------------------------------------------------------------------------ DataDir

def test_create_and_read_back(tmp_path):
    data, arrays = _make_dir(tmp_path)
    assert data.sources == ["vocals", "accompaniment"]
    assert data.utts == ["a_utt", "b_utt", "c_utt"]
    assert (data.path / "sources").read_text() == "vocals\naccompaniment\n"
    again = DataDir(data.path)
    assert again.utts == data.utts and again.wav == data.wav
    assert again.utt2dur["b_utt"] == pytest.approx(800 / SR)
    assert again.utt2dur["c_utt"] == pytest.approx(960 / SR)
    voc, _ = load_audio(again.source("vocals")["a_utt"])
    np.testing.assert_allclose(voc, arrays["a_utt"][0], atol=1e-7)
    mix, _ = load_audio(again.wav["a_utt"])
    acc, _ = load_audio(again.source("accompaniment")["a_utt"])
    np.testing.assert_allclose(mix, voc + acc, atol=1e-6)  # the mixture is the sum of the sources
    with pytest.raises(DataDirError, match="no source 'bass'"):
        again.source("bass")
    assert validate_data_dir(data.path) == []
    assert validate_data_dir(data.path, check_audio=True) == []


def test_create_refuses_nonempty_and_overwrites(tmp_path):
    data, _ = _make_dir(tmp_path)
    with pytest.raises(DataDirError, match="not empty"):
        DataDir.create(data.path, data.wav, {"vocals": data.source("vocals")})
    new = DataDir.create(data.path, data.wav, {"vocals": data.source("vocals")}, utt2dur=data.utt2dur,
                         overwrite=True)
    assert new.sources == ["vocals"]
    assert not (data.path / "accompaniment.scp").exists()  # the dropped source's scp is gone
    assert validate_data_dir(new.path) == []


def test_create_checks_everything_before_writing(tmp_path):
    out = tmp_path / "d"
    with pytest.raises(DataDirError, match="accompaniment.scp: 1 utterance"):
        DataDir.create(out, {"u1": "/a.wav", "u2": "/b.wav"}, {"vocals": {"u1": "/v", "u2": "/w"},
                                                              "accompaniment": {"u1": "/x"}},
                       utt2dur={"u1": 1.0, "u2": 1.0})
    with pytest.raises(DataDirError, match="reserved"):
        DataDir.create(out, {"u1": "/a.wav"}, {"wav": {"u1": "/v"}}, utt2dur={"u1": 1.0})
    with pytest.raises(DataDirError, match="u1.*no such file"):
        DataDir.create(out, {"u1": str(tmp_path / "missing.wav")}, {"vocals": {"u1": "/v"}})
    assert not out.exists()


# ------------------------------------------------------------------------------------ validation

def _problems(path, **kw):
    problems = validate_data_dir(path, **kw)
    return problems, "\n".join(problems)


def test_validate_unsorted(tmp_path):
    data, _ = _make_dir(tmp_path)
    lines = (data.path / "vocals.scp").read_text().splitlines()
    (data.path / "vocals.scp").write_text("\n".join(lines[::-1]) + "\n")
    problems, text = _problems(data.path)
    assert len(problems) == 1 and "vocals.scp: not sorted" in text


def test_validate_missing_source_scp_and_sources(tmp_path):
    data, _ = _make_dir(tmp_path)
    (data.path / "accompaniment.scp").unlink()
    _, text = _problems(data.path)
    assert "accompaniment.scp: missing" in text
    (data.path / "sources").unlink()
    _, text = _problems(data.path)
    assert "sources: no such file" in text


def test_validate_mismatched_utts(tmp_path):
    data, _ = _make_dir(tmp_path)
    lines = (data.path / "utt2dur").read_text().splitlines()
    (data.path / "utt2dur").write_text("\n".join(lines[:-1]) + "\n")
    _, text = _problems(data.path)
    assert "utt2dur: 1 utterance(s) of wav.scp missing (e.g. c_utt)" in text


def test_validate_missing_file_and_bad_spec(tmp_path):
    data, _ = _make_dir(tmp_path)
    Path(data.source("vocals")["b_utt"]).unlink()
    _, text = _problems(data.path)
    assert "vocals.scp: utterance b_utt: audio file not found" in text
    (data.path / "wav.scp").write_text('a_utt {"path": "/x.wav", "chanel": 0}\n')
    _, text = _problems(data.path)
    assert "wav.scp: utterance a_utt" in text and "unknown keys" in text


def test_validate_check_audio_finds_length_mismatch(tmp_path):
    data, _ = _make_dir(tmp_path)
    _wav(Path(data.source("accompaniment")["a_utt"]), n=877)  # within 1%: the headers' check lets it pass
    assert validate_data_dir(data.path) == []
    _, text = _problems(data.path, check_audio=True)
    assert "accompaniment.scp: utterance a_utt: 877 samples, mixture has 880" in text  # decoded: exact
    _wav(Path(data.source("accompaniment")["a_utt"]), n=700)
    problems = validate_data_dir(data.path)  # headers only, one line naming the scp, the file and the mixture
    assert len(problems) == 1 and "\n" not in problems[0], problems
    assert re.search(r"train/accompaniment\.scp: utterance a_utt: \S+a_utt_acc\.wav has 700 samples, "
                     r"the mixture \S+a_utt_mix\.wav 880 \(at 8000 Hz", problems[0]), problems[0]
    _, text = _problems(data.path, check_audio=True)
    assert "accompaniment.scp: utterance a_utt: 700 samples, mixture has 880" in text


def test_validate_bin(tmp_path, capsys):
    data, _ = _make_dir(tmp_path)
    assert validate_bin.main([str(data.path), "--check-audio"]) == 0
    assert "OK (3 utterances" in capsys.readouterr().out
    (data.path / "wav.scp").write_text((data.path / "wav.scp").read_text() + "zz_extra /nowhere.wav\n")
    assert validate_bin.main([str(data.path)]) == 1
    err = capsys.readouterr().err
    assert "vocals.scp: 1 utterance(s) of wav.scp missing (e.g. zz_extra)" in err
    assert "problem(s) found" in err


# ------------------------------------------------------------------------------------ real data

@pytest.mark.skipif(not (SHARED_DATA / "MIR-1K" / "Wavfile").is_dir(), reason="../shared/data/MIR-1K absent")
def test_mir1k_channel_specs(tmp_path):
    clip = str(sorted((SHARED_DATA / "MIR-1K" / "Wavfile").glob("*.wav"))[0])
    stereo, sr = read_audio(clip)
    acc, _ = load_audio({"path": clip, "channel": 0})  # left = accompaniment
    voc, _ = load_audio({"path": clip, "channel": 1})  # right = singing voice
    mix, _ = load_audio({"path": clip, "channel": "sum"})
    np.testing.assert_array_equal(voc[0], stereo[1])
    np.testing.assert_allclose(mix, acc + voc, atol=1e-6)
    data = DataDir.create(tmp_path / "d", {"u": json.dumps({"path": clip, "channel": "sum"})},
                          {"vocals": {"u": json.dumps({"path": clip, "channel": 1})},
                           "accompaniment": {"u": json.dumps({"path": clip, "channel": 0})}})
    assert data.utt2dur["u"] == pytest.approx(sf.info(clip).duration, abs=1e-3)
    assert validate_data_dir(data.path, check_audio=True) == []
