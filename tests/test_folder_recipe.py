"""Bring your own data: sepkit.data.corpora.folder and the recipe egs/folder/chimera.

The corpora are made here, in layouts that no recipe knows (``<song>/mix.wav``,
``source-01.wav`` = vocals, ``source-02.wav`` = accompaniment; stems with globs; mixed rates and
channel counts), and described only by options or a YAML file.
"""
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sepkit.bin import prepare_data
from sepkit.data.corpora import CORPORA, CorpusError
from sepkit.data.corpora.folder import DEFAULTS, describe, parse_sources, plan, prepare
from sepkit.data.datadir import DataDir, load_audio, validate_data_dir

sys.path.insert(0, str(Path(__file__).resolve().parent / "recipes"))
from recipe_common import VENV_PYTHON, make_workspace, run_recipe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "folder" / "chimera"


def _tone(rng, sr, seconds, channels, kind):
    t = np.arange(int(round(sr * seconds))) / sr
    if kind == "vocals":  # a sung-like harmonic tone with vibrato, on and off
        f0 = rng.uniform(200, 400) * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
        gate = np.sin(2 * np.pi * 0.5 * t) > -0.3
        x = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 6)) * gate
    else:  # bass line and noise bursts
        noise = 0.3 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 2 * t) > 0)
        x = np.sin(2 * np.pi * rng.uniform(50, 90) * t) + noise
    x = 0.2 * x / np.abs(x).max()
    return np.stack([x * (0.8 + 0.2 * c) for c in range(channels)]).astype(np.float32)


def _wav(path, wav, sr):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav.T, sr, subtype="FLOAT")


def ccm_corpus(root, n=6, seconds=3.0, seed=0):
    """``<song>/mix.wav, source-01.wav (vocals), source-02.wav (accompaniment)``; rates and channels vary."""
    rng = np.random.default_rng(seed)
    formats = [(44100, 2), (22050, 1), (48000, 2)]
    for i in range(n):
        sr, ch = formats[i % len(formats)]
        v, a = _tone(rng, sr, seconds, ch, "vocals"), _tone(rng, sr, seconds, ch, "acc")
        song = Path(root) / f"Song {i + 1:02d}"
        _wav(song / "source-01.wav", v, sr)
        _wav(song / "source-02.wav", a, sr)
        _wav(song / "mix.wav", v + a, sr)
    return Path(root)


def stems_song(root, name, sr=16000, seconds=1.0, stems=("vocals", "bass", "drums", "gtr"), mixture=True, seed=0,
               lengths=None, rates=None, channels=None):
    rng = np.random.default_rng(seed)
    song, waves = Path(root) / name, {}
    for stem in stems:
        s_sr = (rates or {}).get(stem, sr)
        waves[stem] = _tone(rng, s_sr, (lengths or {}).get(stem, seconds), (channels or {}).get(stem, 1),
                            "vocals" if stem == "vocals" else "acc")
        _wav(song / f"{stem}.wav", waves[stem], s_sr)
    if mixture:  # mono sum of the stems at the song's rate (longer stems cut, shorter ones padded)
        mix = np.zeros((1, int(round(sr * seconds))), np.float32)
        for stem, w in waves.items():
            if (rates or {}).get(stem, sr) == sr:
                n = min(mix.shape[1], w.shape[1])
                mix[:, :n] += w[:1, :n]
        _wav(song / "mixture.wav", mix, sr)
    return song


# ------------------------------------------------------------------------------------ description

def test_describe_checks_every_key(tmp_path):
    d = describe(None, corpus_dir="x", sources="vocals=a.wav accompaniment=b.wav,c*.wav")
    assert d["sources"] == {"vocals": ["a.wav"], "accompaniment": ["b.wav", "c*.wav"]}
    assert d["_given"] == {"corpus_dir", "sources"} and d["mixture"] == DEFAULTS["mixture"]
    for bad, words in [({"colour": 1}, "unknown description key(s) colour"), ({"valid_fraction": 1.0}, "[0, 1)"),
                       ({"bad_songs": "ignore"}, "fatal, skip"), ({"length_policy": "cut"}, "error, trim, pad"),
                       ({"sources": {"mix": ["a.wav"]}}, "cannot be a source name"),
                       ({"sources": {"vocals": []}}, "non-empty list"), ({"mixture": "/abs/mix.wav"}, "relative"),
                       ({"seed": "x"}, "integer")]:
        with pytest.raises(CorpusError, match=re.escape(words)):
            describe(bad)
    for text in ("vocals", "vocals=a.wav vocals=b.wav", ""):
        with pytest.raises(CorpusError):
            parse_sources(text)
    conf = tmp_path / "c.yaml"
    conf.write_text("mixture: mix.wav\nsources:\n  vocals: source-01.wav\n  accompaniment: [source-02.wav]\n")
    d = describe(conf, mixture="sum")  # an option wins over the file
    assert d["mixture"] == "sum" and d["sources"] == {"vocals": ["source-01.wav"], "accompaniment": ["source-02.wav"]}
    conf.write_text("- a\n- b\n")
    with pytest.raises(CorpusError, match="expected a mapping"):
        describe(conf)


