"""Networks and their registry: ``build_model(conf)`` builds a model from a plain dict (YAML)."""
from sepkit.nets.chimera import ChimeraNet

MODELS = {"chimera": ChimeraNet}

__all__ = ["ChimeraNet", "MODELS", "build_model"]


def build_model(conf):
    """Build a network from ``{"type": "chimera", ...keyword arguments...}``."""
    conf = dict(conf)
    kind = conf.pop("type", "chimera")
    if kind not in MODELS:
        raise ValueError(f"unknown model type {kind!r}; known: {sorted(MODELS)}")
    return MODELS[kind](**conf)
