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
import os
from pathlib import Path

import torch

import sepkit
from sepkit.audio import atomic_path

FORMAT = "sepkit-model/1"
MODEL_KEYS = ("format", "sepkit_version", "model_conf", "feat_conf", "cmvn", "sources", "train", "model_state")

__all__ = ["FORMAT", "ModelFileError", "make_model_dict", "save_model_dict", "load_model_dict", "resolve_model_path",
           "build_from_dict"]


class ModelFileError(RuntimeError):
    """A model file or directory that cannot be used; the message names the path."""


def make_model_dict(model, model_conf, feat_conf, cmvn, sources, train=None):
    """Collect a model and its settings into a model-file dict (see the module docstring)."""
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
    """``exp/<tag>`` directory -> its ``model.pt``; a file is returned as is."""
    path = Path(path)
    if path.is_dir():
        cand = path / "model.pt"
        if not cand.is_file():
            raise ModelFileError(f"{path}: no model.pt in this directory (has training finished?)")
        return cand
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file or directory")
    return path


def load_model_dict(path):
    """Load and check a model file (``weights_only=True``); raises :class:`ModelFileError`."""
    path = resolve_model_path(path)
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"{path}: empty model file")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        raise ModelFileError(f"{path}: not a loadable sepkit model ({msg[0] if msg else type(exc).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a sepkit model file (expected format {FORMAT})")
    missing = [k for k in MODEL_KEYS if k not in d]
    if missing:
        raise ModelFileError(f"{path}: model file lacks {missing}")
    return d


def build_from_dict(d, device="cpu"):
    """Rebuild ``(model, frontend, cmvn)`` from a model-file dict, model in eval mode on ``device``."""
    from sepkit.frontend import CMVN, FeatureConfig, Frontend
    from sepkit.nets import build_model

    model = build_model(d["model_conf"])
    model.load_state_dict(d["model_state"])
    frontend = Frontend(FeatureConfig.from_dict(d["feat_conf"]))
    return model.to(device).eval(), frontend.to(device), CMVN.from_dict(d["cmvn"])
