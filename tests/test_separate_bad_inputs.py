"""The bad-input table of sepkit-separate: 50 kinds of bad input, each one clean line.

Clean means: exactly one ``sepkit-separate: error:`` line on stderr naming the file, option or
model at fault and the problem (the words of the table), a non-zero exit status, no traceback,
and nothing new written (no output, no empty folder, no temporary). ``docs/errors.md`` shows the
same table to users; a test keeps the two in step (``python tests/test_separate_bad_inputs.py``
prints the table's rows after a change).
"""
import math
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_separate_cli import exp_dir, write  # noqa: E402,F401  (exp_dir: a module fixture)

from sepkit.bin import separate as separate_bin  # noqa: E402
from sepkit.frontend import CMVN, FeatureConfig  # noqa: E402
from sepkit.model_io import make_model_dict, save_model_dict  # noqa: E402
from sepkit.nets import ChimeraNet  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def _song(d):
    return write(d / "song.wav", (2, 4000), 16000)


def _zero_channels(d):
    fmt = struct.pack("<HHIIHH", 1, 0, 16000, 0, 0, 16)
    p = d / "zero.wav"
    p.write_bytes(b"RIFF" + struct.pack("<I", 36) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data"
                  + struct.pack("<I", 0))
    return p


def _truncated(d, ext):
    full = write(d / f"full.{ext}", (2, 16000), 16000).read_bytes()
    (d / f"full.{ext}").unlink()
    (d / f"cut.{ext}").write_bytes(full[:len(full) // 2])
    return d / f"cut.{ext}"


def _samples(d, value):
    x = np.zeros((1000, 2), np.float32)
    x[10, 1] = value
    sf.write(d / "bad.wav", x, 16000, subtype="FLOAT")
    return d / "bad.wav"


def _loop(d):
    os.symlink(d / "l2.wav", d / "l1.wav")
    os.symlink(d / "l1.wav", d / "l2.wav")
    return d / "l1.wav"


def _model(d, good, edit):
    m = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in good.items()}
    m["model_state"] = {k: v.clone() for k, v in good["model_state"].items()}
    m["cmvn"] = {k: list(v) for k, v in good["cmvn"].items()}
    edit(m)
    path = d / "model.pt"
    torch.save(m, path)
    return path


def _set(section, key, value):
    return lambda m: m[section].__setitem__(key, value)


def _linked_output(d):
    (d / "out").mkdir()
    os.symlink(d, d / "out" / "song")
    return _song(d)


def _sources(first):
    return lambda m: m.__setitem__("sources", [first, "accompaniment"])


def _mi_only(d):
    fc = FeatureConfig(n_mels=20)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": 20, "hidden": 8, "layers": 1, "emb_dim": 4,
            "heads": ["mi"]}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    path = d / "mi_only.pt"
    save_model_dict(path, make_model_dict(net, conf, fc.to_dict(), CMVN(torch.zeros(40), torch.ones(40)),
                                          ["vocals", "accompaniment"]))
    return path


# id -> (what, build(d, good) -> (argv before the inputs, inputs), words the line must hold, where: the text
# that must name the culprit). argv "MODEL" is replaced by the good model unless the case names its own.
def _file_case(make, words):
    return lambda d, good: ([], [make(d)]), words


def _opt_case(opts, words):
    return lambda d, good: (opts, [_song(d)]), words


def _model_case(edit, words):
    return lambda d, good: (["--model", _model(d, good, edit)], [_song(d)]), words