def test_globs_exact_names_exclude_and_sum(tmp_path):
    song = stems_song(tmp_path / "corpus", "First Song", stems=("vocals", "bass", "drums", "gtr"))
    (song / "notes.txt").write_text("not audio")
    _wav(song / "click.wav", np.zeros((1, 16000), np.float32), 16000)
    made = prepare(tmp_path / "corpus", tmp_path / "data", valid_fraction=0, test_fraction=0,
                   sources={"vocals": ["vocals.wav"], "accompaniment": ["*.wav"]}, exclude=["click.wav"])
    assert list(made) == ["train"]
    assert validate_data_dir(made["train"], check_audio=True) == []
    data = DataDir(made["train"])
    assert data.utts == ["First_Song"]
    spec = json.loads(data.source("accompaniment")["First_Song"])  # every wav but the mixture, vocals, click
    assert [Path(p).name for p in spec["sum"]] == ["bass.wav", "drums.wav", "gtr.wav"]
    mix, _ = load_audio(data.wav["First_Song"])
    total = load_audio(data.source("vocals")["First_Song"])[0] + load_audio(spec)[0]
    np.testing.assert_allclose(mix, total, atol=1e-6)
    # no mixture file: the mixture is the sum of the sources
    made = prepare(tmp_path / "corpus", tmp_path / "data", overwrite=True, valid_fraction=0, test_fraction=0,
                   mixture="sum",
                   sources={"vocals": ["vocals.wav"], "accompaniment": ["bass.wav", "drums.wav", "gtr.wav"]})
    data = DataDir(made["train"])
    assert len(json.loads(data.wav["First_Song"])["sum"]) == 4
    assert validate_data_dir(made["train"], check_audio=True) == []


def test_globs_take_files_in_source_order_and_example_descriptions(tmp_path):
    song = stems_song(tmp_path / "sessions", "Take 1", stems=("Lead Vox", "BV Vox", "Kick", "Bass DI", "click"),
                      mixture=False, lengths={"Kick": 0.8})
    made = prepare(tmp_path / "sessions", tmp_path / "data", config=RECIPE / "conf" / "corpus" / "multitrack.yaml",
                   valid_fraction=0, test_fraction=0)
    data = DataDir(made["train"])
    assert validate_data_dir(made["train"], check_audio=True) == []  # padded: the Kick stem is shorter
    vocals, _ = load_audio(data.source("vocals")["Take_1"])
    acc, _ = load_audio(data.source("accompaniment")["Take_1"])
    ref = {n: sf.read(str(song / f"{n}.wav"), dtype="float32")[0] for n in ("Lead Vox", "BV Vox", "Kick", "Bass DI")}
    np.testing.assert_allclose(vocals[0], ref["Lead Vox"] + ref["BV Vox"], atol=1e-6)
    np.testing.assert_allclose(acc[0, :12800], ref["Kick"] + ref["Bass DI"][:12800], atol=1e-6)  # no click
    stems_song(tmp_path / "s2", "x", stems=("vocals",))
    with pytest.raises(CorpusError, match="vocals.wav is both vocals and accompaniment"):
        prepare(tmp_path / "s2", tmp_path / "d2", test_fraction=0, valid_fraction=0,
                sources={"vocals": ["vocals.wav"], "accompaniment": ["vocals.wav"]})
    # the MUSDB18-HQ example: train/ and test/ folders
    from sepkit.data.synth_layouts import make_corpus

    make_corpus("musdb18hq", tmp_path / "mh", num_songs=3, num_test_songs=1, duration=2.0, seed=1, progress=False)
    made = prepare(tmp_path / "mh", tmp_path / "mhdata", config=RECIPE / "conf" / "corpus" / "musdb18hq.yaml")
    assert [len(DataDir(made[s]).utts) for s in ("train", "valid", "test")] == [2, 1, 1]
    assert validate_data_dir(made["test"], check_audio=True) == []


