"""Property test: a model file from a stranger is refused in one line or separates strictly under --outdir.

Hypothesis draws hostile model dicts from a good tiny one (names with ``/``, ``..``, NUL, absolute
paths, huge strings, wrong types, NaN/inf weights, wrong shapes, missing or extra keys) and runs
``sepkit-separate`` on each, in process. Whatever the file holds, either the exit status is 1 with
exactly one ``sepkit-separate: error:`` line naming the model, and nothing is written anywhere; or
the exit status is 0 and the only new files are ``OUT/song/<source>.wav`` (and the folder's manifest).
``derandomize=True``: the same 1000 cases on every run (CI must not be flaky), seeded by the test's name.
"""
import contextlib
import io
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sepkit.bin import separate as separate_bin  # noqa: E402
from sepkit.frontend import CMVN, FeatureConfig  # noqa: E402
from sepkit.model_io import make_model_dict  # noqa: E402
from sepkit.nets import ChimeraNet  # noqa: E402

N_CASES = 1000
EVIL_NAMES = ["../evil", "../../evil", "/tmp/sepkit-evil", "/", ".", "..", "a/../../b", "a\x00b", "\x00", "",
              " ", "x" * 5000, "..\\evil", "C:\\evil", ".hidden", "vocals\n", "-rf", "~", "$HOME", "*", "a\tb",
              "vocals", "accompaniment", "ü", "\u202e", "CON", "a" * 64, "a" * 65]


def _good():
    torch.manual_seed(0)
    fc = FeatureConfig(n_mels=8, n_fft=256, hop_length=64)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": 8, "hidden": 4, "layers": 1, "emb_dim": 2}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    cmvn = CMVN(torch.zeros(fc.input_dim) - 3.0, torch.ones(fc.input_dim))
    return make_model_dict(net, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"], {"segment_frames": 20})


GOOD = _good()
values = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70), st.sampled_from([0, 1, 2, 3, -1, 10**12, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), st.sampled_from(EVIL_NAMES),
    st.none(), st.booleans(), st.lists(st.integers(-3, 300), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                          st.integers(), max_size=2))
names = st.one_of(st.sampled_from(EVIL_NAMES), st.text(max_size=12), st.integers(), st.none())


def _mapping(d, key):
    """``d[key]`` as a dict to edit further (a good one again where an earlier edit replaced it by a non-mapping)."""
    return dict(d[key]) if isinstance(d.get(key), dict) else dict(GOOD[key])


@st.composite
def hostile(draw):
    d = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in GOOD.items()}
    d["model_state"] = dict(GOOD["model_state"])
    d["cmvn"] = {k: list(v) for k, v in GOOD["cmvn"].items()}
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["sources", "sources", "sources", "model_conf", "feat_conf", "train", "cmvn",
                                     "weight", "top"]))
        if kind == "sources":  # hostile lists and values, and odd but harmless names (which must separate)
            d["sources"] = draw(st.one_of(st.lists(names, min_size=0, max_size=4), values,
                                          *[st.lists(t, min_size=2, max_size=2, unique=True) for t in (
                                              st.text(min_size=1, max_size=70),
                                              st.from_regex(r"[\wü][\w.+-]{0,20}", fullmatch=True))]))
        elif kind in ("model_conf", "feat_conf", "train"):
            keys = sorted(GOOD[kind]) + ["segment_frames", "type", "heads", "mask_bins", "n_sources", "x\ny"]
            if isinstance(d.get(kind), dict):
                d[kind] = {**d[kind], draw(st.sampled_from(keys)): draw(values)}
            else:
                d[kind] = draw(values)
        elif kind == "cmvn":
            d["cmvn"] = {**_mapping(d, "cmvn"), draw(st.sampled_from(["mean", "std"])): draw(st.one_of(
                values, st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=60)))}
        elif kind == "weight":
            d["model_state"] = _mapping(d, "model_state")
            name = draw(st.sampled_from(sorted(GOOD["model_state"])))
            t = GOOD["model_state"][name].clone()
            how = draw(st.sampled_from(["nan", "inf", "shape", "drop", "extra", "int", "text"]))
            if how in ("nan", "inf"):
                t.view(-1)[draw(st.integers(0, t.numel() - 1))] = math.nan if how == "nan" else -math.inf
                d["model_state"][name] = t
            elif how == "shape":
                d["model_state"][name] = torch.zeros(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
            elif how == "drop":
                d["model_state"].pop(name, None)
            elif how == "extra":
                d["model_state"][draw(names) if draw(st.booleans()) else "extra.weight"] = torch.zeros(2)
            elif how == "int":
                d["model_state"][name] = t.to(torch.int64)
            else:
                d["model_state"][name] = "not a tensor"
        else:
            key = draw(st.sampled_from(sorted(GOOD)))
            if draw(st.booleans()):
                d.pop(key, None)
            else:
                d[key] = draw(values)
    return d


@pytest.fixture(scope="module")
def arena(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    sf.write(root / "song.wav", (np.random.default_rng(0).standard_normal(1600) * 0.1).astype(np.float32), 16000)
    return root


def _files(root):
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@settings(max_examples=N_CASES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(d=hostile())
def test_hostile_model_refused_or_confined(arena, d):
    model, out = arena / "model.pt", arena / "out"
    if out.exists():
        shutil.rmtree(out)
    try:
        torch.save(d, model)
    except Exception as exc:  # not even storable: nothing to separate
        event(f"not storable: {type(exc).__name__}")
        return
    before = _files(arena)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = separate_bin.main(["--no-progress", "--quiet", "--dtype", "float32", "--model", str(model),
                                "--outdir", str(out / "sep"), str(arena / "song.wav")])
    lines = err.getvalue().splitlines()
    new = _files(arena) - before
    event("separated" if rc == 0 else "refused")
    if rc == 0:
        assert lines == []
        sources = d["sources"]
        assert new == {"out", "out/sep", "out/sep/song", "out/sep/song/.sepkit-separate.json",
                       *(f"out/sep/song/{s}.wav" for s in sources)}
        for s in sources:  # strictly under OUT: the resolved path too
            assert (out / "sep" / "song" / f"{s}.wav").resolve().parent == (out / "sep" / "song").resolve()
    else:
        assert rc == 1 and len(lines) == 1, lines
        assert lines[0].startswith("sepkit-separate: error: ") and (str(model) in lines[0] or "song.wav" in lines[0])
        assert len(lines[0]) < 2100 and "Traceback" not in lines[0]
        assert new == set(), new
    assert not Path("/tmp/sepkit-evil.wav").exists() and not (arena.parent / "evil.wav").exists()
    assert not any(p.name.startswith("evil") for p in arena.parent.iterdir())
    assert os.getcwd() != "/"  # a chdir somewhere would be a bug of its own