CASES = {
    # inputs
    "missing_file": ("input does not exist", *_file_case(lambda d: d / "nope.wav", "no such file")),
    "empty_file": ("input of 0 bytes", *_file_case(lambda d: (d / "e.wav").write_bytes(b"") or d / "e.wav", "empty")),
    "truncated_wav": ("WAV cut in the middle", *_file_case(lambda d: _truncated(d, "wav"), "truncated")),
    "truncated_flac": ("FLAC cut in the middle", *_file_case(lambda d: _truncated(d, "flac"), "truncated")),
    "text_file": ("text named .wav", *_file_case(
        lambda d: (d / "t.wav").write_text("lyrics\n" * 50) and d / "t.wav", "not a readable audio file")),
    "nan_samples": ("NaN samples", *_file_case(lambda d: _samples(d, np.nan), "NaN or infinite")),
    "inf_samples": ("infinite samples", *_file_case(lambda d: _samples(d, np.inf), "NaN or infinite")),
    "zero_channels": ("WAV header with 0 channels", *_file_case(_zero_channels, "Channel count is zero")),
    "symlink_loop": ("symbolic link loop", *_file_case(_loop, "symbolic link loop")),
    "dangling_link": ("link to a missing file", *_file_case(
        lambda d: os.symlink(d / "gone.wav", d / "dl.wav") or d / "dl.wav", "broken symbolic link")),
    "directory_input": ("a folder given as input", *_file_case(
        lambda d: (d / "folder.wav").mkdir() or d / "folder.wav", "folder.wav")),
    "dot_name": ("input named ..wav (output would be OUT itself)", *_file_case(
        lambda d: _song(d).rename(d / "..wav"), "cannot name an output folder")),
    "same_output_name": ("two inputs with one output name", lambda d, good: (
        [], [_song(d), ((d / "x").mkdir() or write(d / "x" / "song.flac", (1, 4000), 16000))]), "would also be written"),
    # outputs
    "outdir_is_file": ("--outdir is a file", lambda d, good: (
        ["--outdir", (d / "f").write_text("x") and d / "f"], [_song(d)]), "cannot be written"),
    "outdir_under_file": ("--outdir below a file", lambda d, good: (
        ["--outdir", (d / "f").write_text("x") and d / "f" / "sep"], [_song(d)]), "cannot be written"),
    "output_exists": ("output folder exists, no --overwrite", lambda d, good: (
        [], [_song(d)] if (d / "out" / "song").mkdir(parents=True) is None else []), "use --overwrite"),
    "overwrite_users_folder": ("--overwrite on a folder sepkit did not make", lambda d, good: (
        ["--overwrite"], [_song(d)] if (d / "out" / "song").mkdir(parents=True) is None else []),
        "not made by sepkit-separate"),
    "overwrite_inputs_folder": ("--overwrite, --outdir the input's parent (input album/album.wav)", lambda d, good: (
        ["--overwrite", "--outdir", d], [(d / "album").mkdir() or write(d / "album" / "album.wav", (1, 4000), 16000)]),
        "not made by sepkit-separate"),
    "output_is_link": ("output name taken by a symbolic link", lambda d, good: (
        ["--overwrite"], [_linked_output(d)]), "a file or a link"),
    # options
    "segment_0": ("--segment 0", *_opt_case(["--segment", "0"], "--segment must be at least 1")),
    "overlap_1": ("--overlap 1", *_opt_case(["--overlap", "1"], "overlap")),
    "overlap_negative": ("--overlap -0.5", *_opt_case(["--overlap=-0.5"], "overlap")),
    "batch_0": ("--batch-size 0", *_opt_case(["--batch-size", "0"], "batch_size")),
    "subtype": ("--subtype that WAV lacks", *_opt_case(["--subtype", "MP3ISH"], "--subtype MP3ISH")),
    "device_cuda": ("--device cuda without CUDA", *_opt_case(["--device", "cuda"], "no CUDA device")),
    "device_unknown": ("--device potato", *_opt_case(["--device", "potato"], "not a torch device")),
    "misi_negative": ("--misi -1", *_opt_case(["--misi", "-1"], "misi_iters must be in")),
    "misi_huge": ("--misi 10^20", *_opt_case(["--misi", str(10**20)], "misi_iters must be in")),
    "misi_residual": ("--misi with --residual", *_opt_case(["--misi", "2", "--residual"], "residual")),
    "head_missing": ("--head dc of an MI-only model", lambda d, good: (
        ["--head", "dc", "--model", _mi_only(d)], [_song(d)]), "no trained dc head"),
    # model files
    "model_missing": ("--model does not exist", *_opt_case(["--model", "/nonexistent/m.pt"], "no such model")),
    "model_dir_without_pt": ("exp dir without model.pt", lambda d, good: (
        ["--model", (d / "exp").mkdir() or d / "exp"], [_song(d)]), "no model.pt"),
    "model_empty": ("model file of 0 bytes", lambda d, good: (
        ["--model", (d / "m.pt").write_bytes(b"") or d / "m.pt"], [_song(d)]), "empty model file"),
    "model_junk": ("model file of text", lambda d, good: (
        ["--model", (d / "m.pt").write_text("x" * 100) and d / "m.pt"], [_song(d)]), "not a loadable sepkit model"),
    "model_pickled_object": ("pickled nn.Module (code, not data)", lambda d, good: (
        ["--model", torch.save({"m": torch.nn.Linear(2, 2)}, d / "m.pt") or d / "m.pt"], [_song(d)]),
        "torch.nn.modules.linear.Linear"),
    "model_not_sepkit": ("a plain state dict", lambda d, good: (
        ["--model", torch.save({"w": torch.zeros(2)}, d / "m.pt") or d / "m.pt"], [_song(d)]), "not a sepkit model"),
    "model_n_fft_0": ("feat_conf.n_fft 0", *_model_case(_set("feat_conf", "n_fft", 0), "feat_conf.n_fft")),
    "model_hop_gt_window": ("hop_length > window", *_model_case(_set("feat_conf", "hop_length", 1024),
                                                                  "feat_conf.hop_length")),
    "model_fmin": ("fmin above fmax", *_model_case(_set("feat_conf", "fmin", 9000.0), "feat_conf.fmin")),
    "model_huge_n_fft": ("n_fft 10^12", *_model_case(_set("feat_conf", "n_fft", 10**12), "must be at most")),
    "model_n_freq": ("n_freq does not fit n_mels", *_model_case(_set("model_conf", "n_freq", 21), "model_conf.n_freq")),
    "model_unknown_net": ("unknown network type", *_model_case(_set("model_conf", "type", "transformer"),
                                                                "model_conf.type")),
    "model_cmvn_std_0": ("CMVN std of 0", *_model_case(lambda m: m["cmvn"]["std"].__setitem__(3, 0.0), "cmvn.std")),
    "model_nan_weight": ("NaN weight", *_model_case(lambda m: m["model_state"]["linear.weight"].view(-1).__setitem__(
        0, math.nan), "NaN or infinite")),
    "model_wrong_shape": ("weights that do not fit model_conf", *_model_case(_set("model_conf", "emb_dim", 5),
                                                                           "do not fit")),
    "model_train_list": ("train entry is a list", *_model_case(lambda m: m.__setitem__("train", [1]),
                                                                "train must be a mapping")),
    "model_source_traversal": ("source name ../../evil", *_model_case(_sources("../../evil"), "path separator")),
    "model_source_absolute": ("source name /abs/x", *_model_case(_sources("/abs/x"), "path separator")),
    "model_source_nul": ("source name with NUL", *_model_case(_sources("v\x00"), "NUL")),
    "model_one_source": ("one source only", *_model_case(lambda m: m.__setitem__("sources", ["v"]), "at least 2")),
}


