"""DSD100 (SiSEC 2016) -> data dirs ``dsd100_dev`` and ``dsd100_test``.

Official layout (44.1 kHz stereo wav)::

    ROOT/Mixtures/{Dev,Test}/<song>/mixture.wav
    ROOT/Sources/{Dev,Test}/<song>/{bass,drums,other,vocals}.wav

``wav.scp`` is the official ``mixture.wav`` (the sum of the four sources), ``vocals.scp`` the
vocals file and ``accompaniment.scp`` ``{"sum": [bass, drums, other]}``. Utterance ids are the
song folder names with whitespace replaced by ``_`` (``005_-_Angela_Thomas_Wade_-_Milk_Cow_Blues``).
"""
import logging
from pathlib import Path

from sepkit.data.corpora import CorpusError, audio_info, spec_json, unique_utt_ids, write_sets

logger = logging.getLogger(__name__)

SUBSETS = {"Dev": "dsd100_dev", "Test": "dsd100_test"}
ACCOMPANIMENT = ("bass", "drums", "other")
LAYOUT = "ROOT/Mixtures/{Dev,Test}/<song>/mixture.wav and ROOT/Sources/{Dev,Test}/<song>/{bass,drums,other,vocals}.wav"


def scan(root):
    """Find every song; check that its five files exist and agree in rate, channels and length.

    Returns:
        ``{set name: [(utt, {"mixture"|"bass"|...: Path}, seconds), ...]}`` in song order.
    Raises:
        CorpusError: a missing subset folder or file, or files that disagree (names the file).
    """
    root = Path(root)
    found = {}
    for subset, set_name in SUBSETS.items():
        mix_dir, src_dir = root / "Mixtures" / subset, root / "Sources" / subset
        for folder in (mix_dir, src_dir):
            if not folder.is_dir():
                raise CorpusError(f"{folder}: missing (expected the DSD100 layout {LAYOUT})")
        songs = sorted({p.name for p in mix_dir.iterdir() if p.is_dir()} |
                       {p.name for p in src_dir.iterdir() if p.is_dir()})
        ids = unique_utt_ids(songs, mix_dir)
        rows = []
        for song in songs:
            files = {"mixture": mix_dir / song / "mixture.wav"}
            files.update({name: src_dir / song / f"{name}.wav" for name in ACCOMPANIMENT + ("vocals",)})
            infos = {name: audio_info(path) for name, path in files.items()}
            ref = infos["mixture"]
            for name, info in infos.items():
                if (info.samplerate, info.channels, info.frames) != (ref.samplerate, ref.channels, ref.frames):
                    raise CorpusError(
                        f"{files[name]}: {info.samplerate} Hz, {info.channels} ch, {info.frames} samples, "
                        f"but {files['mixture']} has {ref.samplerate} Hz, {ref.channels} ch, {ref.frames} samples")
            rows.append((ids[song], files, ref.frames / ref.samplerate))
        found[set_name] = rows
    if not any(found.values()):
        raise CorpusError(f"{root}: no DSD100 songs found (expected {LAYOUT})")
    for set_name, rows in found.items():
        if not rows:
            logger.warning("%s: no songs in this subset; %s is not created", root, set_name)
    return {name: rows for name, rows in found.items() if rows}


def prepare(root, outdir, *, overwrite=False):
    """Write ``OUTDIR/dsd100_dev`` and ``OUTDIR/dsd100_test``; returns ``{set name: Path}``."""
    sets = {}
    for set_name, rows in scan(root).items():
        wav, vocals, accomp, utt2dur = {}, {}, {}, {}
        for utt, files, seconds in rows:
            wav[utt] = str(files["mixture"].resolve())
            vocals[utt] = str(files["vocals"].resolve())
            accomp[utt] = spec_json(sum=[str(files[name].resolve()) for name in ACCOMPANIMENT])
            utt2dur[utt] = seconds
        sets[set_name] = (wav, {"vocals": vocals, "accompaniment": accomp}, utt2dur)
    return write_sets(outdir, sets, overwrite=overwrite)
