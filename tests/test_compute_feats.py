"""Feature dumps: sepkit.bin.compute_feats, utils/compute_feats.sh and sepkit.bin.compute_cmvn."""
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from sepkit.audio import resample
from sepkit.bin import compute_cmvn, compute_feats
from sepkit.data.dataset import FeatureDump
from sepkit.data.datadir import DataDir, validate_data_dir
from sepkit.frontend import CMVN, FeatureConfig, Frontend

REPO = Path(__file__).resolve().parents[1]
CONF = {"sample_rate": 8000, "n_fft": 256, "hop_length": 64, "n_mels": 40}
# utt -> (sample rate, channels, seconds)
CLIPS = {"a1": (22050, 2, 1.0), "b2": (16000, 1, 0.7), "c3": (8000, 1, 0.5), "d4": (8000, 2, 0.3)}


def _make_data(root, clips=CLIPS, src_scale=None, short=None):
    """Write vocals/accompaniment wavs and their sum as the mixture; return the data dir path."""
    rng = np.random.default_rng(0)
    wav, srcs = {}, {"vocals": {}, "accompaniment": {}}
    for utt, (sr, ch, sec) in clips.items():
        n = int(sr * sec)
        t = np.arange(n) / sr
        voc = 0.3 * np.sin(2 * np.pi * 440 * t)[None].repeat(ch, 0) * rng.uniform(0.5, 1, (ch, 1))
        acc = 0.1 * rng.standard_normal((ch, n))
        mix = voc + acc
        for name, x in (("vocals", voc), ("accompaniment", acc)):
            if name == "vocals" and short == utt:
                x = x[:, : int(0.9 * n)]
            path = root / "audio" / f"{utt}_{name}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x.T.astype(np.float32), sr, subtype="FLOAT")
            srcs[name][utt] = str(path)
        if src_scale == utt:
            mix = mix * 2.0
        sf.write(root / "audio" / f"{utt}_mix.wav", mix.T.astype(np.float32), sr, subtype="FLOAT")
        wav[utt] = str(root / "audio" / f"{utt}_mix.wav")
    return DataDir.create(root / "data", wav, srcs).path


def _direct_mel(path, conf):
    """Reference: mono (mean of channels), resample, Frontend mel of one file -> (T, F)."""
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = resample(x.T.mean(0, keepdims=True), sr, conf.sample_rate)
    with torch.no_grad():
        return Frontend(conf).analyze(torch.from_numpy(x))["mel"][0].numpy()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("feats")
    data = _make_data(root)
    conf_path = root / "feats.yaml"
    conf_path.write_text(yaml.safe_dump(CONF))
    dump = root / "dump1"
    assert compute_feats.main(["--feat-conf", str(conf_path), str(data), str(dump)]) == 0
    return root, data, conf_path, dump


def test_dump_matches_direct_frontend(setup):
    root, data, conf_path, dump = setup
    conf = FeatureConfig.from_dict(CONF)
    d = FeatureDump(dump)
    assert d.utts == sorted(CLIPS) and d.sources == ["vocals", "accompaniment"]
    assert d.feat_conf == conf
    assert yaml.safe_load((dump / "feat_conf.yaml").read_text()) == conf.to_dict()
    dd = DataDir(data)
    for utt, (sr, ch, sec) in CLIPS.items():
        mix, src = d.load(utt)
        n = int(round(int(sr * sec) * conf.sample_rate / sr))
        assert mix.shape == (1 + n // conf.hop_length, conf.n_mels) == (d.num_frames[utt], 40)
        assert src.shape == mix.shape + (2,) and mix.dtype == np.float32
        np.testing.assert_allclose(mix, _direct_mel(dd.wav[utt], conf), rtol=1e-4, atol=1e-6)
        for c, name in enumerate(dd.sources):
            np.testing.assert_allclose(src[..., c], _direct_mel(dd.source(name)[utt], conf), rtol=1e-4, atol=1e-6)


def test_memmap_reading_equals_kaldiio(setup):
    _, _, _, dump = setup
    d = FeatureDump(dump)
    for c, name in enumerate(["mix"] + d.sources):
        ref = kaldiio.load_scp(str(dump / f"{name}.scp"))
        for utt in d.utts:
            np.testing.assert_array_equal(d.read(utt, c), ref[utt])
            np.testing.assert_array_equal(d.read(utt, c, 3, 7), ref[utt][3:7])
    # a moved dump still loads (ark paths are looked up by name inside the dump dir)
    moved = dump.parent / "moved"
    shutil.copytree(dump, moved)
    ref = d.read("a1", 1)
    os.rename(dump / "vocals.feats.ark", dump / "vocals.feats.ark.away")
    try:
        np.testing.assert_array_equal(FeatureDump(moved).read("a1", 1), ref)
    finally:
        os.rename(dump / "vocals.feats.ark.away", dump / "vocals.feats.ark")


def _shell_nj2(setup, dump):
    """The utils/compute_feats.sh --nj 2 command of ``setup``'s data dir and its environment."""
    root, data, conf_path, _ = setup
    cmd = [str(REPO / "utils" / "compute_feats.sh"), "--nj", "2", "--cmd", str(REPO / "utils" / "run.py"),
           "--feat-conf", str(conf_path), str(data), str(dump)]
    return cmd, dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


@pytest.fixture(scope="module")
def shell_dump(setup):
    """(dump dir, result) of utils/compute_feats.sh --nj 2, uninterrupted."""
    dump2 = setup[0] / "dump2"
    cmd, env = _shell_nj2(setup, dump2)
    return dump2, subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=setup[0])