def test_bad_songs_are_listed_then_fatal_or_skipped(tmp_path, caplog):
    root = tmp_path / "corpus"
    for i in range(4):
        stems_song(root, f"s{i}", stems=("vocals", "bass", "drums", "other"), seed=i)
    (root / "s1" / "drums.wav").unlink()  # missing
    (root / "s3" / "vocals.wav").write_bytes(b"RIFF not really a wav file")  # unreadable
    with caplog.at_level(logging.ERROR), pytest.raises(CorpusError) as err:
        prepare(root, tmp_path / "data", valid_fraction=0, test_fraction=0)
    msg = str(err.value)
    assert "s1" in msg and "drums.wav missing" in msg and "1 more" in msg and "bad_songs" in msg and "\n" not in msg
    logged = caplog.text
    assert "s1: source accompaniment: drums.wav missing" in logged and "s3" in logged and "vocals.wav" in logged
    assert not (tmp_path / "data").exists()  # nothing written
    made = prepare(root, tmp_path / "data", valid_fraction=0, test_fraction=0, bad_songs="skip")
    assert DataDir(made["train"]).utts == ["s0", "s2"]
    # a set whose every song has a problem is an error, not an empty data dir
    (root / "held").mkdir()
    (root / "s1").rename(root / "held" / "s1")
    with pytest.raises(CorpusError, match="the test set is empty: all its 1 songs have problems"):
        prepare(root, tmp_path / "d2", valid_fraction=0, test_dir="held", bad_songs="skip")


def test_lengths_policy_and_conformed_rates_and_channels(tmp_path):
    root = tmp_path / "corpus"
    stems_song(root, "short", stems=("vocals", "bass"), lengths={"vocals": 0.9})
    desc = dict(valid_fraction=0, test_fraction=0, sources={"vocals": ["vocals.wav"], "accompaniment": ["bass.wav"]})
    with pytest.raises(CorpusError, match=r"files differ in length \(.*vocals.wav 14400 samples.*length_policy"):
        prepare(root, tmp_path / "data", **desc)
    for policy, n in (("trim", 14400), ("pad", 16000)):
        made = prepare(root, tmp_path / policy, length_policy=policy, **desc)
        assert validate_data_dir(made["train"], check_audio=True) == []
        data = DataDir(made["train"])
        assert data.wav["short"] == str((tmp_path / policy / "wav" / "train" / "short" / "mixture.wav").resolve())
        vocals, sr = load_audio(data.source("vocals")["short"])
        assert sr == 16000 and vocals.shape == (1, n)
        assert data.utt2dur["short"] == pytest.approx(n / 16000, abs=1e-4)
    assert np.all(vocals[:, 14400:] == 0)  # padded with silence
    # different rates and channel counts in one song: conformed to the mixture's rate, mono -> both channels
    root2 = tmp_path / "corpus2"
    stems_song(root2, "mixed", sr=22050, stems=("vocals", "bass", "drums"), mixture=False,
                      rates={"vocals": 44100}, channels={"bass": 2})
    made = prepare(root2, tmp_path / "data2", mixture="sum", valid_fraction=0, test_fraction=0,
                   sources={"vocals": ["vocals.wav"], "accompaniment": ["bass.wav", "drums.wav"]})
    assert validate_data_dir(made["train"], check_audio=True) == []
    data = DataDir(made["train"])
    mix, sr = load_audio(data.wav["mixed"])
    acc, _ = load_audio(data.source("accompaniment")["mixed"])
    assert sr == 44100 and mix.shape[0] == 2 and acc.shape == (2, mix.shape[1])
    assert np.abs(acc[0] - acc[1]).max() > 0.01  # stereo bass + mono drums in both channels
    # channel counts that cannot be summed are a problem of the song
    stems_song(root2, "bad", stems=("vocals", "bass", "drums"), channels={"bass": 2, "drums": 3})
    with pytest.raises(CorpusError, match="cannot sum files of different channel counts"):
        prepare(root2, tmp_path / "data3", valid_fraction=0, test_fraction=0,
                sources={"vocals": ["vocals.wav"], "accompaniment": ["bass.wav", "drums.wav"]})


