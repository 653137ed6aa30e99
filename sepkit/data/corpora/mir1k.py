"""MIR-1K -> data dirs ``mir1k_train``, ``mir1k_valid``, ``mir1k_test``.

Official layout: ``ROOT/Wavfile/<singer>_<song>_<n>.wav``, 16 kHz stereo, **left =
accompaniment, right = singing voice**; the mixture is left + right (0 dB as distributed).

Split (the usual one of Huang et al. 2014): the clips of the training singers (default
``abjones`` and ``amy``) train, every clip of every other singer present tests. A validation part
is held out of the training singers *by song* (``<singer>_<song>``), so no song is in both
training and validation: ``round(valid_fraction * songs)`` songs (at least one), chosen with
``seed``. ``valid_fraction=0`` makes no validation set.
"""
import logging
import re
from pathlib import Path

from sepkit.data.corpora import CorpusError, audio_info, pick_held_out, write_sets
from sepkit.data.corpora.ikala import stereo_sets

logger = logging.getLogger(__name__)

PATTERN = re.compile(r"^(?P<singer>[^_]+)_(?P<song>\d+)_(?P<n>\d+)\.wav$")
LAYOUT = "ROOT/Wavfile/<singer>_<song>_<n>.wav, stereo, left = accompaniment, right = voice"
DEFAULT_TRAIN_SINGERS = ("abjones", "amy")


def scan(root):
    """Return ``[(utt, path, seconds, singer, song)]`` sorted by utt; every clip must be stereo."""
    folder = Path(root) / "Wavfile"
    if not folder.is_dir():
        raise CorpusError(f"{folder}: missing (expected the MIR-1K layout {LAYOUT})")
    rows = []
    for path in sorted(folder.iterdir()):
        match = PATTERN.match(path.name)
        if not match:
            if path.suffix.lower() == ".wav":
                logger.warning("%s: not a MIR-1K clip name (<singer>_<song>_<n>.wav), ignored", path)
            continue
        info = audio_info(path)
        if info.channels != 2:
            raise CorpusError(f"{path}: {info.channels} channel(s), MIR-1K clips are stereo "
                              "(left = accompaniment, right = voice)")
        singer = match["singer"]
        rows.append((path.stem, path.resolve(), info.frames / info.samplerate, singer, f"{singer}_{match['song']}"))
    if not rows:
        raise CorpusError(f"{root}: no MIR-1K clips found (expected {LAYOUT})")
    return rows


def _singers(value):
    if value is None:
        return list(DEFAULT_TRAIN_SINGERS)
    if isinstance(value, str):
        value = value.split(",")
    singers = [s.strip() for s in value if s.strip()]
    if not singers:
        raise CorpusError("--train-singers: no singer given")
    return singers


def prepare(root, outdir, *, train_singers=None, valid_fraction=0.1, seed=0, overwrite=False):
    """Write the MIR-1K sets; returns ``{set name: Path}``.

    Args:
        train_singers: list or comma-separated string of singers (default abjones,amy).
        valid_fraction: fraction of the training singers' songs held out for validation.
        seed: seed of the validation choice.
    """
    rows = scan(root)
    singers = _singers(train_singers)
    present = {r[3] for r in rows}
    absent = [s for s in singers if s not in present]
    if absent:
        raise CorpusError(f"{Path(root) / 'Wavfile'}: no clips of training singer(s) {', '.join(absent)} "
                          f"(singers present: {', '.join(sorted(present))})")
    train = [r for r in rows if r[3] in singers]
    test = [r for r in rows if r[3] not in singers]
    valid_songs = set(pick_held_out({r[4] for r in train}, valid_fraction, seed, "training songs",
                                         Path(root) / "Wavfile"))
    valid = [r for r in train if r[4] in valid_songs]
    train = [r for r in train if r[4] not in valid_songs]
    logger.info("MIR-1K: %d training clips, %d validation clips (songs %s), %d test clips",
                len(train), len(valid), ", ".join(sorted(valid_songs)) or "none", len(test))
    sets = {"mir1k_train": train, "mir1k_valid": valid, "mir1k_test": test}
    if not test:
        logger.warning("%s: no clips of singers other than %s; mir1k_test is not created",
                       Path(root) / "Wavfile", ",".join(singers))
    specs = {name: stereo_sets([r[:3] for r in chosen], voice_channel=1)
             for name, chosen in sets.items() if chosen}
    return write_sets(outdir, specs, overwrite=overwrite)
