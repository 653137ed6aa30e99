"""Models on the Hugging Face hub: the folder layout and resolving ``--model`` to a local model file.

A hub folder (the repository of one model, as asteroid, ESPnet and SpeechBrain publish theirs) holds
three files, written by ``sepkit-pack`` (:mod:`sepkit.bin.pack_hub`)::

    model.pt      the exported model file (sepkit-model/1: plain data, loaded with weights_only=True)
    config.yaml   its settings as plain YAML (sources, model_conf, feat_conf, train), for readers
    README.md     the model card: training data and licence, recipe and command, results table

A model is named in :func:`resolve_model` (``sepkit-separate --model``, ``Separator.from_pretrained``,
``sepkit-export``) by, in this order:

1. an existing file: that model file;
2. an existing folder: an ``exp/<tag>`` directory or a hub folder, both through their ``model.pt``;
3. ``owner/name`` or ``owner/name@revision`` (a branch, tag or commit): a hub id, fetched with
   ``huggingface_hub.snapshot_download`` (only the three files above), which keeps its local cache
   (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``) and with
   ``HF_HUB_OFFLINE=1`` reads only that cache;
4. anything else: a one-line :class:`~sepkit.model_io.ModelFileError`.

Only ``model.pt`` is ever loaded, with ``torch.load(weights_only=True)`` and every check of
:func:`~sepkit.model_io.load_model_dict`: a hub folder from a stranger is as untrusted as a file,
and nothing in it is executed (``config.yaml`` and ``README.md`` are not even read to separate).
"""
import os
import re
from pathlib import Path

from sepkit.names import name_problem

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.yaml"
CARD_FILE = "README.md"
HUB_FILES = (MODEL_FILE, CONFIG_FILE, CARD_FILE)
PACK_MARK = "<!-- written by sepkit-pack -->"  # in every card sepkit-pack writes: a folder --overwrite may replace

_HUB_ID = re.compile(r"(?P<owner>[^/@]+)/(?P<name>[^/@]+)(?:@(?P<revision>[^@]+))?\Z")

__all__ = ["MODEL_FILE", "CONFIG_FILE", "CARD_FILE", "HUB_FILES", "PACK_MARK", "parse_hub_id", "resolve_model",
           "download"]


def parse_hub_id(spec):
    """``(repo_id, revision or None)`` when ``spec`` reads as ``owner/name[@revision]``, else ``None``.

    Owner, name and each ``/`` part of the revision must be safe path components (:mod:`sepkit.names`):
    the library joins them into cache paths.
    """
    m = _HUB_ID.match(str(spec))
    if not m:
        return None
    parts = [m["owner"], m["name"]] + (m["revision"].split("/") if m["revision"] else [])
    if any(name_problem(p) is not None for p in parts):
        return None
    return f"{m['owner']}/{m['name']}", m["revision"]


def _env_cache_dir():
    """The hub cache named by the environment now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _env_offline():
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def download(spec, repo_id, revision=None):
    """The local path of ``model.pt`` of hub model ``repo_id`` (fetched or from the cache); one-line errors."""
    from sepkit.model_io import ModelFileError, one_line

    def fail(why):
        raise ModelFileError(one_line(f"{spec}: {why}"))

    try:
        import huggingface_hub
        import huggingface_hub.constants
        from huggingface_hub import errors
    except ImportError:
        fail("no such model file or folder; a hub id needs huggingface_hub (pip install huggingface_hub)")
    import sepkit

    offline = _env_offline()
    cache = _env_cache_dir()
    where = f"the local hub cache {cache or huggingface_hub.constants.HF_HUB_CACHE}"
    rev = f" revision {revision}" if revision else ""
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=list(HUB_FILES), cache_dir=cache, local_files_only=offline,
            library_name="sepkit", library_version=sepkit.__version__)
    except errors.RevisionNotFoundError:
        fail(f"hub model {repo_id} has no{rev}")
    except errors.RepositoryNotFoundError:  # also gated or private without a token
        fail(f"no such model file or folder, and no hub model {repo_id} (or it is private: log in with `hf auth "
             "login`)")
    except errors.LocalEntryNotFoundError:  # offline, or the hub cannot be reached, and not in the cache
        how = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        fail(f"no such model file or folder, and hub model {repo_id}{rev} is not in {where} ({how})")
    except errors.HFValidationError as exc:
        fail(f"not a valid hub id ({str(exc).splitlines()[0] if str(exc) else 'HFValidationError'})")
    except (errors.HfHubHTTPError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        fail(f"cannot fetch hub model {repo_id}{rev} ({first})")
    path = Path(folder) / MODEL_FILE
    if not (os.path.lexists(path) and path.is_file()):
        fail(f"hub model {repo_id}{rev} has no {MODEL_FILE} (not a sepkit model repository, or an incomplete "
             "download)")
    return path


def resolve_model(spec):
    """A local model file for ``spec``: a file, an exp or hub folder (its model.pt) or a hub id (module docstring).

    Raises :class:`~sepkit.model_io.ModelFileError` with one line naming ``spec`` and the problem.
    """
    from sepkit.audio import path_problem
    from sepkit.model_io import ModelFileError, resolve_model_path

    path = Path(spec)
    if path_problem(path) != "no such file" or os.path.islink(path):  # there (or unreadable, a broken link)
        return resolve_model_path(path)
    hub = parse_hub_id(spec)
    if hub is None:
        raise ModelFileError(f"{spec}: no such model file, folder or hub id (owner/name[@revision])")
    return download(spec, *hub)
