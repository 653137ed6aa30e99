"""A stranger's model, a careless --outdir, a killed run: sepkit-separate writes only under --outdir,
--overwrite replaces only what it wrote, and a signal leaves no hidden temporary folder behind.

Issue 23 items 1, 2, 8, 9 (--misi) and 10 (--device, train entry, hop > window).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_separate_cli import exp_dir, outputs, write  # noqa: E402,F401  (exp_dir: a module fixture)

from sepkit.bin import export as export_bin  # noqa: E402
from sepkit.bin import separate as separate_bin  # noqa: E402
from sepkit.model_io import ModelFileError, load_model_dict, make_model_dict, save_model_dict  # noqa: E402
from sepkit.names import check_names, name_problem  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    rc = separate_bin.main(["--no-progress", "--quiet", *map(str, argv)])
    return rc, capsys.readouterr().err.splitlines()


def tree(root):
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*"))


@pytest.fixture(scope="module")
def good(exp_dir):  # noqa: F811
    return torch.load(exp_dir / "model.pt", weights_only=True)


def with_sources(good, tmp_path, sources, name="evil.pt"):
    d = dict(good)
    d["sources"] = sources
    path = tmp_path / "models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(d, path)  # as a stranger would: not through save_model_dict's own checks
    return path


HOSTILE = ["../../evil", "/tmp/sepkit-evil-abs", "..", ".", "a/b", "a\\b", "evil\x00x", ".hidden", "",
           "x" * 10000, "two words", "line\nbreak", "-rf"]


@pytest.mark.parametrize("bad", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_source_names_are_refused_at_load(tmp_path, capsys, good, bad):
    model = with_sources(good, tmp_path, [bad, "accompaniment"])
    src = write(tmp_path / "song.wav", (2, 4000), 16000)
    before = tree(tmp_path)
    rc, lines = run_cli(capsys, "--model", model, "--outdir", tmp_path / "out" / "sep", src)
    assert rc == 1 and len(lines) == 1 and str(model) in lines[0] and "sources: source name" in lines[0], lines
    assert len(lines[0]) < 600
    assert tree(tmp_path) == before and not Path("/tmp/sepkit-evil-abs.wav").exists()
    with pytest.raises(ModelFileError, match="sources"):
        load_model_dict(model)
    assert export_bin.main([str(model), str(tmp_path / "exported.pt")]) == 1  # nor exported
    assert not (tmp_path / "exported.pt").exists()


def test_model_file_cannot_be_saved_with_unsafe_sources(tmp_path, good):
    from sepkit.frontend import CMVN
    from sepkit.nets import build_model

    net = build_model(good["model_conf"])
    with pytest.raises(ValueError, match="path separator"):  # training and export write through this
        make_model_dict(net, good["model_conf"], good["feat_conf"], CMVN.from_dict(good["cmvn"]),
                        ["../vocals", "accompaniment"])


def test_names_rule():
    for ok in ("vocals", "accompaniment", "drums_2", "bass.di", "Gesang", "ボーカル", "v+a", "a-b", "_x"):
        assert name_problem(ok) is None, ok
    for bad in HOSTILE + [None, 3, "tab\tx", "a b", "+x"]:
        assert name_problem(bad) is not None, bad
    with pytest.raises(ValueError, match="listed twice"):
        check_names(["a", "a"], "sources")
    with pytest.raises(ValueError, match="at least 2"):
        check_names(["a"], "sources", at_least=2)


def test_overwrite_never_deletes_the_inputs_folder(tmp_path, capsys, exp_dir, monkeypatch):  # noqa: F811
    """--outdir . and input album/album.wav: the output folder ./album is the input's own folder."""
    album = tmp_path / "album"
    album.mkdir()
    write(album / "album.wav", (2, 4000), 16000)
    (album / "notes.txt").write_text("my notes")
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in album.iterdir()}
    for extra in ([], ["--overwrite"]):
        rc, lines = run_cli(capsys, *extra, "--model", exp_dir, "--outdir", ".", "album/album.wav")
        assert rc == 1 and len(lines) == 1 and "album" in lines[0], lines
        assert {p: p.read_bytes() for p in album.iterdir()} == before
    assert "was not made by sepkit-separate" in lines[0] and "nothing was changed" in lines[0]