@pytest.fixture(scope="module")
def good(exp_dir):  # noqa: F811
    return torch.load(exp_dir / "model.pt", weights_only=True)


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*"))


def test_fifty_kinds_of_bad_input():
    assert len(CASES) == 50


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clean_line(tmp_path, capsys, exp_dir, good, case):  # noqa: F811
    _, build, words = CASES[case]
    if case == "device_cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    d = tmp_path / "work"
    d.mkdir()
    opts, inputs = build(d, good)
    opts = [str(o) for o in opts]
    argv = ["--no-progress", "--quiet"] + (["--model", str(exp_dir)] if "--model" not in opts else []) + (
        ["--outdir", str(d / "out")] if "--outdir" not in opts else []) + opts + [str(i) for i in inputs]
    before = _tree(tmp_path)
    rc = separate_bin.main(argv)
    lines = capsys.readouterr().err.splitlines()
    assert rc in (1, 2) and len(lines) == 1, lines
    assert lines[0].startswith("sepkit-separate: error: ") and words in lines[0], (words, lines)
    assert "Traceback" not in lines[0] and len(lines[0]) < 1000
    new = sorted(set(_tree(tmp_path)) - set(before))
    if case == "same_output_name":  # the first of the two is separated, as it should be
        assert new == ["work/out", "work/out/song", f"work/out/song/{separate_bin.MANIFEST}",
                       "work/out/song/accompaniment.wav", "work/out/song/vocals.wav"]
    else:
        assert new == [] and _tree(tmp_path) == before  # nothing written, no empty folder, no temporary


def doc_rows():
    return [f"| `{case}` | {what} | {words} |" for case, (what, _, words) in CASES.items()]


def test_docs_table_lists_every_case():
    text = DOC.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert rows == doc_rows(), "docs/errors.md is stale: python tests/test_separate_bad_inputs.py prints its rows"


if __name__ == "__main__":
    print("\n".join(doc_rows()))