def test_shell_nj2_equals_nj1_and_rerun_skips(setup, shell_dump):
    root, data, conf_path, dump1 = setup
    dump2, res = shell_dump
    cmd, env = _shell_nj2(setup, dump2)
    assert res.returncode == 0, res.stderr
    assert (dump2 / "log" / "compute_feats.2.log").is_file()
    assert len(list(dump2.glob("mix.feats.*.ark"))) == 2
    a, b = FeatureDump(dump1), FeatureDump(dump2)
    assert a.utts == b.utts and a.num_frames == b.num_frames and a.sources == b.sources
    for utt in a.utts:
        for c in range(3):
            np.testing.assert_array_equal(a.read(utt, c), b.read(utt, c))
    for name in ("mix.scp", "vocals.scp", "utt2num_frames"):  # sorted, complete
        keys = [ln.split()[0] for ln in (dump2 / name).read_text().splitlines()]
        assert keys == sorted(CLIPS)
    assert (dump2 / "sources").read_text() == "vocals\naccompaniment\n"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in dump2.iterdir() if p.is_file()}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    assert res.returncode == 0 and "already done, skipping" in res.stdout, res.stderr
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in dump2.iterdir() if p.is_file()}
    assert after == before


def _procs_with(*words):
    """Running processes whose command line contains every one of ``words``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if all(w in line for w in words):
                    pids.append(int(entry.name))
        except (OSError, IndexError):
            pass
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").is_file(), reason="needs /proc (Linux)")
def test_sigkill_of_the_stage_stops_its_jobs_and_the_rerun_equals_an_uninterrupted_dump(setup, shell_dump, tmp_path):
    root = setup[0]
    ref, res = shell_dump
    assert res.returncode == 0, res.stderr
    dump = tmp_path / "killed"
    cmd, env = _shell_nj2(setup, dump)
    stage = subprocess.Popen(cmd, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # its own process group, as a stage run from a shell
    try:
        deadline = time.monotonic() + 60
        while len(_procs_with(str(dump), "--ark-name feats.")) < 2:
            assert stage.poll() is None and time.monotonic() < deadline, "the two jobs never ran"
            time.sleep(0.02)
        os.killpg(stage.pid, signal.SIGKILL)  # mid-way: the jobs have just started
        stage.wait()
        deadline = time.monotonic() + 5
        while _procs_with(str(dump)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _procs_with(str(dump)), "jobs outlived their stage"
    finally:
        for pid in _procs_with(str(dump)):
            os.kill(pid, signal.SIGKILL)
    assert not (dump / "mix.scp").exists() and not list(dump.glob("mix.feats.*.ark"))  # it was interrupted
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in ref.iterdir() if p.is_file())
    assert sorted(p.name for p in dump.iterdir() if p.is_file()) == names
    for name in names:  # byte for byte, but for the dump dir's own path in the scp files
        assert (dump / name).read_bytes() == (ref / name).read_bytes().replace(bytes(ref), bytes(dump)), name


def test_prepare_states(setup, tmp_path):
    _, data, conf_path, dump1 = setup
    dump = tmp_path / "dump"
    shutil.copytree(dump1, dump)
    args = ["--feat-conf", str(conf_path), "--prepare", str(data), str(dump)]
    assert compute_feats.main(args) == 0  # complete
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(dict(CONF, n_mels=32)))
    with pytest.raises(SystemExit, match="other settings.*n_mels: 40 -> 32.*without --overwrite"):
        compute_feats.main(["--feat-conf", str(other), "--prepare", str(data), str(dump)])
    assert (dump / "mix.scp").is_file()  # refused, untouched

    # a finished dump of other utterances (the data dir has one more now) is refused, cmvn.ark kept
    (dump / "cmvn.ark").write_bytes(b"stats")
    for name in ("mix.scp", "vocals.scp", "accompaniment.scp", "utt2num_frames"):
        (dump / name).write_text("".join(ln for ln in (dump / name).open() if not ln.startswith("d4 ")))
    before = {p.name: p.read_bytes() for p in dump.iterdir()}
    with pytest.raises(SystemExit, match=rf"{dump} holds a finished dump of other utterances \(1 of the 4 "
                                         r"here missing.*without --overwrite \(which moves it aside"):
        compute_feats.main(args)
    assert {p.name: p.read_bytes() for p in dump.iterdir()} == before
    (dump / "vocals.scp").write_text((dump / "vocals.scp").read_text().splitlines(True)[0])
    with pytest.raises(SystemExit, match="damaged dump.*without --overwrite"):
        compute_feats.main(args)
    assert (dump / "mix.scp").is_file() and (dump / "cmvn.ark").read_bytes() == b"stats"

    # --overwrite moves it aside (readable there, from its own arks) and leaves a place to compute
    assert compute_feats.main(args + ["--overwrite"]) == compute_feats.NOT_DONE
    aside = list(tmp_path.glob("dump.old.*"))
    assert len(aside) == 1 and (aside[0] / "cmvn.ark").read_bytes() == b"stats"
    assert sorted(p.name for p in aside[0].iterdir()) == sorted(before)
    assert str(dump) + "/" not in (aside[0] / "mix.scp").read_text()
    assert [p.name for p in dump.iterdir()] == [compute_feats.RECORD]  # claimed, empty
    shutil.copytree(dump1, dump, dirs_exist_ok=True)
    assert compute_feats.main(args + ["--overwrite"]) == compute_feats.NOT_DONE  # done: moved aside too
    assert len(list(tmp_path.glob("dump.old.*"))) == 2

    # an unfinished dump (interrupted: no mix.scp) loses its part files only
    (dump / "mix.feats.1.ark").write_bytes(b"part")
    (dump / ".vocals.feats.2.ark.tmp").write_bytes(b"part")
    (dump / ".mix.scp.x1y2.tmp").write_bytes(b"part")
    (dump / "utt2num_frames.feats.1").write_text("a1 3\n")
    for mine in ("notes.txt", "mix.backup.scp", "vocals.mine.scp", "utt2num_frames.orig", "mix.feats.old.ark"):
        (dump / mine).write_text("mine\n")
    assert compute_feats.main(args) == compute_feats.NOT_DONE
    assert sorted(p.name for p in dump.iterdir()) == sorted([compute_feats.RECORD, "notes.txt", "mix.backup.scp",
                                                             "vocals.mine.scp", "utt2num_frames.orig",
                                                             "mix.feats.old.ark"])


def test_feat_conf_errors(setup, tmp_path):
    _, data, _, _ = setup
    bad = tmp_path / "bad.yaml"
    bad.write_text("n_mels: 40\nhop: 64\n")
    with pytest.raises(SystemExit, match=r"bad\.yaml: unknown feature setting\(s\) hop"):
        compute_feats.main(["--feat-conf", str(bad), str(data), str(tmp_path / "d")])
    bad.write_text("n_mels: forty\n")
    with pytest.raises(SystemExit, match=r"bad\.yaml: n_mels must be int"):
        compute_feats.main(["--feat-conf", str(bad), str(data), str(tmp_path / "d")])
    assert not (tmp_path / "d").exists()


def test_length_mismatch_fails_cleanly(tmp_path, setup):
    _, _, conf_path, _ = setup
    data = _make_data(tmp_path, clips={"x1": (8000, 1, 0.5), "y2": (8000, 1, 0.5)}, short="y2")
    out = tmp_path / "dump"
    with pytest.raises(SystemExit, match=r"data/vocals\.scp: utterance y2: \S+/y2_vocals\.wav has 3600 samples, "
                                         r"the mixture \S+/y2_mix\.wav 4000 \(at 8000 Hz"):
        compute_feats.main(["--feat-conf", str(conf_path), str(data), str(out)])
    assert not out.exists()  # refused from the file headers before the dump dir is claimed


def test_source_at_another_rate_is_refused_before_anything_is_written(tmp_path, setup):
    """A source at another sample rate than its mixture (same duration) would be resampled into a dump that
    looks right: it is refused in one line naming the file, and neither the dump nor its record is written."""
    _, _, conf_path, _ = setup
    data = _make_data(tmp_path, clips={"x1": (8000, 1, 0.5), "y2": (8000, 1, 0.5)})
    x, sr = sf.read(tmp_path / "audio" / "x1_accompaniment.wav", dtype="float32")
    sf.write(tmp_path / "audio" / "x1_accompaniment.wav", resample(x[None], sr, 16000)[0], 16000, subtype="FLOAT")
    out = tmp_path / "dump"
    with pytest.raises(SystemExit) as err:
        compute_feats.main(["--feat-conf", str(conf_path), "--prepare", str(data), str(out)])
    msg = str(err.value)
    assert "\n" not in msg and re.search(r"accompaniment\.scp: utterance x1: \S+/x1_accompaniment\.wav is 16000 Hz, "
                                         r"the mixture \S+/x1_mix\.wav 8000 Hz", msg), msg
    assert not out.exists()
    problems = validate_data_dir(data)  # the same check, from the headers, in validate_data_dir
    assert len(problems) == 1 and "x1_accompaniment.wav is 16000 Hz" in problems[0]


def test_residual_warning(tmp_path, setup, caplog):
    _, _, conf_path, _ = setup
    data = _make_data(tmp_path, clips={"x1": (8000, 1, 0.3), "y2": (8000, 1, 0.3)}, src_scale="y2")
    with caplog.at_level(logging.WARNING):
        compute_feats.main(["--feat-conf", str(conf_path), str(data), str(tmp_path / "dump")])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "utterance y2: mixture differs from the sum" in warned[0]


def test_cmvn_stats(setup, tmp_path):
    _, _, _, dump1 = setup
    dump = tmp_path / "dump"
    shutil.copytree(dump1, dump)
    assert compute_cmvn.main([str(dump)]) == 0
    stats = kaldiio.load_mat(str(dump / "cmvn.ark"))
    d = FeatureDump(dump)
    fe = Frontend(d.feat_conf)
    feats = np.concatenate([fe.features(torch.from_numpy(d.read(u))[None])[0].numpy() for u in d.utts]).astype(np.float64)
    assert stats.shape == (2, 81)
    assert stats[0, -1] == sum(d.num_frames.values()) == len(feats)
    np.testing.assert_allclose(stats[0, :-1], feats.sum(0), rtol=1e-6)
    np.testing.assert_allclose(stats[1, :-1], np.square(feats).sum(0), rtol=1e-6)
    cmvn = CMVN.load(dump / "cmvn.ark")
    np.testing.assert_allclose(cmvn.mean.numpy(), feats.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cmvn.std.numpy(), feats.std(0), rtol=1e-4, atol=1e-5)
    mtime = (dump / "cmvn.ark").stat().st_mtime_ns
    assert compute_cmvn.main([str(dump)]) == 0  # up to date: kept
    assert (dump / "cmvn.ark").stat().st_mtime_ns == mtime


def test_missing_audio_fails_before_any_job(setup, tmp_path):
    _, data, conf_path, _ = setup
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    scp = broken / "vocals.scp"
    scp.write_text(scp.read_text().replace("b2_vocals.wav", "gone.wav"))
    with pytest.raises(SystemExit, match=r"vocals\.scp: utterance b2: audio file not found: .*gone\.wav"):
        compute_feats.main(["--feat-conf", str(conf_path), "--prepare", str(broken), str(tmp_path / "d")])
    before = sorted(p.name for p in broken.iterdir())
    with pytest.raises(SystemExit, match="looks like a data dir"):  # OUTDIR = DATADIR by mistake
        compute_feats.main(["--feat-conf", str(conf_path), str(broken), str(broken)])
    assert sorted(p.name for p in broken.iterdir()) == before


def test_real_clips(shared_data, tmp_path, caplog):
    """MIR-1K clips through JSON channel specs: mixture = left + right, a 0 dB sum of the sources."""
    clips = sorted((shared_data / "MIR-1K" / "Wavfile").glob("abjones_*.wav"))[:2]
    if not clips:
        pytest.skip("no MIR-1K clips")
    utts = {p.stem: p for p in clips}

    def spec(channel):
        return {u: json.dumps({"path": str(p), "channel": channel}) for u, p in utts.items()}

    data = DataDir.create(tmp_path / "data", spec("sum"), {"vocals": spec(1), "accompaniment": spec(0)}).path
    conf = tmp_path / "feats.yaml"
    conf.write_text("{}\n")  # paper defaults: 16 kHz, 512/128, 150 mels + deltas
    with caplog.at_level(logging.WARNING):
        assert compute_feats.main(["--feat-conf", str(conf), str(data), str(tmp_path / "dump")]) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    d = FeatureDump(tmp_path / "dump")
    for utt, path in utts.items():
        mix, src = d.load(utt)
        assert mix.shape[0] == 1 + sf.info(str(path)).frames // 128 and mix.shape[1] == 150
        # |X + Y| <= |X| + |Y| per STFT bin, and mel bins are non-negative sums of bins
        assert (mix <= src.sum(-1) * (1 + 1e-4) + 1e-6).all() and mix.mean() > 1e-4


def test_a_folder_sepkit_did_not_make_is_refused_and_kept(setup, tmp_path):
    """Issue 23 item 5: utils/compute_feats.sh into a user's folder removed and replaced its files."""
    mine = tmp_path / "mine"
    mine.mkdir()
    files = {"mix.backup.scp": f"a1 {mine}/mix.ark:1\n", "vocals.mine.scp": "a1 /x/v.ark:1\n",
             "utt2num_frames.orig": "a1 3\n", "cmvn.ark": "my stats", "feat_conf.yaml": "n_mels: 3\n",
             "sources": "guitar\n"}
    for name, text in files.items():
        (mine / name).write_text(text)
    cmd, env = _shell_nj2(setup, mine)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if "compute_feats" in ln and "INFO" not in ln]
    assert len(errors) == 1 and f"{mine} holds files that sepkit did not make" in errors[0], res.stderr
    assert "without --overwrite" in errors[0]
    assert {p.name: p.read_text() for p in mine.iterdir()} == files  # untouched, nothing added
    # the jobs alone (no --prepare) do not write there either
    with pytest.raises(SystemExit, match="holds files that sepkit did not make"):
        compute_feats.main(["--feat-conf", str(setup[2]), "--ark-name", "feats.1", str(setup[1]), str(mine)])
    assert {p.name: p.read_text() for p in mine.iterdir()} == files
    # --overwrite true moves the folder aside, whole, and makes the dump
    res = subprocess.run(cmd[:-2] + ["--overwrite", "true"] + cmd[-2:], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    aside = list(tmp_path.glob("mine.old.*"))
    assert len(aside) == 1 and {p.name: p.read_text() for p in aside[0].iterdir()} == files
    assert FeatureDump(mine).utts == sorted(CLIPS)


def _copy_data(data, root):
    """A copy of ``data`` with its own audio files (so they can be rewritten)."""
    d = DataDir(data)
    audio = root / "audio"
    audio.mkdir(parents=True)
    tables = {"wav": d.wav, **{s: d.source(s) for s in d.sources}}
    new = {name: {} for name in tables}
    for name, table in tables.items():
        for utt, path in table.items():
            new[name][utt] = str(audio / Path(path).name)
            shutil.copy2(path, new[name][utt])
    return DataDir.create(root / "data", new.pop("wav"), new).path


def test_stale_dump_is_recomputed(setup, tmp_path):
    """Issue 23 item 4: a data dir remade with other audio under the same names (a remix with another
    seed) left its dump "already done" (features of the old audio)."""
    _, data1, conf_path, _ = setup
    data = _copy_data(data1, tmp_path)
    dump = tmp_path / "dump"
    args = ["--feat-conf", str(conf_path), str(data), str(dump)]
    assert compute_feats.main(args) == 0
    assert compute_feats.main(["--prepare"] + args) == 0  # done: same inputs
    conf = FeatureConfig.from_dict(CONF)
    mix_path = DataDir(data).wav["c3"]
    x, sr = sf.read(mix_path, dtype="float32")
    sf.write(mix_path, 0.5 * x[::-1], sr, subtype="FLOAT")  # other audio, same name and length
    (dump / "notes.txt").write_text("mine\n")
    before = FeatureDump(dump).read("c3")
    assert compute_feats.main(args) == 0  # stale: recomputed in place
    after = FeatureDump(dump).read("c3")
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, _direct_mel(mix_path, conf), rtol=1e-4, atol=1e-6)
    assert (dump / "notes.txt").read_text() == "mine\n" and not list(tmp_path.glob("dump.old.*"))
    assert compute_feats.main(["--prepare"] + args) == 0

    # the same utterances from another data dir: refused, not recomputed
    with pytest.raises(SystemExit, match=rf"{dump} holds the features of another data dir \({data}\).*--overwrite"):
        compute_feats.main(["--prepare", "--feat-conf", str(conf_path), str(data1), str(dump)])
    # a finished dump with no record of its inputs (an older sepkit's): refused
    (dump / compute_feats.RECORD).unlink()
    with pytest.raises(SystemExit, match=rf"{dump} is a dump with no record of what it was computed from"):
        compute_feats.main(["--prepare"] + args)
    assert (dump / "mix.scp").is_file()