def test_overwrite_replaces_own_outputs_only(tmp_path, capsys, exp_dir):  # noqa: F811
    src = write(tmp_path / "a.wav", (1, 4000), 16000)
    out = tmp_path / "out"
    assert run_cli(capsys, "--model", exp_dir, "--outdir", out, src) == (0, [])
    manifest = json.loads((out / "a" / separate_bin.MANIFEST).read_text())
    assert manifest == {"written_by": "sepkit-separate", "files": ["accompaniment.wav", "vocals.wav"]}
    assert run_cli(capsys, "--overwrite", "--model", exp_dir, "--outdir", out, src) == (0, [])
    assert tree(out) == ["a", f"a/{separate_bin.MANIFEST}", "a/accompaniment.wav", "a/vocals.wav"]
    (out / "a" / "mix_notes.txt").write_text("added by the user")  # now the folder is partly the user's
    rc, lines = run_cli(capsys, "--overwrite", "--model", exp_dir, "--outdir", out, src)
    assert rc == 1 and len(lines) == 1 and "mix_notes.txt" in lines[0], lines
    assert (out / "a" / "mix_notes.txt").read_text() == "added by the user" and (out / "a" / "vocals.wav").exists()
    (out / "a" / "mix_notes.txt").unlink()
    (out / "a" / separate_bin.MANIFEST).unlink()  # no manifest: not provably ours
    rc, lines = run_cli(capsys, "--overwrite", "--model", exp_dir, "--outdir", out, src)
    assert rc == 1 and "no .sepkit-separate.json" in lines[0], lines
    (out / "b").symlink_to(tmp_path)  # a link named like the output: never followed, never replaced
    rc, lines = run_cli(capsys, "--overwrite", "--model", exp_dir, "--outdir", out, write(tmp_path / "b.wav",
                                                                                           (1, 4000), 16000))
    assert rc == 1 and "a file or a link" in lines[0] and (out / "b").is_symlink()


def test_input_named_dot_wav_cannot_name_outdir(tmp_path, capsys, exp_dir):  # noqa: F811
    for name in ("..wav", "...wav"):
        src = write(tmp_path / "plain.wav", (1, 4000), 16000).rename(tmp_path / name)
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / "keep.txt").write_text("x")
        rc, lines = run_cli(capsys, "--overwrite", "--model", exp_dir, "--outdir", tmp_path / "out", src)
        assert rc == 1 and len(lines) == 1 and "cannot name an output folder" in lines[0], lines
        assert tree(tmp_path / "out") == ["keep.txt"]


def _wait_for(pred, timeout=60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_leaves_no_temporary_folder(tmp_path, exp_dir, sig):  # noqa: F811
    done = write(tmp_path / "first.wav", (1, 4000), 16000)
    long = write(tmp_path / "long.wav", (1, 16000 * 240), 16000, subtype="PCM_16")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sepkit.bin.separate", "--no-progress", "--quiet", "--segment",
                             "20", "--model", str(exp_dir), "--outdir", str(out), str(done), str(long)],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            # the signal's default action, as in a terminal: under nohup SIGHUP arrives ignored, and
                            # sepkit-separate keeps an inherited SIG_IGN on purpose (nohup's meaning)
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    try:
        assert _wait_for(lambda: out.is_dir() and any(p.name.startswith(".long.") for p in out.iterdir())), \
            "the long file's temporary folder never appeared"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + sig.value, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"stopped by {sig.name}" in lines[0], lines
    assert outputs(out) == ["first", "first/accompaniment.wav", "first/vocals.wav"]  # no hidden folder


def test_an_ignored_hangup_stays_ignored(tmp_path, exp_dir):  # noqa: F811
    """Under nohup (SIGHUP inherited as SIG_IGN) a hang-up does not stop sepkit-separate: every output is written."""
    long = write(tmp_path / "long.wav", (1, 16000 * 240), 16000, subtype="PCM_16")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "sepkit.bin.separate", "--no-progress", "--quiet", "--segment",
                             "20", "--model", str(exp_dir), "--outdir", str(out), str(long)],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        assert _wait_for(lambda: out.is_dir() and any(p.name.startswith(".long.") for p in out.iterdir()))
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert outputs(out) == ["long", "long/accompaniment.wav", "long/vocals.wav"]


