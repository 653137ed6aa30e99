"""sepkit-separate: one-line errors for bad model files and inputs, no folder left behind, umask, --overwrite.

Every failure must give exactly one line on stderr naming the file and the problem, a non-zero exit
status and no output directory (the output directory is made only when the first output is written).
"""
import math
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_separate_cli import exp_dir, outputs, write  # noqa: E402,F401  (exp_dir: a module fixture)

from sepkit.bin import separate as separate_bin  # noqa: E402
from sepkit.model_io import save_model_dict  # noqa: E402


def run_cli(capsys, *argv):
    """``(exit status, stderr lines)`` of an in-process ``sepkit-separate --no-progress --quiet ARGV``."""
    rc = separate_bin.main(["--no-progress", "--quiet", *map(str, argv)])
    return rc, capsys.readouterr().err.splitlines()


def _set(section, key, value):
    def edit(d):
        d[section][key] = value
    return edit


def _poison(name, value):
    def edit(d):
        d["model_state"][name].view(-1)[3] = value
    return edit


def _numpy_scalar(d):
    import numpy as np

    d["train"]["lr"] = np.float64(1e-3)  # a pickled numpy object: not plain data


BAD_MODELS = {  # edit of a good model file -> words of the error line
    "n_fft_0": (_set("feat_conf", "n_fft", 0), ["feat_conf.n_fft", "positive"]),
    "hop_negative": (_set("feat_conf", "hop_length", -128), ["feat_conf.hop_length", "positive"]),
    "window_too_long": (_set("feat_conf", "win_length", 1024), ["feat_conf.win_length", "n_fft = 512"]),
    "fmin_above_fmax": (_set("feat_conf", "fmin", 9000.0), ["feat_conf.fmin", "fmax = 8000.0"]),
    "n_fft_text": (_set("feat_conf", "n_fft", "512"), ["feat_conf.n_fft", "must be int"]),
    "n_freq_mismatch": (_set("model_conf", "n_freq", 21), ["model_conf.n_freq", "n_mels is 20"]),
    "hidden_0": (_set("model_conf", "hidden", 0), ["model_conf.hidden", "positive integer"]),
    "unknown_net": (_set("model_conf", "type", "transformer"), ["model_conf.type", "transformer"]),
    "cmvn_std_0": (lambda d: d["cmvn"]["std"].__setitem__(5, 0.0), ["cmvn.std", "non-positive"]),
    "nan_weight": (_poison("linear.weight", math.nan), ["parameter linear.weight", "NaN or infinite"]),
    "inf_weight": (_poison("encoder.lstm.weight_hh_l0", math.inf),
                   ["parameter encoder.lstm.weight_hh_l0", "NaN or infinite"]),
    "numpy_object": (_numpy_scalar, ["not a loadable sepkit model", "numpy"]),
}


@pytest.fixture(scope="module")
def good_dict(exp_dir):  # noqa: F811
    return torch.load(exp_dir / "model.pt", weights_only=True)


