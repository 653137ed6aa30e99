"""Self-contained model files: weights plus every setting needed to separate with them.

A model file is a ``torch.save`` of plain data only (dicts, lists, numbers, strings, tensors), so
it loads with ``torch.load(..., weights_only=True)`` — safe for files from strangers::

    {"format": "sepkit-model/1", "sepkit_version": "...",
     "model_conf": {...build_model kwargs...}, "feat_conf": {...FeatureConfig...},
     "cmvn": {"mean": [...], "std": [...]}, "sources": ["vocals", "accompaniment"],
     "train": {...alpha, mi_loss, segment_frames, ...}, "model_state": {name: tensor}}

Training checkpoints are the same dict plus resume state; ``exp/<tag>/model.pt`` (the best model by
validation loss) and exported files are model files.
"""
import math
import os
import re
from pathlib import Path

import torch

import sepkit
from sepkit.audio import atomic_path, path_problem
from sepkit.names import check_names

FORMAT = "sepkit-model/1"
# Upper bounds of sizes read from a model file (far above any real setting; a stranger's 10**12 is refused,
# not allocated).
_FEAT_MAX = {"sample_rate": 768000, "n_fft": 1 << 16, "hop_length": 1 << 16, "n_mels": 4096}
_NET_MAX = {"input_dim": 1 << 16, "n_freq": 1 << 16, "hidden": 1 << 14, "layers": 64, "emb_dim": 1024, "n_sources": 64}
MODEL_KEYS = ("format", "sepkit_version", "model_conf", "feat_conf", "cmvn", "sources", "train", "model_state")

__all__ = ["FORMAT", "ModelFileError", "make_model_dict", "save_model_dict", "load_model_dict", "resolve_model_path",
           "check_model_dict", "build_from_dict"]


class ModelFileError(RuntimeError):
    """A model file or directory that cannot be used; the message names the path."""


def make_model_dict(model, model_conf, feat_conf, cmvn, sources, train=None):
    """Collect a model and its settings into a model-file dict (see the module docstring)."""
    sources = check_names(list(sources), "sources", at_least=2)  # they become file names wherever the model goes
    state = model.module.state_dict() if hasattr(model, "module") else model.state_dict()
    return {
        "format": FORMAT,
        "sepkit_version": sepkit.__version__,
        "model_conf": dict(model_conf),
        "feat_conf": dict(feat_conf),
        "cmvn": cmvn.to_dict() if hasattr(cmvn, "to_dict") else dict(cmvn),
        "sources": list(sources),
        "train": dict(train or {}),
        "model_state": {k: v.detach().cpu().clone() for k, v in state.items()},
    }


def save_model_dict(path, d):
    """Write atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(d, tmp)


def resolve_model_path(path):
    """``exp/<tag>`` directory or hub folder -> its ``model.pt``; a file is returned as is (hub ids:
    :func:`sepkit.hub.resolve_model`)."""
    path = Path(path)
    problem = path_problem(path)
    if problem is not None:
        raise ModelFileError(f"{path}: {'no such model file or directory' if problem == 'no such file' else problem}")
    if path.is_dir():
        cand = path / "model.pt"
        if not cand.is_file():
            problem = path_problem(cand)
            if problem not in (None, "no such file"):
                raise ModelFileError(f"{cand}: {problem}")
            if (path / "README.md").is_file() and not (path / "train.log").exists():  # a model card, no training
                raise ModelFileError(f"{path}: hub folder without its model file: no model.pt in this directory "
                                     "(an incomplete download or upload?)")
            raise ModelFileError(f"{path}: no model.pt in this directory (has training finished?)")
        return cand
    return path


def load_model_dict(path):
    """Load and check a model file (``weights_only=True``); raises :class:`ModelFileError`.

    ``path``: a model file, an ``exp/<tag>`` or hub folder, or a hub id ``owner/name[@revision]``
    (:func:`sepkit.hub.resolve_model`).
    """
    from sepkit.hub import resolve_model

    spec, path = path, resolve_model(path)
    if os.path.lexists(spec):
        return _load_checked(path)
    try:  # from the hub: the error names the id, then the cached file
        return _load_checked(path)
    except ModelFileError as exc:
        raise ModelFileError(f"hub model {spec}: {exc}") from None


def _load_checked(path):
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"{path}: empty model file")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path}: not a loadable sepkit model ({_load_error(exc)})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a sepkit model file (expected format {FORMAT})")
    missing = [k for k in MODEL_KEYS if k not in d]
    if missing:
        raise ModelFileError(f"{path}: model file lacks {missing}")
    check_model_dict(d, path)
    return d


def _load_error(exc):
    """One line for a failed ``torch.load``, without torch's advice to load the file unsafely."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if "WeightsUnpickler error" in text:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            return f"it holds a Python object ({found[1]}), not plain data; refusing to unpickle it"
        detail = [ln.strip() for ln in text.split("WeightsUnpickler error:", 1)[1].splitlines() if ln.strip()]
        return f"not a file of plain data{' (' + detail[0] + ')' if detail else ''}"
    first = (text.splitlines() or [type(exc).__name__])[0].split(". ")[0]
    if "weights_only" in first:
        return f"{type(exc).__name__} while unpickling"
    return first


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer()


