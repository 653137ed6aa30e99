"""Resume checkpoints: ``exp/<tag>/checkpoints/ckpt-epoch<N>.pt``.

A checkpoint is a model file (:mod:`sepkit.model_io`: weights, model / feature / CMVN settings,
so :func:`sepkit.model_io.build_from_dict` rebuilds the network from it alone) plus a
``checkpoint`` entry with everything needed to continue as if never stopped::

    {"epoch": completed epochs, "step": optimiser steps, "optimizer": ..., "scheduler": ...,
     "curriculum": {"stages": [[frames, epochs|None], ...], "stage": i, "stage_epoch": n},
     "best": {"loss": ..., "epoch": ...}, "bad_epochs": n, "finished": None | reason,
     "rng": [per-rank RNG states], "world_size": W, "config": {...}, "history": [...]}

All plain data: it loads with ``torch.load(weights_only=True)``. Files are written to a temporary
name, flushed to disk, then renamed, so a SIGKILL leaves either the old set of checkpoints or the
new one; an unreadable file (e.g. from a full disk) is skipped when looking for the newest.

A run never deletes or replaces what it did not write itself: before training, the checkpoints
that lie beyond the epoch it starts from (all of them when it resumes from another directory's
file), and a ``model.pt`` saved after that epoch, are moved aside to
``<outdir>/checkpoints.old.<time>/`` (:func:`set_aside_superseded`), and the log says so. Only
``keep_last_n`` rotation removes checkpoints: the older ones of the run's own line of epochs.
"""
import logging
import os
import re
import tempfile
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

__all__ = ["CKPT_DIR", "checkpoint_entry", "ckpt_path", "list_checkpoints", "load_checkpoint", "find_latest",
           "save_atomic",
           "prune_checkpoints", "remove_stale_temporaries", "set_aside_superseded"]

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^ckpt-epoch(\d+)\.pt$")


def checkpoint_entry(st, stages, optimizer, scheduler, rng, world_size, conf):
    """The ``checkpoint`` entry (see the module docstring) from the trainer state dict ``st``."""
    return {
        "epoch": st["epoch"], "step": st["step"], "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "curriculum": {"stages": [list(s) for s in stages], "stage": st["stage"], "stage_epoch": st["stage_epoch"]},
        "best": {"loss": st["best_loss"], "epoch": st["best_epoch"]}, "bad_epochs": st["bad_epochs"],
        "finished": st["finished"], "rng": rng, "world_size": world_size, "config": dict(conf),
        "history": list(st["history"])}


def ckpt_path(outdir, epoch):
    return Path(outdir) / CKPT_DIR / f"ckpt-epoch{epoch}.pt"


def list_checkpoints(outdir):
    """``[(epoch, path)]`` of the checkpoint files present, newest first."""
    d = Path(outdir) / CKPT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), d / name) for name in os.listdir(d) if (m := _NAME.match(name))]
    return sorted(found, reverse=True)


def load_checkpoint(path):
    """Load a checkpoint (``weights_only=True``); raises ``ValueError`` naming the file if unusable."""
    path = Path(path)
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, empty, or not a torch file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: unreadable checkpoint ({first})") from None
    if not isinstance(d, dict) or "checkpoint" not in d or "model_state" not in d:
        raise ValueError(f"{path}: not a sepkit training checkpoint")
    return d


def find_latest(outdir):
    """Path of the newest checkpoint that loads, or None; unreadable newer files are logged and skipped."""
    for _, path in list_checkpoints(outdir):
        try:
            load_checkpoint(path)
        except ValueError as exc:
            logger.warning("skipping %s", exc)
            continue
        return path
    return None


def _os_error_in(exc):
    """The first OSError in ``exc``'s chain of causes and contexts (``exc`` itself included), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def save_atomic(obj, path):
    """``torch.save`` to a temporary file in the same dir, fsync, rename over ``path``, fsync the dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = _os_error_in(exc)  # torch.save's zip writer wraps a full disk in RuntimeErrors
        if cause is not None:
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from None
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # some file systems do not allow fsync on directories
        pass


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prune_checkpoints(outdir, current_epoch, keep_last_n):
    """Keep the ``keep_last_n`` newest checkpoints up to ``current_epoch``, remove the older ones.

    Newer files are left alone (this run did not write them; :func:`set_aside_superseded` moved
    those present at its start out of the way)."""
    kept = 0
    for epoch, path in list_checkpoints(outdir):
        if epoch > current_epoch:
            continue
        if kept < keep_last_n:
            kept += 1
        else:
            path.unlink(missing_ok=True)


def _model_epoch(path):
    """Epoch a ``model.pt`` was saved at, or None when it does not say (or does not load)."""
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        return int(d["train"]["epoch"])
    except Exception:  # unreadable, not a model file, or saved without the epoch
        return None


def set_aside_superseded(outdir, epoch, foreign=False):
    """Move the files a run starting after ``epoch`` would overwrite or orphan out of its way.

    Those are the checkpoints of epochs after ``epoch`` (every checkpoint when ``foreign``: the
    run resumes from another directory's file, or starts fresh over unreadable ones) and
    ``model.pt`` unless it was saved at or before ``epoch`` of this line of checkpoints. They go,
    under their own names, to a new ``<outdir>/checkpoints.old.<YYYYmmdd-HHMMSS>[.N]/``; nothing
    is deleted. Returns that directory, or None when nothing had to move.
    """
    outdir = Path(outdir)
    moving = [path for e, path in list_checkpoints(outdir) if foreign or e > epoch]
    model = outdir / "model.pt"
    if model.is_file():
        saved = None if foreign else _model_epoch(model)
        if saved is None or saved > epoch:
            moving.append(model)
    if not moving:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, n = outdir / f"{CKPT_DIR}.old.{stamp}", 1
    while True:
        try:
            dest.mkdir()
            break
        except FileExistsError:
            dest, n = outdir / f"{CKPT_DIR}.old.{stamp}.{n}", n + 1
    for path in moving:
        os.replace(path, dest / path.name)
    logger.warning("moved %s aside to %s: %s, this run would replace them (nothing deleted)",
                   ", ".join(p.name for p in moving), dest,
                   "not of the checkpoint this run starts from" if foreign else f"saved after epoch {epoch}")
    return dest


def remove_stale_temporaries(outdir):
    """Delete temporary files a killed run left behind (``.<name>.*.tmp``)."""
    for d in (Path(outdir), Path(outdir) / CKPT_DIR):
        if d.is_dir():
            for p in d.glob(".*.tmp"):
                p.unlink(missing_ok=True)