def test_stale_temporary_folders_of_dead_runs_are_removed(tmp_path, capsys, exp_dir):  # noqa: F811
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    out = tmp_path / "out"
    stale = out / f".x.sepkit-{dead.pid}.abc123.tmp"
    stale_old = out / f".y.sepkit-{dead.pid}.old"
    live = out / f".z.sepkit-{os.getpid()}.def456.tmp"  # a run still going: left alone
    users = out / f".w.sepkit-{dead.pid}.ghi789.tmp"  # same pattern, but holds what we never write
    for d in (stale, stale_old, live, users):
        d.mkdir(parents=True)
        (d / "vocals.wav").write_bytes(b"\0" * 1000)
    (users / "diary.txt").write_text("mine")
    rc, lines = run_cli(capsys, "--model", exp_dir, "--outdir", out, write(tmp_path / "a.wav", (1, 4000), 16000))
    assert rc == 0 and lines == []
    assert not stale.exists() and not stale_old.exists() and live.exists() and (users / "diary.txt").exists()


def _edit(good, tmp_path, name, edit):
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in good.items()}
    edit(d)
    path = tmp_path / f"{name}.pt"
    torch.save(d, path)
    return path


def test_settings_that_fail_later_are_refused_at_load(tmp_path, capsys, good):
    src = write(tmp_path / "a.wav", (1, 4000), 16000)
    cases = {
        "train_list": (lambda d: d.__setitem__("train", [1, 2]), "train must be a mapping"),
        "hop_gt_window": (lambda d: d["feat_conf"].__setitem__("hop_length", 1024), "feat_conf.hop_length"),
        "huge_n_fft": (lambda d: d["feat_conf"].__setitem__("n_fft", 10**12), "must be at most"),
        "huge_hidden": (lambda d: d["model_conf"].__setitem__("hidden", 10**9), "model_conf.hidden"),
        "bad_segment": (lambda d: d["train"].__setitem__("segment_frames", "100; rm"), "train.segment_frames"),
        "wrong_shape": (lambda d: d["model_conf"].__setitem__("emb_dim", 5), "do not fit"),
        "extra_weight": (lambda d: d.__setitem__("model_state", {**d["model_state"], "x\ny": torch.zeros(1)}),
                         "does not fit model_conf"),
    }
    for name, (edit, words) in cases.items():
        model = _edit(good, tmp_path, name, edit)
        rc, lines = run_cli(capsys, "--model", model, "--outdir", tmp_path / "out", src)
        assert rc == 1 and len(lines) == 1 and words in lines[0] and str(model) in lines[0], (name, lines)
        assert not (tmp_path / "out").exists()


def test_device_and_misi_options_one_line(tmp_path, capsys, exp_dir):  # noqa: F811
    src = write(tmp_path / "a.wav", (1, 4000), 16000)
    cases = [(["--device", "cuda"], "no CUDA device"), (["--device", "cuda:7"], "cuda:7"),
             (["--device", "potato"], "not a torch device"), (["--misi", str(10**20)], "misi_iters must be in"),
             (["--misi", "-1"], "misi_iters must be in")]
    if torch.cuda.is_available():
        cases = cases[2:]
    for opts, words in cases:
        rc, lines = run_cli(capsys, *opts, "--model", exp_dir, "--outdir", tmp_path / "out", src)
        assert rc == 1 and len(lines) == 1 and words in lines[0], (opts, lines)
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["voc\x00als", "..", "-x", "a\\b"])
def test_data_dir_sources_are_safe_names(tmp_path, bad):
    from sepkit.data.datadir import DataDir, DataDirError

    (tmp_path / "sources").write_text(f"{bad}\naccompaniment\n")
    (tmp_path / "wav.scp").write_text("u1 /dev/null\n")
    with pytest.raises(DataDirError, match="invalid source name"):
        DataDir(tmp_path)
