"""egs/musdb18/chimera: data preparation of .stem.mp4 (PyAV) and MUSDB18-HQ layouts, the held-out test split
of a corpus without test/, and all stages end to end on tiny .stem.mp4 files up to the BSS eval v4 medians;
data preparation on ../shared/data/musdb18-7s when present."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "recipes"))
from recipe_common import REPO, VENV_PYTHON, make_workspace, run_recipe  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="tools/venv not built (make venv)")

SR = 44100
TAG = "tiny"
TINY = ["--nj", "1", "--head", "mi", "--tag", TAG, "--holdout_test", "1", "--valid_fraction", "0.3",
        "--train_args", "--epochs 1 --hidden 16 --layers 1 --emb_dim 8 --batch_size 4 --segment_frames 50 "
                        "--max_steps_per_epoch 3 --tensorboard false"]
HOLDOUT = REPO / "egs" / "musdb18" / "chimera" / "local" / "holdout_test.sh"


def write_stem_mp4(path, stems, sr=SR):
    """Write a MUSDB18-style ``.stem.mp4``: AAC streams 0 mixture (sum), 1 drums, 2 bass, 3 other, 4 vocals."""
    import av

    order = [sum(stems.values())] + [stems[k] for k in ("drums", "bass", "other", "vocals")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        streams = [container.add_stream("aac", rate=sr, layout="stereo") for _ in order]
        for stream, wav in zip(streams, order):
            wav = np.ascontiguousarray(wav, dtype=np.float32)
            for start in range(0, wav.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wav[:, start:start + 1024]),
                                                   format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = sr, start
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)


def make_stem_corpus(root, names, seconds=2.5, seed=0):
    from sepkit.data.synth import make_song

    for i, name in enumerate(names):
        stems, _ = make_song(np.random.default_rng([seed, i]), seconds, SR, channels=2)
        write_stem_mp4(Path(root) / "train" / f"{name}.stem.mp4", stems)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    base = tmp_path_factory.mktemp("musdb_recipe")
    make_stem_corpus(base / "musdb", ["Alpha - One", "Beta - Two", "Gamma - Three", "Delta Band - Four"])
    rec = make_workspace(base, "musdb18/chimera")
    first = run_recipe(rec, "--musdb", base / "musdb", *TINY)
    return rec, base, first


def test_stem_mp4_preparation(recipe):
    from sepkit.data.datadir import DataDir, load_audio, validate_data_dir

    rec, _, first = recipe
    assert first.returncode == 0, first.stdout[-4000:]
    data = rec / "data"
    sets = {n: DataDir(data / n) for n in ("musdb18_train", "musdb18_valid", "musdb18_test")}
    for d in sets.values():
        assert validate_data_dir(d.path, check_audio=True) == []
        assert d.sources == ["vocals", "accompaniment"]
    assert sets["musdb18_test"].utts == ["Gamma_-_Three"]  # the last name in C order is held out
    assert len(sets["musdb18_valid"].utts) == 1 and len(sets["musdb18_train"].utts) == 2
    utt = "Gamma_-_Three"
    acc = json.loads(sets["musdb18_test"].source("accompaniment")[utt])
    assert [Path(p).name for p in acc["sum"]] == ["drums.wav", "bass.wav", "other.wav"]
    mix, sr = load_audio(sets["musdb18_test"].wav[utt])
    assert sr == SR and mix.shape[0] == 2 and abs(mix.shape[1] - 2.5 * SR) < 2048  # stereo, 44.1 kHz
    vocals = load_audio(sets["musdb18_test"].source("vocals")[utt])[0]
    parts = vocals + load_audio(sets["musdb18_test"].source("accompaniment")[utt])[0]
    err = np.sum((mix - parts) ** 2) / np.sum(mix ** 2)
    assert err < 0.05  # the official mixture is encoded on its own: equal to the stems' sum up to AAC noise


def test_end_to_end_bss_eval_v4(recipe):
    rec, _, first = recipe
    assert first.returncode == 0, first.stdout[-4000:]
    for stage in (0, 2, 3, 4, 5):
        assert re.search(rf"\(run\.sh:\d+\) Stage {stage}:", first.stdout), f"no stage {stage} log line"
    exp = rec / "exp"
    from sepkit.audio import read_audio

    est, sr = read_audio(exp / TAG / "separate_musdb18_test_mi" / "wav" / "vocals" / "Gamma_-_Three.wav")
    assert sr == SR and est.shape[0] == 2  # separated at the mixture's rate and channels
    v4 = json.loads((exp / TAG / "score_musdb18_test_mi" / "result_v4.json").read_text())
    assert v4["n_tracks"] == 1 and "median over frames then median over tracks" in v4["metric"]
    assert all(isinstance(v4[s][m], float) for s in ("vocals", "accompaniment") for m in ("sdr", "isr", "sir", "sar"))
    per_track = (exp / TAG / "score_musdb18_test_mi" / "per_track_v4.csv").read_text().splitlines()
    assert per_track[1].startswith("Gamma_-_Three,2,")  # 2.5 s -> two whole 1 s frames
    assert json.loads((exp / TAG / "score_musdb18_test_mi" / "result.json").read_text())["n_files"] == 1
    ibm = json.loads((exp / "oracle_feats" / "score_musdb18_test_ibm" / "result_v4.json").read_text())
    mix = json.loads((exp / "oracle_feats" / "score_musdb18_test_mix" / "result_v4.json").read_text())
    assert ibm["vocals"]["sdr"] > mix["vocals"]["sdr"] + 3
    table = (exp / "RESULTS_v4.md").read_text()
    assert f"| {TAG} | musdb18_test | mi |" in table and "| oracle_feats | musdb18_test | wlm |" in table
    assert f"| {TAG} | musdb18_test | mi |" in (exp / "RESULTS.md").read_text()


def test_rerun_skips_scoring(recipe):
    rec, base, first = recipe
    assert first.returncode == 0
    before = (rec / "exp" / TAG / "score_musdb18_test_mi" / "result_v4.json").stat().st_mtime_ns
    again = run_recipe(rec, "--musdb", base / "musdb", *TINY, "--stage", "4", "--oracle", "false")
    assert again.returncode == 0, again.stdout[-4000:]
    assert "result_v4.json: already scored" in again.stdout
    assert (rec / "exp" / TAG / "score_musdb18_test_mi" / "result_v4.json").stat().st_mtime_ns == before


def test_dynamic_mix_trains_from_the_training_stems(recipe):
    """--dynamic_mix true: stage 3 trains on examples mixed on the fly from data/musdb18_train's stems (the train
    config gets --dynamic_mix true --dm_data), in exp/<tag> of its own; a value other than true/false: one line (utils/parse_options.sh)."""
    import yaml

    rec, base, first = recipe
    assert first.returncode == 0
    tiny = [a if a != TAG else "tiny_dm" for a in TINY]
    done = run_recipe(rec, "--musdb", base / "musdb", *tiny, "--dynamic_mix", "true", "--stage", "3", "--stop_stage", "3")
    assert done.returncode == 0, done.stdout[-4000:]
    conf = yaml.safe_load((rec / "exp" / "tiny_dm" / "config.yaml").read_text())
    assert conf["dynamic_mix"] is True and conf["dm_data"] == "data/musdb18_train"
    assert (rec / "exp" / "tiny_dm" / "model.pt").is_file()
    assert yaml.safe_load((rec / "exp" / TAG / "config.yaml").read_text())["dynamic_mix"] is False
    bad = run_recipe(rec, "--musdb", base / "musdb", *TINY, "--dynamic_mix", "yes", "--stage", "3")
    assert bad.returncode != 0 and "option --dynamic_mix is boolean: give true or false, not 'yes'" in bad.stdout


def test_hq_layout(tmp_path):
    from sepkit.data.datadir import DataDir
    from sepkit.data.synth_layouts import make_corpus

    make_corpus("musdb18hq", tmp_path / "hq", num_songs=3, num_test_songs=1, duration=2.0, seed=1, progress=False)
    rec = make_workspace(tmp_path, "musdb18/chimera")
    out = run_recipe(rec, "--musdb", tmp_path / "hq", "--hq", "true", "--stop_stage", "0")
    assert out.returncode == 0, out.stdout[-4000:]
    test = DataDir(rec / "data" / "musdb18_test")
    assert len(test.utts) == 1 and not (rec / "data" / "musdb18_wav").exists()  # wavs are used in place
    assert Path(test.wav[test.utts[0]]).parent.parent == (tmp_path / "hq" / "test").resolve()
    assert len(DataDir(rec / "data" / "musdb18_train").utts) + len(DataDir(rec / "data" / "musdb18_valid").utts) == 3


def test_holdout_script(tmp_path):
    root = tmp_path / "m"
    (root / "train").mkdir(parents=True)
    for name in ("b", "a", "d", "c"):
        (root / "train" / f"{name}.stem.mp4").write_bytes(b"x")
    out = subprocess.run([str(HOLDOUT), str(root), "2", str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "o" / "test").iterdir()) == ["c.stem.mp4", "d.stem.mp4"]
    assert sorted(p.name for p in (tmp_path / "o" / "train").iterdir()) == ["a.stem.mp4", "b.stem.mp4"]
    assert (tmp_path / "o" / "test" / "c.stem.mp4").resolve() == (root / "train" / "c.stem.mp4").resolve()
    out = subprocess.run([str(HOLDOUT), str(root), "4", str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 1 and "cannot hold out 4 of the 4 tracks" in out.stderr
    out = subprocess.run([str(HOLDOUT), str(root), "1", str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 0 and len(list((tmp_path / "o" / "test").iterdir())) == 1  # its own split: remade
    mine = tmp_path / "mine"  # a folder of the user's given as <out-root> by mistake: refused, never deleted
    (mine / "train").mkdir(parents=True)
    (mine / "train" / "song.wav").write_text("my only copy")
    (mine / ".sepkit_holdout").write_text("")  # even with the marker: it holds a file, not links
    for target in (mine, root):
        before = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
        out = subprocess.run([str(HOLDOUT), str(root), "1", str(target)], capture_output=True, text=True)
        assert out.returncode == 1 and "not a held-out split made by this script" in out.stderr, out.stderr
        assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == before
    (root / "test").mkdir()
    out = subprocess.run([str(HOLDOUT), str(root), "1", str(tmp_path / "o")], capture_output=True, text=True)
    assert out.returncode == 1 and "already has a test/ split" in out.stderr


@pytest.mark.skipif(not (SHARED / "musdb18-7s" / "train").is_dir(), reason="../shared/data/musdb18-7s not present")
def test_prepare_shared_musdb18_7s(tmp_path):
    from sepkit.data.datadir import DataDir

    tracks = sorted(p.name[:-len(".stem.mp4")] for p in (SHARED / "musdb18-7s" / "train").glob("*.stem.mp4"))
    if len(tracks) < 6:
        pytest.skip("fewer than 6 .stem.mp4 files in ../shared/data/musdb18-7s/train")
    rec = make_workspace(tmp_path, "musdb18/chimera")
    out = run_recipe(rec, "--musdb", SHARED / "musdb18-7s", "--holdout_test", "4", "--stop_stage", "0")
    assert out.returncode == 0, out.stdout[-4000:]
    sets = {n: DataDir(rec / "data" / f"musdb18_{n}") for n in ("train", "valid", "test")}
    assert sum(len(d.utts) for d in sets.values()) == len(tracks)
    assert len(sets["test"].utts) == 4 and len(sets["valid"].utts) == max(1, round(0.1 * (len(tracks) - 4)))
    from sepkit.data.corpora import utt_id

    assert sets["test"].utts == sorted(utt_id(t) for t in tracks[-4:])
    artists = {n: {u.split("_-_")[0] for u in d.utts} for n, d in sets.items()}
    assert not artists["test"] & (artists["train"] | artists["valid"])  # no artist on both sides here


def test_defaults_train_500_steps_on_20_excerpts(tmp_path):
    """The default configuration on a corpus the size of the 7-s sample set (16 training + 4 test excerpts
    of 7 s: 14 train, 2 valid) trains its 500 steps (steps_per_epoch), as the documented sample-set run
    does, not one pass per epoch (7 batches of 16). Only the network and the batch are made small (the
    step budget stays the configuration's), to keep the test cheap."""
    import torch

    from sepkit.data.synth_layouts import make_corpus

    make_corpus("musdb18hq", tmp_path / "hq", num_songs=16, num_test_songs=4, duration=7.0, seed=2, progress=False)
    rec = make_workspace(tmp_path, "musdb18/chimera")
    small = "--hidden 4 --layers 1 --emb_dim 2 --batch_size 4 --tensorboard false --log_interval 100"
    out = run_recipe(rec, "--musdb", tmp_path / "hq", "--hq", "true", "--nj", "1", "--stop_stage", "3",
                     "--train_args", small)
    assert out.returncode == 0, out.stdout[-4000:]
    exp = rec / "exp" / "train_chimera_cpu"
    assert len((rec / "data" / "musdb18_train" / "wav.scp").read_text().splitlines()) == 14
    last = torch.load(exp / "checkpoints" / "ckpt-epoch5.pt", weights_only=True)["checkpoint"]
    assert last["epoch"] == 5 and last["step"] >= 500
    assert "an epoch is 100 steps (steps_per_epoch)" in (exp / "train.log").read_text()


# ------------------------------------------------------------------------------------------ 4 stems

def test_prepare_stems_4_and_refusals(tmp_path, capsys):
    """--stems 4: data dirs musdb18_4stems_* with MUSDB18's own stems, one file each, beside the 2-stem ones;
    a stems value MUSDB18 cannot give, or a track lacking a stem, is one line naming it, and nothing is written."""
    from sepkit.bin import prepare_data
    from sepkit.data.corpora import CorpusError
    from sepkit.data.corpora.musdb18 import prepare
    from sepkit.data.datadir import DataDir, validate_data_dir
    from sepkit.data.synth_layouts import make_corpus

    make_corpus("musdb18hq", tmp_path / "hq", num_songs=3, num_test_songs=1, duration=2.0, seed=3, progress=False)
    made = prepare(tmp_path / "hq", tmp_path / "data", hq=True, stems=4, valid_fraction=0.3)
    assert sorted(made) == ["musdb18_4stems_test", "musdb18_4stems_train", "musdb18_4stems_valid"]
    test = DataDir(made["musdb18_4stems_test"])
    assert test.sources == ["vocals", "drums", "bass", "other"]
    utt, track = test.utts[0], next((tmp_path / "hq" / "test").iterdir()).resolve()
    for stem in test.sources:  # the corpus file itself, no sum
        assert test.source(stem)[utt] == str(track / f"{stem}.wav")
    assert validate_data_dir(test.path, check_audio=True) == []
    made2 = prepare(tmp_path / "hq", tmp_path / "data", hq=True, valid_fraction=0.3)  # 2 stems: other dirs
    assert sorted(made2) == ["musdb18_test", "musdb18_train", "musdb18_valid"]
    assert DataDir(made2["musdb18_test"]).sources == ["vocals", "accompaniment"]
    for bad in (3, 5, 1):
        with pytest.raises(CorpusError, match=rf"^--stems {bad}: MUSDB18 gives 2 stems .* or 4 .*nothing else$"):
            prepare(tmp_path / "hq", tmp_path / "bad", hq=True, stems=bad)
    assert prepare_data.main(["--corpus", "musdb18", "--hq", "--stems", "3", str(tmp_path / "hq"),
                              str(tmp_path / "bad")]) == 1
    assert prepare_data.main(["--corpus", "mir1k", "--stems", "4", str(tmp_path / "hq"), str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "prepare_data: --stems 3: MUSDB18 gives" in err and "--stems does not apply to --corpus mir1k" in err
    track = next((tmp_path / "hq" / "train").iterdir())
    (track / "bass.wav").unlink()  # a corpus lacking a stem
    for stems in (2, 4):
        with pytest.raises(CorpusError, match=rf"^{re.escape(str(track.resolve() / 'bass.wav'))}: missing$"):
            prepare(tmp_path / "hq", tmp_path / "bad", hq=True, stems=stems)
    assert not (tmp_path / "bad").exists()


def test_recipe_stems_4_end_to_end_beside_2(tmp_path):
    """./run.sh --stems 4 on a MUSDB18-HQ layout runs every stage with 4 sources (one separated file per stem,
    BSS eval v4 per stem and their mean; oracle rows of C sources: test_score_sources), in data dirs, dumps and
    an exp of its own;
    a 2-stem run in the same folder does not meet them, and each setting's stage 0 stays done."""
    from sepkit.data.synth_layouts import make_corpus

    make_corpus("musdb18hq", tmp_path / "hq", num_songs=3, num_test_songs=1, duration=2.0, seed=4, progress=False)
    rec = make_workspace(tmp_path, "musdb18/chimera")
    k = TINY.index("--holdout_test")
    tiny = TINY[:k] + TINY[k + 2:]  # the HQ layout has its test/
    out = run_recipe(rec, "--musdb", tmp_path / "hq", "--hq", "true", "--stems", 4, *tiny, "--valid_fraction", 0.4,
                     "--oracle", "false", "--score_bss", "false")  # 4-stem BSS eval is slow: ~20 s a track here
    assert out.returncode == 0, out.stdout[-4000:]
    stems = ["vocals", "drums", "bass", "other"]
    assert (rec / "data" / "musdb18_4stems_test" / "sources").read_text().split() == stems
    assert (rec / "dump" / "feats" / "musdb18_4stems_train" / "sources").read_text().split() == stems
    assert "conf/tuning/train_chimera_cpu_4stems.yaml" in out.stdout  # the 4-stem config, not given
    import torch

    model = torch.load(rec / "exp" / TAG / "model.pt", weights_only=True)
    assert model["sources"] == stems and model["model_conf"]["n_sources"] == 4
    sep = rec / "exp" / TAG / "separate_musdb18_4stems_test_mi"
    utt = (rec / "data" / "musdb18_4stems_test" / "wav.scp").read_text().split()[0]
    assert sorted(p.name for p in (sep / "wav").iterdir()) == sorted(stems)
    assert all((sep / "wav" / s / f"{utt}.wav").is_file() for s in stems)
    v4 = json.loads((rec / "exp" / TAG / "score_musdb18_4stems_test_mi" / "result_v4.json").read_text())
    assert all(isinstance(v4[s]["sdr"], float) for s in stems)
    assert v4["mean over sources"]["sdr"] == pytest.approx(np.mean([v4[s]["sdr"] for s in stems]), abs=1e-3)
    table = (rec / "exp" / "RESULTS_v4.md").read_text()
    assert f"| {TAG} | musdb18_4stems_test | mi |" in table and "SDR drums" in table and "SDR mean" in table
    # 2 stems in the same folder: its own data dirs and dump; the 4-stem ones untouched and still done
    before = {p: p.stat().st_mtime_ns for p in (rec / "data" / "musdb18_4stems_train").iterdir()}
    two = run_recipe(rec, "--musdb", tmp_path / "hq", "--hq", "true", *tiny, "--valid_fraction", 0.4,
                     "--stop_stage", 2)
    assert two.returncode == 0, two.stdout[-4000:]
    assert (rec / "dump" / "feats" / "musdb18_train" / "sources").read_text().split() == ["vocals", "accompaniment"]
    assert {p: p.stat().st_mtime_ns for p in (rec / "data" / "musdb18_4stems_train").iterdir()} == before
    again = run_recipe(rec, "--musdb", tmp_path / "hq", "--hq", "true", "--stems", 4, *tiny, "--valid_fraction", 0.4,
                       "--stop_stage", 2)
    assert again.returncode == 0, again.stdout[-4000:]
    assert "already prepared" in again.stdout and again.stdout.count("already done, skipping") == 2
    bad = run_recipe(rec, "--musdb", tmp_path / "hq", "--hq", "true", "--stems", 3)
    assert bad.returncode == 1 and bad.stdout.strip().splitlines() == [
        "./run.sh: --stems 3: MUSDB18 gives 2 stems (vocals, accompaniment) or 4 (vocals, drums, bass, other)"]
