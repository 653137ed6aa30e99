"""Corpus layouts -> data dirs (sepkit.data.corpora, sepkit.bin.prepare_data)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepkit.bin import prepare_data
from sepkit.data.corpora import CORPORA, CorpusError, utt_id
from sepkit.data.datadir import DataDir, load_audio, validate_data_dir

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SR = 8000


def _wav(path, data, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(data, dtype=np.float32).T, sr, subtype="FLOAT")


def _noise(rng, channels=2, seconds=0.5, scale=0.1):
    return (scale * rng.standard_normal((channels, int(seconds * SR)))).astype(np.float32)


def _run(argv):
    return prepare_data.main([str(a) for a in argv])


def _check(path):
    problems = validate_data_dir(path, check_audio=True)
    assert problems == []
    data = DataDir(path)
    assert data.sources == ["vocals", "accompaniment"]
    assert set(data.utt2dur) == set(data.utts)
    return data


# ---------------------------------------------------------------------------------------- DSD100

def _dsd100(root, songs={"Dev": ["001 - Artist - Song One", "002 - Band - Two"], "Test": ["003 - X - Three"]}):
    rng = np.random.default_rng(0)
    for subset, names in songs.items():
        for name in names:
            stems = {s: _noise(rng) for s in ("bass", "drums", "other", "vocals")}
            for stem, data in stems.items():
                _wav(root / "Sources" / subset / name / f"{stem}.wav", data)
            _wav(root / "Mixtures" / subset / name / "mixture.wav", sum(stems.values()))
    return root


def test_dsd100_layout(tmp_path):
    root = _dsd100(tmp_path / "DSD100")
    assert _run(["--corpus", "dsd100", root, tmp_path / "data"]) == 0
    dev, test = _check(tmp_path / "data" / "dsd100_dev"), _check(tmp_path / "data" / "dsd100_test")
    assert dev.utts == ["001_-_Artist_-_Song_One", "002_-_Band_-_Two"] and test.utts == ["003_-_X_-_Three"]
    for utt in dev.utts:
        song = root / "Sources" / "Dev" / utt.replace("_", " ")
        assert json.loads(dev.source("accompaniment")[utt]) == {
            "sum": [str((song / f"{s}.wav").resolve()) for s in ("bass", "drums", "other")]}
        mix, _ = load_audio(dev.wav[utt])
        voc, _ = load_audio(dev.source("vocals")[utt])
        acc, _ = load_audio(dev.source("accompaniment")[utt])
        assert mix.shape == (2, SR // 2)
        np.testing.assert_allclose(mix, voc + acc, atol=1e-6)
        assert dev.utt2dur[utt] == pytest.approx(0.5)


def test_dsd100_missing_file_and_empty(tmp_path, capsys):
    root = _dsd100(tmp_path / "DSD100")
    missing = root / "Sources" / "Test" / "003 - X - Three" / "vocals.wav"
    missing.unlink()
    assert _run(["--corpus", "dsd100", root, tmp_path / "data"]) == 1
    assert f"{missing}: missing" in capsys.readouterr().err
    assert not (tmp_path / "data" / "dsd100_dev").exists()  # nothing half written
    empty = tmp_path / "empty"
    for part in ("Mixtures/Dev", "Mixtures/Test", "Sources/Dev", "Sources/Test"):
        (empty / part).mkdir(parents=True)
    assert _run(["--corpus", "dsd100", empty, tmp_path / "data"]) == 1
    err = capsys.readouterr().err
    assert str(empty) in err and "Mixtures/{Dev,Test}/<song>/mixture.wav" in err
    assert _run(["--corpus", "dsd100", tmp_path / "nowhere", tmp_path / "data"]) == 1
    assert f"{tmp_path / 'nowhere' / 'Mixtures' / 'Dev'}: missing" in capsys.readouterr().err


def test_refuses_overwrite_and_foreign_options(tmp_path, capsys):
    root = _dsd100(tmp_path / "DSD100")
    out = tmp_path / "data"
    assert _run(["--corpus", "dsd100", root, out]) == 0
    before = (out / "dsd100_dev" / "wav.scp").read_text()
    assert _run(["--corpus", "dsd100", root, out]) == 1
    assert "exists" in capsys.readouterr().err
    assert _run(["--corpus", "dsd100", "--overwrite", root, out]) == 0
    assert (out / "dsd100_dev" / "wav.scp").read_text() == before
    assert _run(["--corpus", "dsd100", "--hq", root, out]) == 2
    assert "--hq does not apply to --corpus dsd100" in capsys.readouterr().err
    assert sorted(CORPORA) == ["dsd100", "folder", "ikala", "mir1k", "musdb18"]


# ---------------------------------------------------------------------------------------- iKala / MIR-1K

def test_ikala_channels(tmp_path):
    rng = np.random.default_rng(1)
    clips = {name: _noise(rng) for name in ("10161_chorus", "10161_verse", "21025_chorus")}
    for name, data in clips.items():
        _wav(tmp_path / "iKala" / "Wavfile" / f"{name}.wav", data)
    (tmp_path / "iKala" / "Wavfile" / "README.txt").write_text("not a clip")
    assert _run(["--corpus", "ikala", tmp_path / "iKala", tmp_path / "data"]) == 0
    data = _check(tmp_path / "data" / "ikala")
    assert data.utts == sorted(clips)
    for utt, clip in clips.items():
        np.testing.assert_allclose(load_audio(data.source("accompaniment")[utt])[0], clip[0:1])  # left = music
        np.testing.assert_allclose(load_audio(data.source("vocals")[utt])[0], clip[1:2])  # right = vocals
        np.testing.assert_allclose(load_audio(data.wav[utt])[0], clip[0:1] + clip[1:2], atol=1e-6)


def _mir1k(root, songs):
    rng = np.random.default_rng(2)
    for singer, song, n in songs:
        _wav(root / "Wavfile" / f"{singer}_{song}_{n:02d}.wav", _noise(rng, seconds=0.25), sr=16000)
    return root


MIR1K = ([("abjones", s, n) for s in (1, 2, 3) for n in (1, 2)] + [("amy", s, n) for s in (1, 2) for n in (1, 2, 3)]
         + [("annar", 1, 1), ("yifen", 4, 1), ("yifen", 4, 2)])


def test_mir1k_split_by_singer_and_song(tmp_path):
    root = _mir1k(tmp_path / "MIR-1K", MIR1K)
    out = tmp_path / "data"
    assert _run(["--corpus", "mir1k", "--valid-fraction", "0.4", "--seed", "3", root, out]) == 0
    train, valid, test = (_check(out / f"mir1k_{s}") for s in ("train", "valid", "test"))
    song = lambda utt: utt.rsplit("_", 1)[0]  # noqa: E731
    assert {u.split("_")[0] for u in train.utts + valid.utts} == {"abjones", "amy"}
    assert test.utts == ["annar_1_01", "yifen_4_01", "yifen_4_02"]
    assert len({song(u) for u in valid.utts}) == 2  # round(0.4 * 5 songs)
    assert not {song(u) for u in train.utts} & {song(u) for u in valid.utts}
    assert len(train.utts) + len(valid.utts) == 12
    np.testing.assert_allclose(load_audio(valid.wav[valid.utts[0]])[0],
                               sum(load_audio(valid.source(s)[valid.utts[0]])[0] for s in valid.sources), atol=1e-6)
    # the held-out songs depend on the seed only
    again = CORPORA["mir1k"](root, tmp_path / "again", valid_fraction=0.4, seed=3)
    assert DataDir(again["mir1k_valid"]).utts == valid.utts
    assert CORPORA["mir1k"](root, tmp_path / "nov", valid_fraction=0, train_singers="abjones").keys() == \
        {"mir1k_train", "mir1k_test"}


def test_mir1k_missing_singer(tmp_path):
    root = _mir1k(tmp_path / "MIR-1K", [("abjones", 1, 1), ("annar", 1, 1)])
    with pytest.raises(CorpusError, match="training singer.*amy"):
        CORPORA["mir1k"](root, tmp_path / "data")


@pytest.mark.skipif(not (SHARED / "MIR-1K" / "Wavfile").is_dir(), reason="../shared/data/MIR-1K not present")
def test_mir1k_real(tmp_path):
    made = CORPORA["mir1k"](SHARED / "MIR-1K", tmp_path)
    assert {DataDir(made["mir1k_test"]).utts[0].split("_")[0]} <= {"annar", "yifen"}
    assert all(validate_data_dir(p) == [] for p in made.values())


# ---------------------------------------------------------------------------------------- MUSDB18

def _musdb_hq(root, tracks):
    rng = np.random.default_rng(4)
    for split, names in tracks.items():
        for name in names:
            stems = {s: _noise(rng) for s in ("drums", "bass", "other", "vocals")}
            for stem, data in stems.items():
                _wav(root / split / name / f"{stem}.wav", data)
            _wav(root / split / name / "mixture.wav", sum(stems.values()))
    return root


def test_musdb18_hq(tmp_path, capsys):
    root = _musdb_hq(tmp_path / "hq", {"train": ["A - One", "B - Two", "C - Three"], "test": ["D - Four"]})
    listing = tmp_path / "valid.txt"
    listing.write_text("B - Two\n")
    out = tmp_path / "data"
    assert _run(["--corpus", "musdb18", "--hq", "--valid-tracks", f"@{listing}", "--valid-tracks", "C_-_Three",
                 "--mixture", "sum", root, out]) == 0
    train, valid, test = (_check(out / f"musdb18_{s}") for s in ("train", "valid", "test"))
    assert (train.utts, valid.utts, test.utts) == (["A_-_One"], ["B_-_Two", "C_-_Three"], ["D_-_Four"])
    assert not (out / "musdb18_wav").exists()  # HQ wavs are used in place
    mix = load_audio(test.wav["D_-_Four"])[0]
    np.testing.assert_allclose(mix, load_audio(test.source("vocals")["D_-_Four"])[0]
                               + load_audio(test.source("accompaniment")["D_-_Four"])[0], atol=1e-6)
    assert _run(["--corpus", "musdb18", "--hq", "--valid-tracks", "Nope", root, tmp_path / "x"]) == 1
    assert "validation track 'Nope' not found" in capsys.readouterr().err
    (root / "test" / "D - Four" / "bass.wav").unlink()
    assert _run(["--corpus", "musdb18", "--hq", root, tmp_path / "y"]) == 1
    assert f"{root / 'test' / 'D - Four' / 'bass.wav'}: missing" in capsys.readouterr().err


def test_musdb18_bad_stem_file(tmp_path, capsys):
    bad = tmp_path / "musdb" / "train" / "Bad - Track.stem.mp4"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not an mp4 file at all")
    assert _run(["--corpus", "musdb18", "--valid-fraction", "0", tmp_path / "musdb", tmp_path / "data"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # the lines before are tqdm's
    assert last.startswith(f"prepare_data: {bad}: cannot decode") and last.count(str(bad)) == 1


@pytest.mark.skipif(not (SHARED / "musdb18-7s" / "train").is_dir(), reason="../shared/data/musdb18-7s not present")
def test_musdb18_stem_real(tmp_path):
    files = sorted((SHARED / "musdb18-7s" / "train").glob("*.stem.mp4"))[:2]
    if len(files) < 2:
        pytest.skip("fewer than 2 .stem.mp4 files in ../shared/data/musdb18-7s/train")
    root = tmp_path / "musdb"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for f in files:
        (root / "train" / f.name).symlink_to(f)
    (root / "test" / files[0].name).symlink_to(files[0])
    out = tmp_path / "data"
    made = CORPORA["musdb18"](root, out, valid_fraction=0.5, seed=0)
    assert set(made) == {"musdb18_train", "musdb18_valid", "musdb18_test"}
    names = [f.name[:-len(".stem.mp4")] for f in files]
    train, valid = DataDir(made["musdb18_train"]), DataDir(made["musdb18_valid"])
    assert sorted(train.utts + valid.utts) == sorted(utt_id(n) for n in names)
    for data in (train, valid, DataDir(made["musdb18_test"])):
        assert validate_data_dir(data.path, check_audio=True) == []
    folder = out / "musdb18_wav" / "train" / names[0]
    infos = [sf.info(str(folder / f"{s}.wav")) for s in ("mixture", "drums", "bass", "other", "vocals")]
    assert {(i.samplerate, i.channels, i.frames) for i in infos} == {(44100, 2, infos[0].frames)}
    assert 6.0 < infos[0].frames / 44100 < 7.5
    # streams decoded in the right order: the mixture is close to the sum of the four stems (AAC noise only)
    mix = sf.read(str(folder / "mixture.wav"))[0]
    stems = sum(sf.read(str(folder / f"{s}.wav"))[0] for s in ("drums", "bass", "other", "vocals"))
    assert 10 * np.log10(np.sum(mix ** 2) / np.sum((mix - stems) ** 2)) > 15
    # decoded tracks are reused, not decoded again
    stamp = (folder / "vocals.wav").stat().st_mtime_ns
    shutil.rmtree(made["musdb18_test"])
    CORPORA["musdb18"](root, out, valid_fraction=0.5, seed=0, overwrite=True)
    assert (folder / "vocals.wav").stat().st_mtime_ns == stamp
