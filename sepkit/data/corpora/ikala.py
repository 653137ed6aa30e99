"""iKala (public part) -> data dir ``ikala``.

Official layout: ``ROOT/Wavfile/<id>_<verse|chorus>.wav``, 44.1 kHz stereo, **left = music
(accompaniment), right = singing voice**. The mixture is the sum of the two channels
(``{"path": ..., "channel": "sum"}``), vocals channel 1, accompaniment channel 0, so the mixture
is exactly the sum of the sources. Utterance id: the file name without ``.wav``.
"""
import logging
import re
from pathlib import Path

from sepkit.data.corpora import CorpusError, audio_info, spec_json, write_sets

logger = logging.getLogger(__name__)

PATTERN = re.compile(r"^(\d+)_(verse|chorus)\.wav$")
LAYOUT = "ROOT/Wavfile/<id>_<verse|chorus>.wav, stereo, left = music, right = vocals"


def scan(root):
    """Return ``[(utt, path, seconds)]`` sorted by utt; every clip must be stereo."""
    folder = Path(root) / "Wavfile"
    if not folder.is_dir():
        raise CorpusError(f"{folder}: missing (expected the iKala layout {LAYOUT})")
    rows = []
    for path in sorted(folder.iterdir()):
        if not PATTERN.match(path.name):
            if path.suffix.lower() == ".wav":
                logger.warning("%s: not an iKala clip name (<id>_<verse|chorus>.wav), ignored", path)
            continue
        info = audio_info(path)
        if info.channels != 2:
            raise CorpusError(f"{path}: {info.channels} channel(s), iKala clips are stereo "
                              "(left = music, right = vocals)")
        rows.append((path.stem, path.resolve(), info.frames / info.samplerate))
    if not rows:
        raise CorpusError(f"{root}: no iKala clips found (expected {LAYOUT})")
    return rows


def stereo_sets(rows, voice_channel):
    """Specs for stereo clips holding one source per channel: ``(wav, sources, utt2dur)``."""
    wav, vocals, accomp, utt2dur = {}, {}, {}, {}
    for utt, path, seconds in rows:
        wav[utt] = spec_json(path=str(path), channel="sum")
        vocals[utt] = spec_json(path=str(path), channel=voice_channel)
        accomp[utt] = spec_json(path=str(path), channel=1 - voice_channel)
        utt2dur[utt] = seconds
    return wav, {"vocals": vocals, "accompaniment": accomp}, utt2dur


def prepare(root, outdir, *, overwrite=False):
    """Write ``OUTDIR/ikala``; returns ``{"ikala": Path}``."""
    return write_sets(outdir, {"ikala": stereo_sets(scan(root), voice_channel=1)}, overwrite=overwrite)
