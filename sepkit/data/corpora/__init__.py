"""Corpus preparation: official corpus layouts -> Kaldi-style data dirs.

Every corpus module exposes ``prepare(root, outdir, *, overwrite=False, ...) -> {set: Path}``
which scans ``root`` (the corpus in its official layout), checks every file it will point to, and
only then writes one data dir per set under ``outdir`` (see :mod:`sepkit.data.datadir`). Sources
are ``vocals`` then ``accompaniment`` (:data:`SOURCES`), except MUSDB18 with ``stems=4`` (``vocals``,
``drums``, ``bass``, ``other``) and a folder corpus (the sources its description names); audio specs
point at the corpus files by absolute path, so no audio is copied (MUSDB18
``.stem.mp4`` is the exception: it is decoded once to wav).

``CORPORA`` maps a corpus name to its ``prepare`` function; ``sepkit.bin.prepare_data`` is the
command line front end. The small helpers below are shared by the corpus modules.
"""
import json
import logging
import re
from pathlib import Path

import soundfile as sf

from sepkit.data.datadir import DataDir, DataDirError

logger = logging.getLogger(__name__)

__all__ = ["CORPORA", "CorpusError", "SOURCES", "utt_id", "unique_utt_ids", "audio_info",
           "spec_json", "write_sets", "check_targets", "pick_held_out"]

SOURCES = ("vocals", "accompaniment")


class CorpusError(Exception):
    """A corpus that does not match its expected layout; the message names the path at fault."""


def utt_id(name):
    """Utterance id from a song/track name: whitespace runs -> ``_`` (ids may not contain spaces)."""
    return re.sub(r"\s+", "_", name.strip())


def unique_utt_ids(names, where):
    """``{name: utt id}`` for ``names``; two names that sanitise to one id are an error."""
    out, seen = {}, {}
    for name in names:
        utt = utt_id(name)
        if not utt:
            raise CorpusError(f"{where}: cannot make an utterance id from the name {name!r}")
        if utt in seen:
            raise CorpusError(f"{where}: {seen[utt]!r} and {name!r} give the same utterance id {utt!r}")
        seen[utt] = name
        out[name] = utt
    return out


def audio_info(path):
    """``soundfile.info`` of ``path``; a missing or unreadable file is a one-line :class:`CorpusError`."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: missing")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile messages are multi-line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorpusError(f"{path}: not a readable audio file ({first})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise CorpusError(f"{path}: audio has no samples")
    return info


def spec_json(**fields):
    """One-line JSON audio spec (``{"path": ..., "channel": ...}`` or ``{"sum": [...]}``)."""
    return json.dumps(fields, ensure_ascii=False)


def check_targets(outdir, names, overwrite):
    """Refuse (before anything is written) to overwrite existing non-empty data dirs."""
    for name in names:
        target = Path(outdir) / name
        if target.exists() and not target.is_dir():
            raise CorpusError(f"{target}: exists and is not a directory")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise CorpusError(f"{target}: data dir exists (use --overwrite to replace it)")


def write_sets(outdir, sets, overwrite=False):
    """Write data dirs ``{name: (wav, {source: scp}, utt2dur)}`` under ``outdir``.

    All targets are checked first, so a refusal leaves every existing dir untouched.
    Returns ``{name: Path}``.
    """
    check_targets(outdir, sets, overwrite)
    out = {}
    for name, (wav, sources, utt2dur) in sets.items():
        try:
            DataDir.create(Path(outdir) / name, wav, sources, utt2dur=utt2dur, overwrite=overwrite)
        except DataDirError as exc:
            raise CorpusError(str(exc)) from None
        logger.info("wrote %s (%d utterances, %.2f h)", Path(outdir) / name, len(wav),
                    sum(utt2dur.values()) / 3600)
        out[name] = Path(outdir) / name
    return out


def pick_held_out(groups, fraction, seed, what, where):
    """Choose ``round(fraction * len(groups))`` groups (at least 1 when fraction > 0), seeded.

    Groups (songs, tracks) are sorted first, so the choice depends only on the set of groups
    and the seed. At least one group is always left for training.
    """
    import numpy as np

    groups = sorted(groups)
    if not 0 <= fraction < 1:
        raise CorpusError(f"--valid-fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return []
    count = max(1, int(round(fraction * len(groups))))
    if count >= len(groups):
        raise CorpusError(f"{where}: cannot hold out {count} of {len(groups)} {what} for validation "
                          "and keep one for training (--valid-fraction 0 makes no validation set)")
    rng = np.random.default_rng(seed)
    return sorted(groups[i] for i in rng.choice(len(groups), size=count, replace=False))


# Imported last: the corpus modules use the helpers above.
from sepkit.data.corpora import dsd100, folder, ikala, mir1k, musdb18  # noqa: E402

CORPORA = {
    "dsd100": dsd100.prepare,
    "folder": folder.prepare,
    "ikala": ikala.prepare,
    "mir1k": mir1k.prepare,
    "musdb18": musdb18.prepare,
}