def _copy(d):
    return {k: ({kk: vv.clone() for kk, vv in v.items()} if k == "model_state" else
                dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in d.items()}


def _assert_one_line(rc, lines, path, words, outdir):
    assert rc == 1 and len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("sepkit-separate: error: ") and str(path) in line, line
    for w in words:
        assert w in line, (w, line)
    for advice in ("weights_only", "can still be loaded", "trust"):  # never advise loading unsafely
        assert advice not in line, line
    assert not outdir.exists(), outputs(outdir)


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_file_one_line_no_output(tmp_path, capsys, good_dict, case):
    edit, words = BAD_MODELS[case]
    d = _copy(good_dict)
    d["cmvn"] = {k: list(v) for k, v in d["cmvn"].items()}
    edit(d)
    model = tmp_path / f"{case}.pt"
    save_model_dict(model, d)
    src = write(tmp_path / "a.wav", (2, 4000), 16000)
    for head in ("mi", "dc"):  # NaN weights once failed in k-means (DC) or in the writer (MI)
        rc, lines = run_cli(capsys, "--head", head, "--model", model, "--outdir", tmp_path / "out" / "sep", src)
        _assert_one_line(rc, lines, model, words, tmp_path / "out")


def test_unloadable_files_do_not_pass_on_torch_advice(tmp_path, capsys):
    src = write(tmp_path / "a.wav", (1, 4000), 16000)
    (tmp_path / "junk.pt").write_bytes(b"these are my lyrics, not a model\n" * 10)
    rc, lines = run_cli(capsys, "--model", tmp_path / "junk.pt", "--outdir", tmp_path / "out", src)
    _assert_one_line(rc, lines, tmp_path / "junk.pt", ["not a loadable sepkit model"], tmp_path / "out")
    torch.save({"model_state": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")  # a pickled nn.Module
    rc, lines = run_cli(capsys, "--model", tmp_path / "module.pt", "--outdir", tmp_path / "out", src)
    _assert_one_line(rc, lines, tmp_path / "module.pt", ["torch.nn.modules.linear.Linear"], tmp_path / "out")


def _loop(d):
    os.symlink(d / "loop2.wav", d / "loop1.wav")
    os.symlink(d / "loop1.wav", d / "loop2.wav")
    return d / "loop1.wav"


def test_symlink_loop_is_reported_as_such(tmp_path, capsys, exp_dir):  # noqa: F811
    loop = _loop(tmp_path)
    os.symlink(tmp_path / "gone.wav", tmp_path / "dangling.wav")
    good = write(tmp_path / "a.wav", (1, 4000), 16000)
    rc, lines = run_cli(capsys, "--model", exp_dir, "--outdir", tmp_path / "out", loop)
    _assert_one_line(rc, lines, loop, ["symbolic link loop"], tmp_path / "out")
    assert "no such file" not in lines[0]
    rc, lines = run_cli(capsys, "--model", exp_dir, "--outdir", tmp_path / "out", loop, tmp_path / "dangling.wav",
                        good)
    assert rc == 1 and len(lines) == 2, lines
    assert str(loop) in lines[0] and "symbolic link loop" in lines[0]
    assert "dangling.wav" in lines[1] and "broken symbolic link" in lines[1] and "gone.wav" in lines[1]
    assert outputs(tmp_path / "out") == ["a", "a/accompaniment.wav", "a/vocals.wav"]
    os.symlink(tmp_path / "m2.pt", tmp_path / "m1.pt")
    os.symlink(tmp_path / "m1.pt", tmp_path / "m2.pt")
    rc, lines = run_cli(capsys, "--model", tmp_path / "m1.pt", "--outdir", tmp_path / "out2", good)
    _assert_one_line(rc, lines, tmp_path / "m1.pt", ["symbolic link loop"], tmp_path / "out2")


def test_no_output_folder_until_an_output_is_written(tmp_path, capsys, exp_dir):  # noqa: F811
    out = tmp_path / "results" / "sep"
    good = write(tmp_path / "a.wav", (1, 4000), 16000)
    rc, lines = run_cli(capsys, "--model", tmp_path / "nomodel", "--outdir", out, good)
    _assert_one_line(rc, lines, tmp_path / "nomodel", ["no such model"], tmp_path / "results")
    rc, lines = run_cli(capsys, "--model", exp_dir, "--outdir", out, tmp_path / "missing.wav", _loop(tmp_path))
    assert rc == 1 and len(lines) == 2 and not (tmp_path / "results").exists(), lines
    rc, lines = run_cli(capsys, "--subtype", "MP3ISH", "--model", exp_dir, "--outdir", out, good)
    assert rc == 2 and len(lines) == 1 and "--subtype" in lines[0] and not (tmp_path / "results").exists()
    (tmp_path / "locked").mkdir(mode=0o500)
    if os.access(tmp_path / "locked", os.W_OK):
        pytest.skip("running as root: permissions are not enforced")
    rc, lines = run_cli(capsys, "--model", exp_dir, "--outdir", tmp_path / "locked" / "out", good)
    _assert_one_line(rc, lines, tmp_path / "locked" / "out", ["cannot be written", "permission denied"],
                     tmp_path / "locked" / "out")


def test_outputs_follow_the_umask(tmp_path, capsys, exp_dir):  # noqa: F811
    src = write(tmp_path / "a.wav", (1, 4000), 16000)
    old = os.umask(0o027)
    try:
        rc, lines = run_cli(capsys, "--model", exp_dir, "--outdir", tmp_path / "out" / "sep", src)
    finally:
        os.umask(old)
    assert rc == 0 and lines == []
    mode = {p: (tmp_path / p).stat().st_mode & 0o777 for p in ("out", "out/sep", "out/sep/a", "out/sep/a/vocals.wav")}
    assert mode == {"out": 0o750, "out/sep": 0o750, "out/sep/a": 0o750, "out/sep/a/vocals.wav": 0o640}, \
        {k: oct(v) for k, v in mode.items()}


def test_earlier_outputs_are_kept_without_overwrite(tmp_path, capsys, exp_dir):  # noqa: F811
    src = write(tmp_path / "a.wav", (1, 4000), 16000)
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "notes.txt").write_text("mine")  # what the user keeps there: not made by this run
    rc, lines = run_cli(capsys, "--model", exp_dir, "--outdir", out, src)
    assert rc == 1 and len(lines) == 1 and str(out / "a") in lines[0] and "--overwrite" in lines[0], lines
    assert outputs(out) == ["a", "a/notes.txt"]
    rc, lines = run_cli(capsys, "--overwrite", "--model", exp_dir, "--outdir", out, src)  # not sepkit's folder
    assert rc == 1 and len(lines) == 1 and "not made by sepkit" in lines[0] and "nothing was changed" in lines[0], lines
    assert outputs(out) == ["a", "a/notes.txt"] and (out / "a" / "notes.txt").read_text() == "mine"