def _pair(root, utt, mix_gain=1.0, src_fraction=1.0, n=8000):
    """A data dir of one 1-s utterance at 8 kHz: mixture = mix_gain * (vocals + accompaniment), the
    vocals file cut to src_fraction of the mixture's length."""
    rng = np.random.default_rng(1)
    voc, acc = 0.3 * rng.standard_normal(2 * n), 0.1 * rng.standard_normal(n)
    paths = {name: root / f"{utt}_{name}.wav" for name in ("mix", "vocals", "accompaniment")}
    root.mkdir(parents=True, exist_ok=True)
    sf.write(paths["mix"], (mix_gain * (voc[:n] + acc)).astype(np.float32), 8000, subtype="FLOAT")
    sf.write(paths["vocals"], voc[: int(round(src_fraction * n))].astype(np.float32), 8000, subtype="FLOAT")
    sf.write(paths["accompaniment"], acc.astype(np.float32), 8000, subtype="FLOAT")
    return DataDir.create(root / "data", {utt: str(paths["mix"])},
                          {"vocals": {utt: str(paths["vocals"])}, "accompaniment": {utt: str(paths["accompaniment"])}})


@pytest.mark.parametrize("residual_db,warns", [(-15.0, True), (-25.0, False)])
def test_residual_threshold_is_minus_20_db(tmp_path, caplog, residual_db, warns):
    """The residual |mix - sum|^2 / |mix|^2 warns above -20 dB, not at -25 dB, and at -15 dB (a
    threshold moved to -7 dB would miss it)."""
    r = 10 ** (residual_db / 20)  # (g - 1) / g with mix = g * sum
    data = _pair(tmp_path, "u1", mix_gain=1 / (1 - r))
    with caplog.at_level(logging.WARNING):
        compute_feats.load_utt(data, "u1", 8000)
    warned = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warned) == int(warns), warned
    if warns:
        assert f"residual {residual_db:.1f} dB" in warned[0]


@pytest.mark.parametrize("fraction,ok", [(0.995, True), (0.98, False), (0.95, False), (1.02, False)])
def test_length_tolerance_is_one_percent(tmp_path, fraction, ok):
    """Sources may differ from the mixture in length by 1 %: 0.5 % is trimmed/padded, 2 % and 5 %
    (inside a 9 % tolerance) are refused."""
    data = _pair(tmp_path, "u1", src_fraction=fraction)
    if ok:
        assert compute_feats.load_utt(data, "u1", 8000).shape == (3, 8000)
    else:
        with pytest.raises(SystemExit, match=rf"vocals\.scp: utterance u1: \S+u1_vocals\.wav has "
                                             rf"{int(round(fraction * 8000))} samples, the mixture \S+u1_mix\.wav 8000 "
                                             r".*within 1%"):
            compute_feats.load_utt(data, "u1", 8000)
