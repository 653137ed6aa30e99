"""Synthetic corpora: layouts, rates, channel conventions, exact mixtures, determinism, refusal,
and musical properties of the vocals (rests, pitched harmonic content)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepkit.bin import make_synthetic_corpus as cli
from sepkit.data import synth_layouts
from sepkit.data.synth import STEMS, draw_singer, make_song
from sepkit.data.synth_layouts import SynthError, make_corpus


def _files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())


def _check_wav(path, sr, channels, seconds=None):
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (sr, channels, "PCM_16", "WAV"), path
    if seconds is not None:
        assert info.frames == int(round(seconds * sr)), path
    return info


def test_dsd100_layout_and_exact_mixture(tmp_path):
    root = tmp_path / "DSD100"
    summary = make_corpus("dsd100", root, num_songs=2, num_test_songs=1, duration=3.0, progress=False)
    assert summary["num_songs"] == 3 and summary["num_files"] == 15 and len(_files(root)) == 15
    for split, count in (("Dev", 2), ("Test", 1)):
        songs = sorted(p.name for p in (root / "Mixtures" / split).iterdir())
        assert len(songs) == count
        assert songs == sorted(p.name for p in (root / "Sources" / split).iterdir())
        for song in songs:
            assert re.fullmatch(r"\d{3} - [A-Za-z]+( [A-Za-z]+)* - [A-Za-z]+( [A-Za-z0-9]+)*", song), song
            mix_path = root / "Mixtures" / split / song / "mixture.wav"
            _check_wav(mix_path, 44100, 2, 3.0)
            mix, _ = sf.read(mix_path, dtype="float32", always_2d=True)
            total = np.zeros_like(mix)
            for stem in ("bass", "drums", "other", "vocals"):
                path = root / "Sources" / split / song / f"{stem}.wav"
                _check_wav(path, 44100, 2, 3.0)
                wav, _ = sf.read(path, dtype="float32", always_2d=True)
                assert np.abs(wav).max() > 1e-3, f"{path} is silent"
                total += wav
            assert np.abs(mix - total).max() <= 4 / 32768
            assert np.abs(mix).max() < 0.95  # scaled to avoid clipping
    numbers = sorted(int(s["name"][:3]) for s in summary["songs"])
    assert numbers == [1, 2, 3]


def test_musdb18hq_layout(tmp_path):
    root = tmp_path / "musdb"
    make_corpus("musdb18hq", root, num_songs=1, num_test_songs=1, duration=2.5, progress=False)
    for split in ("train", "test"):
        (track,) = list((root / split).iterdir())
        assert " - " in track.name
        assert sorted(p.name for p in track.iterdir()) == sorted(f"{s}.wav" for s in ("mixture",) + STEMS)
        mix, _ = sf.read(track / "mixture.wav", dtype="float32")
        total = sum(sf.read(track / f"{s}.wav", dtype="float32")[0] for s in STEMS)
        _check_wav(track / "mixture.wav", 44100, 2, 2.5)
        assert np.abs(mix - total).max() <= 4 / 32768


def _assert_voice_right(path, rests, sr):
    """Right channel (voice) is digital silence in every rest and carries sound elsewhere; the
    left channel (accompaniment) keeps playing through the rests."""
    wav, file_sr = sf.read(path, dtype="float32", always_2d=True)
    assert file_sr == sr
    left, right = wav[:, 0], wav[:, 1]
    active = np.ones(len(right), dtype=bool)
    for a, b in rests:
        seg = slice(int(np.ceil((a + 0.001) * sr)), int((b - 0.001) * sr))
        active[seg] = False
        assert np.all(right[seg] == 0), f"{path}: voice not silent in rest {a}-{b}"
    assert np.sqrt(np.mean(right[active] ** 2)) > 1e-3
    if (~active).sum() > 0.1 * sr:
        assert np.sqrt(np.mean(left[~active] ** 2)) > 1e-3


def test_ikala_layout_and_channels(tmp_path):
    root = tmp_path / "iKala"
    summary = make_corpus("ikala", root, num_songs=2, duration=4.0, progress=False)
    names = _files(root)
    assert len(names) == 2
    for song, name in zip(summary["songs"], (f"Wavfile/{s['name']}.wav" for s in summary["songs"])):
        assert name in names and re.fullmatch(r"Wavfile/\d{5}_(verse|chorus)\.wav", name)
        _check_wav(root / name, 44100, 2, 4.0)
        assert song["vocal_rests"], "every clip has a rest"
        _assert_voice_right(root / name, song["vocal_rests"], 44100)
    # The channels are exactly the generator's stems: left = music, right = vocals.
    stems, _ = synth_layouts._song(0, "ikala", 0, 1, 4.0, 44100, 1)
    wav, _ = sf.read(root / summary["songs"][1]["files"][0], dtype="int16", always_2d=True)
    music = stems["bass"] + stems["drums"] + stems["other"]
    assert np.array_equal(wav[:, 0], synth_layouts._pcm16(music)[0])
    assert np.array_equal(wav[:, 1], synth_layouts._pcm16(stems["vocals"])[0])
    # Clip names and audio do not depend on how many clips are asked for.
    fewer = make_corpus("ikala", tmp_path / "fewer", num_songs=1, duration=4.0, progress=False)
    assert fewer["songs"][0]["name"] == summary["songs"][0]["name"]
    first = summary["songs"][0]["files"][0]
    assert (tmp_path / "fewer" / first).read_bytes() == (root / first).read_bytes()


def test_mir1k_layout_singers_and_channels(tmp_path):
    root = tmp_path / "MIR-1K"
    summary = make_corpus("mir1k", root, num_songs=2, num_test_songs=2, progress=False)
    names = [Path(f).name for f in _files(root)]
    assert all(f.startswith("Wavfile/") for f in _files(root)) and len(names) == 4
    singers = set()
    for song in summary["songs"]:
        match = re.fullmatch(r"(?P<singer>[a-z0-9]+)_(?P<song>\d+)_(?P<n>\d{2})", song["name"])
        assert match and f"{song['name']}.wav" in names
        singers.add(match["singer"])
        info = _check_wav(root / "Wavfile" / f"{song['name']}.wav", 16000, 2)
        assert 4.0 <= info.duration <= 12.0
        assert song["split"] == ("train" if match["singer"] in ("abjones", "amy") else "test")
        _assert_voice_right(root / "Wavfile" / f"{song['name']}.wav", song["vocal_rests"], 16000)
    assert {"abjones", "amy"} <= singers and len(singers - {"abjones", "amy"}) >= 2


@pytest.mark.parametrize("channels", [None, 2])
def test_folder_layout(tmp_path, channels):
    root = tmp_path / "songs"
    make_corpus("folder", root, num_songs=2, duration=2.0, channels=channels, progress=False)
    assert _files(root) == [f"song_00{i}/{f}" for i in (1, 2) for f in ("mix.wav", "source-01.wav", "source-02.wav")]
    for song in ("song_001", "song_002"):
        names = ("mix.wav", "source-01.wav", "source-02.wav")
        wavs = {f: sf.read(root / song / f, dtype="float32", always_2d=True)[0] for f in names}
        for f in wavs:
            _check_wav(root / song / f, 22050, channels or 1, 2.0)
        assert np.abs(wavs["mix.wav"] - wavs["source-01.wav"] - wavs["source-02.wav"]).max() <= 2 / 32768


def test_same_seed_same_bytes_other_seed_other_music(tmp_path):
    kw = dict(num_songs=2, duration=2.5, sample_rate=16000, progress=False)
    a = make_corpus("folder", tmp_path / "a", seed=3, **kw)
    b = make_corpus("folder", tmp_path / "b", seed=3, **kw)
    c = make_corpus("folder", tmp_path / "c", seed=4, **kw)
    for f in _files(tmp_path / "a"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes(), f
    assert [s["tempo"] for s in a["songs"]] == [s["tempo"] for s in b["songs"]]
    assert [(s["tempo"], s["key"]) for s in a["songs"]] != [(s["tempo"], s["key"]) for s in c["songs"]]
    # Asking for more songs leaves the first ones unchanged.
    make_corpus("folder", tmp_path / "d", seed=3, num_songs=3, duration=2.5, sample_rate=16000, progress=False)
    assert (tmp_path / "d/song_001/mix.wav").read_bytes() == (tmp_path / "a/song_001/mix.wav").read_bytes()


def test_refuses_non_empty_dir_unless_overwrite(tmp_path, capsys):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "mine.txt").write_text("keep me")
    argv = ["--layout", "folder", str(root), "--num-songs", "1", "--duration", "2", "--no-progress"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(root) in err and "not empty" in err
    assert _files(root) == ["mine.txt"]
    with pytest.raises(SynthError):
        make_corpus("folder", root, num_songs=1, duration=2.0, progress=False)
    assert cli.main(argv + ["--overwrite"]) == 0
    assert (root / "mine.txt").read_text() == "keep me"
    assert "song_001/mix.wav" in _files(root)
    # An empty existing dir is fine without --overwrite.
    (tmp_path / "empty").mkdir()
    assert cli.main(["--layout", "folder", str(tmp_path / "empty"), "--num-songs", "1", "--duration", "2",
                     "--no-progress"]) == 0


def test_cli_summary_and_bad_options(tmp_path, capsys):
    summary = tmp_path / "summary.json"
    assert cli.main(["--layout", "ikala", str(tmp_path / "ik"), "--num-songs", "1", "--duration", "2",
                     "--seed", "7", "--summary", str(summary), "--no-progress"]) == 0
    data = json.loads(summary.read_text())
    assert data["layout"] == "ikala" and data["seed"] == 7 and data["num_files"] == 1
    assert data["songs"][0]["files"] == [f"Wavfile/{data['songs'][0]['name']}.wav"]
    for bad in (["--layout", "ikala", "--num-test-songs", "2"], ["--layout", "dsd100", "--channels", "1"],
                ["--layout", "folder", "--duration", "0.5"], ["--layout", "folder", "--num-songs", "0"]):
        capsys.readouterr()
        assert cli.main(bad + [str(tmp_path / "bad"), "--no-progress"]) == 1, bad
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return make_song(*args, **kwargs)

    monkeypatch.setattr(synth_layouts, "make_song", broken)
    with pytest.raises(RuntimeError):
        make_corpus("folder", tmp_path / "corpus", num_songs=2, duration=2.0, sample_rate=8000, progress=False)
    assert list(tmp_path.iterdir()) == []


def _yin_f0(frame, sr, fmin=80.0, fmax=1000.0, threshold=0.2):
    """YIN's cumulative-mean-normalised difference of the autocorrelation-based difference
    function d(tau) = sum_j (x_j - x_{j+tau})^2 over 80-1000 Hz lags: (f0 Hz, periodicity
    1 - d'(tau)), tau the first dip below ``threshold`` (else the global minimum)."""
    tau_max = int(sr / fmin)
    width = len(frame) - tau_max
    windows = np.lib.stride_tricks.sliding_window_view(frame, width)[: tau_max + 1]  # (tau, width)
    d = np.sum((windows[:1] - windows) ** 2, axis=1)
    cmnd = d[1:] * np.arange(1, tau_max + 1) / (np.cumsum(d[1:]) + 1e-12)
    cmnd = np.concatenate([[1.0], cmnd])
    lo = int(sr / fmax)
    below = np.flatnonzero(cmnd[lo:] < threshold)
    tau = lo + (below[0] if len(below) else int(np.argmin(cmnd[lo:])))
    while tau + 1 <= tau_max and cmnd[tau + 1] < cmnd[tau]:
        tau += 1
    return sr / tau, 1.0 - cmnd[tau]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vocals_have_rests_and_pitched_harmonic_content(seed):
    sr = 16000
    stems, info = make_song(np.random.default_rng(seed), 8.0, sr, channels=1)
    vocals = stems["vocals"][0]
    assert set(stems) == set(STEMS) and all(v.shape == (1, 8 * sr) for v in stems.values())
    # Rests: reported intervals are digital silence, and there is at least one gap >= 0.3 s.
    assert max(b - a for a, b in info["vocal_rests"]) >= 0.3
    for a, b in info["vocal_rests"]:
        assert np.all(vocals[int(a * sr):int(b * sr)] == 0)
    silent = np.abs(vocals) == 0
    assert 0.05 < silent.mean() < 0.8
    # Pitched: most loud 40 ms frames are periodic (YIN) with an f0 in the singer's range.
    singer = info["singer"]
    f_lo, f_hi = 440 * 2 ** ((singer["low"] - 1 - 69) / 12), 440 * 2 ** ((singer["low"] + singer["span"] + 1 - 69) / 12)
    frames = vocals[: len(vocals) // 640 * 640].reshape(-1, 640)
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    loud = frames[rms > 0.3 * rms.max()]
    results = np.array([_yin_f0(f, sr) for f in loud])
    assert len(loud) >= 20
    assert np.mean(results[:, 1] > 0.5) > 0.7
    in_range = (results[:, 0] > f_lo / 1.06) & (results[:, 0] < f_hi * 1.06)
    assert np.mean(in_range[results[:, 1] > 0.5]) > 0.7
    # Harmonic: energy above 1 kHz (upper harmonics and formants), not a bare sine.
    spec = np.abs(np.fft.rfft(vocals)) ** 2
    freqs = np.fft.rfftfreq(len(vocals), 1 / sr)
    assert spec[freqs > 1000].sum() / spec.sum() > 0.01


def test_songs_vary_and_singers_keep_their_voice():
    infos = [make_song(np.random.default_rng(s), 2.0, 8000, channels=1)[1] for s in range(6)]
    assert len({round(i["tempo"], 3) for i in infos}) == 6
    assert len({i["key"] for i in infos}) >= 3
    assert len({i["singer"]["gender"] for i in infos}) == 2
    voice = draw_singer(np.random.default_rng(0), "female")
    a = make_song(np.random.default_rng(1), 2.0, 8000, channels=1, singer=voice)[1]
    assert a["singer"] == voice and voice["gender"] == "female"