def check_model_dict(d, path):
    """Raise :class:`ModelFileError` naming ``path`` and the key for settings or weights that cannot work.

    Checks the feature settings (positive sizes, window within the FFT, mel band), that the network
    settings fit them and the sources, and that CMVN statistics and every weight are finite.
    """
    from sepkit.frontend import FeatureConfig
    from sepkit.nets import MODELS

    def bad(key, why):  # one line: keys and values of a stranger's file may hold anything
        raise ModelFileError(f"{path}: {one_line(f'{key} {why}')}")

    for key in ("feat_conf", "model_conf", "cmvn", "model_state", "train"):
        if not isinstance(d[key], dict):
            bad(key, f"must be a mapping, got {type(d[key]).__name__}")
    defaults = FeatureConfig().to_dict()
    for key in sorted(set(d["feat_conf"]) - set(defaults)):
        bad(f"feat_conf.{key}", f"is not a feature setting (known: {', '.join(defaults)})")
    fc = {**defaults, **d["feat_conf"]}
    for key, default in defaults.items():
        v = fc[key]
        ok = isinstance(v, str) if isinstance(default, str) else \
            isinstance(v, bool) if isinstance(default, bool) else _is_int(v) if isinstance(default, int) else (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
        if not ok:
            bad(f"feat_conf.{key}", f"must be {type(default).__name__}, got {v!r}")
    for key in ("sample_rate", "n_fft", "hop_length", "n_mels"):
        if fc[key] <= 0:
            bad(f"feat_conf.{key}", f"must be positive, got {fc[key]!r}")
        if fc[key] > _FEAT_MAX[key]:  # a window of 10**12 samples is a memory bomb, not a setting
            bad(f"feat_conf.{key}", f"must be at most {_FEAT_MAX[key]}, got {fc[key]!r}")
    if not 0 <= fc["win_length"] <= fc["n_fft"]:
        bad("feat_conf.win_length", f"must be 0 (= n_fft) or at most n_fft = {fc['n_fft']}, got {fc['win_length']!r}")
    win = fc["win_length"] or fc["n_fft"]
    if fc["hop_length"] > win:  # frames with gaps between them: the inverse STFT cannot rebuild the signal
        bad("feat_conf.hop_length", f"must be at most the window length {win}, got {fc['hop_length']!r}")
    fmax = fc["fmax"] or fc["sample_rate"] / 2
    if not 0 <= fc["fmin"] < fmax:  # an empty mel band: every filter is zero
        bad("feat_conf.fmin", f"must be in [0, fmax = {fmax!r}), got {fc['fmin']!r}")
    feat = FeatureConfig.from_dict(fc)
    if feat.check():
        bad("feat_conf", feat.check())
    input_dim = feat.input_dim

    mc = d["model_conf"]
    if mc.get("type", "chimera") not in MODELS:
        bad("model_conf.type", f"{mc.get('type')!r} is not a known network (known: {', '.join(MODELS)})")
    for key in ("input_dim", "n_freq", "hidden", "layers", "emb_dim", "n_sources"):
        if key in mc and not (_is_int(mc[key]) and mc[key] > 0):
            bad(f"model_conf.{key}", f"must be a positive integer, got {mc[key]!r}")
        if key in mc and mc[key] > _NET_MAX[key]:
            bad(f"model_conf.{key}", f"must be at most {_NET_MAX[key]}, got {mc[key]!r}")
    la = mc.get("lookahead", 0)
    if not (_is_int(la) and 0 <= la <= 1000):
        bad("model_conf.lookahead", f"must be an integer number of frames in [0, 1000], got {la!r}")
    if mc.get("input_dim") != input_dim:
        bad("model_conf.input_dim", f"is {mc.get('input_dim')!r} but the features (feat_conf) have {input_dim}")
    if mc.get("mask_bins", "mel") == "linear":
        if mc.get("n_freq") != feat.n_linear:
            bad("model_conf.n_freq", f"is {mc.get('n_freq')!r} but linear-bin masks of n_fft {fc['n_fft']} have "
                                     f"{feat.n_linear}")
    elif mc.get("n_freq", 150) != fc["n_mels"]:
        bad("model_conf.n_freq", f"is {mc.get('n_freq', 150)!r} but feat_conf.n_mels is {fc['n_mels']}")
    sources = d["sources"]
    try:  # names that become output paths (<outdir>/<input>/<source>.wav): untrusted input
        check_names(sources, "sources", at_least=2)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    if mc.get("n_sources", 2) != len(sources):
        bad("model_conf.n_sources", f"is {mc.get('n_sources', 2)!r} but the model file names {len(sources)} sources")
    if d.get("dc_centers") is not None:  # optional: per-source DC anchors (sepkit.cluster.source_anchor_sums)
        try:
            cent = torch.as_tensor(d["dc_centers"], dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            bad("dc_centers", "is not a list of lists of numbers")
        want = (len(sources), mc.get("emb_dim", 20))
        if tuple(cent.shape) != want or not torch.isfinite(cent).all():
            bad("dc_centers", f"must be {want[0]} x {want[1]} finite numbers (sources x emb_dim), got shape "
                              f"{tuple(cent.shape)}")

    for key in ("mean", "std"):
        try:
            v = torch.as_tensor(d["cmvn"][key], dtype=torch.float64)
        except (KeyError, TypeError, ValueError, RuntimeError):
            bad(f"cmvn.{key}", "is missing or not a list of numbers")
        if v.shape != (input_dim,):
            bad(f"cmvn.{key}", f"has shape {tuple(v.shape)}, the features have {input_dim} dimensions")
        if not torch.isfinite(v).all() or key == "std" and not (v > 0).all():
            bad(f"cmvn.{key}", "has NaN, infinite" + (" or non-positive" if key == "std" else "") + " values")
    seg = d["train"].get("segment_frames")  # the separator's default segment length
    if seg is not None and not (_is_int(seg) and 0 < seg <= 10**6 or isinstance(seg, (list, tuple)) and all(
            _is_int(v) and 0 < v <= 10**6 for v in seg)):
        bad("train.segment_frames", f"must be a positive number of frames (or a list of them), got {seg!r}")
    for name, t in d["model_state"].items():
        if not isinstance(t, torch.Tensor):
            bad(f"model_state.{name}", f"is not a tensor ({type(t).__name__})")
        if t.is_floating_point() and not torch.isfinite(t).all():
            n = int((~torch.isfinite(t)).sum())
            bad(f"parameter {name}", f"has {n} NaN or infinite value{'s' if n > 1 else ''} (a diverged training run?)")
    _check_weights_fit(d, bad)


def _check_weights_fit(d, bad):
    """The weights' names and shapes against the network that model_conf builds (on the meta device: no memory)."""
    from sepkit.nets import build_model

    try:
        with torch.device("meta"):
            want = build_model(d["model_conf"]).state_dict()
    except (TypeError, ValueError, RuntimeError) as exc:
        bad("model_conf", f"cannot build a network ({(str(exc).strip().splitlines() or [type(exc).__name__])[0]})")
    have = d["model_state"]
    missing, extra = [k for k in want if k not in have], [k for k in have if k not in want]
    if missing or extra:
        bad("model_state", f"does not fit model_conf: {len(missing)} weight(s) missing (e.g. {missing[:1]}), "
                           f"{len(extra)} unexpected (e.g. {extra[:1]})")
    for k, t in want.items():
        if tuple(have[k].shape) != tuple(t.shape) or have[k].dtype.is_floating_point != t.dtype.is_floating_point:
            bad(f"parameter {k}", f"has shape {tuple(have[k].shape)} ({have[k].dtype}), model_conf needs "
                                  f"{tuple(t.shape)} ({t.dtype}): the settings do not fit the weights")


def one_line(text, limit=300):
    """``text`` with control characters escaped and cut to ``limit`` characters: safe for one error line."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def build_from_dict(d, device="cpu"):
    """Rebuild ``(model, frontend, cmvn)`` from a model-file dict, model in eval mode on ``device``."""
    from sepkit.frontend import CMVN, FeatureConfig, Frontend
    from sepkit.nets import build_model

    model = build_model(d["model_conf"])
    model.load_state_dict(d["model_state"])
    frontend = Frontend(FeatureConfig.from_dict(d["feat_conf"]))
    return model.to(device).eval(), frontend.to(device), CMVN.from_dict(d["cmvn"])