def test_splits(tmp_path):
    root = tmp_path / "corpus"
    for i in range(10):
        (root / f"song{i}").mkdir(parents=True)
    d = describe(None, corpus_dir=root, valid_fraction=0.2, test_fraction=0.1, seed=4)
    splits = plan(d)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [7, 2, 1]
    assert sorted(p.name for s in splits.values() for p in s) == sorted(f"song{i}" for i in range(10))
    assert plan(d) == splits and plan({**d, "seed": 5}) != splits  # a function of the seed
    (root / "held").mkdir()
    for i in range(2):
        (root / "held" / f"t{i}").mkdir()
    splits = plan(describe(None, corpus_dir=root, test_dir="held", valid_fraction=0.1))
    assert [p.name for p in splits["test"]] == ["t0", "t1"] and "held" not in [p.name for p in splits["train"]]
    with pytest.raises(CorpusError, match="test_dir or test_fraction"):
        plan(describe(None, corpus_dir=root, test_dir="held", test_fraction=0.2))
    (root / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty: no song folders"):
        plan(describe(None, corpus_dir=root, valid_dir="empty"))
    with pytest.raises(CorpusError, match="cannot hold out 1 of 1 songs"):
        plan(describe(None, train_dir=root / "held" / "t0" / "..", songs="t0", valid_fraction=0.5, test_fraction=0))
    only = plan(describe(None, test_dir=root / "held"))
    assert list(only) == ["test"]
    with pytest.raises(CorpusError, match="no songs: give corpus_dir"):
        plan(describe(None))


def test_registered_for_prepare_data_dry_run_and_stale_sets(tmp_path, capsys):
    root = tmp_path / "corpus"
    for i in range(3):
        stems_song(root, f"track{i}", stems=("vocals", "bass", "drums", "other"), seed=i)
    assert "folder" in CORPORA
    assert prepare(root, tmp_path / "dry", dry_run=True, valid_fraction=0.3) == {}
    assert not (tmp_path / "dry").exists()
    out = tmp_path / "data"
    assert prepare_data.main(["--corpus", "folder", "--valid-fraction", "0.3", str(root), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "valid"]
    assert prepare_data.main(["--corpus", "folder", "--hq", str(root), str(out)]) == 2
    assert "--hq does not apply to --corpus folder" in capsys.readouterr().err
    made = prepare(root, out, overwrite=True, test_fraction=0, valid_fraction=0.3)  # no test set any more
    assert sorted(made) == ["train", "valid"] and not (out / "test").exists()


# ---------------------------------------------------------------------------------- the recipe

needs_venv = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="tools/venv not built (make venv)")
TINY = ["--nj", "2", "--tag", "tiny", "--oracle", "false",
        "--train_args", "--epochs 1 --hidden 16 --layers 1 --emb_dim 8 --batch_size 4 --segment_frames 50 "
                        "--max_steps_per_epoch 3 --num_workers 0 --tensorboard false"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder_recipe")
    corpus = ccm_corpus(base / "ccm")
    conf = base / "ccm.yaml"  # the whole description of the layout: no code
    conf.write_text(f"corpus_dir: {corpus}\nmixture: mix.wav\nsources:\n  vocals: [source-01.wav]\n"
                    "  accompaniment: [source-02.wav]\nvalid_fraction: 0.2\ntest_fraction: 0.2\n")
    rec = make_workspace(base, "folder/chimera")
    first = run_recipe(rec, "--corpus_conf", conf, *TINY)
    return rec, base, conf, first


@needs_venv
def test_end_to_end_from_a_yaml_description(recipe):
    rec, _, _, first = recipe
    assert first.returncode == 0, first.stdout[-4000:]
    for stage in (0, 2, 3, 4, 5):
        assert re.search(rf"\(run\.sh:\d+\) Stage {stage}:", first.stdout), f"no stage {stage} log line"
    sets = {name: DataDir(rec / "data" / name) for name in ("train", "valid", "test")}
    assert [len(s.utts) for s in sets.values()] == [4, 1, 1]
    assert sets["test"].utts[0].startswith("Song_")
    for data in sets.values():
        assert validate_data_dir(data.path, check_audio=True) == []
        assert data.sources == ["vocals", "accompaniment"]
    assert (rec / "exp" / "tiny" / "model.pt").is_file()
    for head in ("mi", "dc"):
        result = json.loads((rec / "exp" / "tiny" / f"score_test_{head}" / "result.json").read_text())
        assert result["n_files"] == 1 and set(result["vocals"]) == {"si_sdri", "gnsdr", "gsir", "gsar"}
    assert "| tiny | test | mi |" in (rec / "exp" / "RESULTS.md").read_text()


@needs_venv
def test_rerun_skips_and_a_changed_corpus_is_prepared_again(recipe):
    rec, base, conf, first = recipe
    assert first.returncode == 0
    again = run_recipe(rec, "--corpus_conf", conf, "--stop_stage", 2, *TINY)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "already prepared" in again.stdout and again.stdout.count("already done, skipping") == 2
    extra = ccm_corpus(base / "more", n=1, seed=9) / "Song 01"
    extra.rename(base / "ccm" / "Song 07")  # a new song: the fingerprint changes
    res = run_recipe(rec, "--corpus_conf", conf, "--stop_stage", 0)
    assert res.returncode == 0 and "already prepared" not in res.stdout
    assert sum(len(DataDir(rec / "data" / s).utts) for s in ("train", "valid", "test")) == 7


@needs_venv
def test_recipe_options_errors_and_help(recipe, tmp_path):
    rec0, _, _, _ = recipe
    rec = make_workspace(tmp_path, "folder/chimera")
    corpus = ccm_corpus(tmp_path / "songs", n=4, seconds=1.0)
    (corpus / "Song 02" / "source-02.wav").unlink()
    (corpus / "Song 04" / "mix.wav").write_bytes(b"garbage")
    opts = ["--corpus_dir", corpus, "--mixture", "mix.wav",
            "--sources", "vocals=source-01.wav accompaniment=source-02.wav", "--stop_stage", 0]
    res = run_recipe(rec, *opts)
    assert res.returncode != 0
    assert "Song 02: source accompaniment: source-02.wav missing" in res.stdout
    assert "Song 04" in res.stdout and "mix.wav: not a readable audio file" in res.stdout
    assert not (rec / "data" / "train").exists()
    res = run_recipe(rec, *opts, "--bad_songs", "skip", "--valid_fraction", 0.3, "--test_fraction", 0)
    assert res.returncode == 0, res.stdout[-3000:]
    assert DataDir(rec / "data" / "train").utts == ["Song_03"] and not (rec / "data" / "test").exists()
    res = run_recipe(rec, *opts, "--valid_dir", "nowhere", "--valid_fraction", "")
    assert res.returncode != 0 and "nowhere: not a directory" in res.stdout
    # the defaults that --help prints are the library's
    res = run_recipe(rec0, "--help")
    assert res.returncode == 0
    shown = dict(re.findall(r"^  --([a-z-]+) +# .*\[(.*)\]$", res.stdout, re.M))
    for key in ("valid_fraction", "test_fraction", "songs", "mixture", "bad_songs", "length_policy"):
        assert shown[key.replace("_", "-")] == str(DEFAULTS[key]), key
    assert shown["sources"] == " ".join(f"{k}={','.join(v)}" for k, v in DEFAULTS["sources"].items())
    assert shown["split-seed"] == str(DEFAULTS["seed"])


@needs_venv
def test_evaluate_a_trained_model_on_test_songs_only(recipe, tmp_path):
    rec0, base, _, first = recipe
    assert first.returncode == 0
    rec = make_workspace(tmp_path, "folder/chimera")
    res = run_recipe(rec, "--test_dir", base / "ccm", "--mixture", "mix.wav",
                     "--sources", "vocals=source-01.wav accompaniment=source-02.wav", "--songs", "Song 0[12]",
                     "--model_dir", rec0 / "exp" / "tiny", "--head", "mi", "--oracle", "false", "--score_bss", "false")
    assert res.returncode == 0, res.stdout[-3000:]
    assert "stages 1-3 (remix, features, training) are skipped" in res.stdout
    assert not (rec / "data" / "train").exists() and not (rec / "dump").exists()
    result = json.loads((rec / "exp" / "tiny" / "score_test_mi" / "result.json").read_text())
    assert result["n_files"] == 2
