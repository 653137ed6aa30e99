"""Networks and their registries: ``build_model(conf)`` builds a model from a plain dict (YAML).

Three registries (:class:`sepkit.registry.Registry`), filled by the modules of this package and by
plugins (docs/extending.md):

* :data:`BODIES`: the network body, ``cls(input_dim, hidden, layers, dropout, batch_norm)``, a module
  ``(B, T, input_dim), lengths -> (B, T, out_dim)`` with an ``out_dim`` attribute (training key ``body``);
  an entry registered with ``causal=True`` is also given ``lookahead=L`` (frames: output frame t sees input
  frames <= t + L) and can run block by block (``init_state``, ``step``; :mod:`sepkit.online`);
* :data:`HEADS`: a head on the ``Z`` tensor ``(B, T, F, D)``,
  ``cls(n_freq=, emb_dim=, n_sources=, activation=)``; its setting ``output`` is the key of the
  network's output dict it fills (``embedding``: trained by the DC objective, ``mask``: by the MI one);
* :data:`MODELS`: the network, ``cls(**model_conf)`` (the ``type`` of a model file's ``model_conf``).

A model file only names entries: loading one never imports code, so a network with a plugin's body
loads where that plugin has been imported.
"""
from sepkit.registry import Registry

# Defined before the modules below are imported: they register into them.
BODIES = Registry("body", causal=False)
HEADS = Registry("head", output=None)
MODELS = Registry("model type")

from sepkit.nets.chimera import ChimeraNet  # noqa: E402  (registers chimera, and imports the bodies and heads)

__all__ = ["BODIES", "ChimeraNet", "HEADS", "MODELS", "build_model"]


def build_model(conf):
    """Build a network from ``{"type": "chimera", ...keyword arguments...}``."""
    conf = dict(conf)
    return MODELS.get(conf.pop("type", "chimera"))(**conf)
