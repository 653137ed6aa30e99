"""MUSDB18 / MUSDB18-HQ -> data dirs ``musdb18_{train,valid,test}`` (2 stems) or ``musdb18_4stems_{...}`` (4).

Layouts (44.1 kHz stereo):

* MUSDB18 (default): ``ROOT/{train,test}/<track>.stem.mp4`` with five AAC streams, 0 mixture,
  1 drums, 2 bass, 3 other, 4 vocals. Each track is decoded once (PyAV) into
  ``OUTDIR/musdb18_wav/<split>/<track>/{mixture,drums,bass,other,vocals}.wav``; a track whose
  five wavs already exist with equal lengths is not decoded again. The AAC streams may differ by
  a few samples, so all five are trimmed to the shortest (and to the stream's declared duration,
  which drops the encoder's end padding). Wavs are 16-bit PCM, or 32-bit float for a stem whose
  decoded peak exceeds full scale (AAC overshoot), so nothing is clipped.
* MUSDB18-HQ (``hq=True``): ``ROOT/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav``.

Sources (``stems``): 2 (the default) = ``vocals`` (the vocals file) and ``accompaniment``
(``{"sum": [drums, bass, other]}``), in the data dirs ``musdb18_train``, ``musdb18_valid``,
``musdb18_test``; 4 = MUSDB18's own stems ``vocals``, ``drums``, ``bass``, ``other`` (one file each, in
that order), in ``musdb18_4stems_train``, ``musdb18_4stems_valid``, ``musdb18_4stems_test``, so the two
settings never share a data dir (nor the dumps and scores named after it). No other count exists.
``wav.scp`` is the official mixture (``mixture="file"``; in MUSDB18 it is encoded separately, so it
differs from the sum of the stems by AAC noise, about -28 dB) or the exact sum of the four stems
(``mixture="sum"``). Validation tracks come out of ``train``: the names in ``valid_tracks``, or
``round(valid_fraction * tracks)`` tracks chosen with ``seed``. A missing split folder is a
warning (the 7-second sample set has ``train`` only); no track at all is an error.
"""
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sepkit.audio import AudioError, write_audio
from sepkit.data.corpora import (CorpusError, audio_info, check_targets, pick_held_out, spec_json,
                                 unique_utt_ids, utt_id, write_sets)

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
STEMS = ("mixture", "drums", "bass", "other", "vocals")  # stream order of a .stem.mp4
ACCOMPANIMENT = ("drums", "bass", "other")
# stems setting -> {source name: the stem files summed into it}, in the data dir's ``sources`` order
SOURCES_OF = {2: {"vocals": ("vocals",), "accompaniment": ACCOMPANIMENT},
              4: {"vocals": ("vocals",), "drums": ("drums",), "bass": ("bass",), "other": ("other",)}}
SAMPLE_RATE = 44100
WAV_DIR = "musdb18_wav"
SET_NAMES = {"train": "musdb18_train", "valid": "musdb18_valid", "test": "musdb18_test"}


def set_names(stems=2):
    """``{group: data dir name}`` of a stems setting: ``musdb18_<group>`` (2), ``musdb18_4stems_<group>`` (4)."""
    check_stems(stems)
    return dict(SET_NAMES) if stems == 2 else {g: f"musdb18_{stems}stems_{g}" for g in SET_NAMES}


def check_stems(stems):
    """Refuse a stems setting that MUSDB18 cannot give (one line)."""
    if stems not in SOURCES_OF:
        raise CorpusError(f"--stems {stems}: MUSDB18 gives 2 stems (vocals, accompaniment) or 4 (vocals, drums, "
                          "bass, other), nothing else")


def _layout(hq):
    return ("ROOT/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav" if hq
            else "ROOT/{train,test}/<track>.stem.mp4")


def scan(root, hq=False):
    """Return ``{split: {track name: path}}`` (stem.mp4 file, or the HQ track folder)."""
    root = Path(root)
    found = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            logger.warning("%s: missing, no %s set", folder, split)
            continue
        if hq:
            tracks = {p.name: p for p in folder.iterdir() if p.is_dir()}
        else:
            tracks = {p.name[:-len(".stem.mp4")]: p for p in folder.iterdir()
                      if p.is_file() and p.name.endswith(".stem.mp4")}
        if tracks:
            found[split] = dict(sorted(tracks.items()))
    if not found:
        raise CorpusError(f"{root}: no MUSDB18 tracks found (expected {_layout(hq)})")
    return found


def _decode(path):
    """Decode the five streams of a ``.stem.mp4``: list of ``(2, N)`` float32, trimmed to one length."""
    import av

    try:
        with av.open(str(path)) as container:
            streams = list(container.streams.audio)
            if len(streams) != len(STEMS):
                raise CorpusError(f"{path}: {len(streams)} audio streams, a MUSDB18 stem file has "
                                  f"{len(STEMS)} ({', '.join(STEMS)})")
            for s in streams:
                if s.rate != SAMPLE_RATE:
                    raise CorpusError(f"{path}: stream {s.index} is {s.rate} Hz, expected {SAMPLE_RATE}")
            chunks = {s.index: [] for s in streams}
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    data = frame.to_ndarray()
                    if not frame.format.is_planar:  # packed: (1, N * C) -> (C, N)
                        data = data.reshape(-1, len(frame.layout.channels)).T
                    chunks[packet.stream.index].append(data.astype(np.float32, copy=False))
            declared = [int(s.duration * s.time_base * s.rate) for s in streams
                        if s.duration and s.time_base]
            order = [s.index for s in streams]
    except CorpusError:
        raise
    except Exception as exc:  # av.error.* and friends
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__  # av errors repeat the path
        raise CorpusError(f"{path}: cannot decode as a MUSDB18 stem file ({reason})") from None
    wavs = []
    for stem, index in zip(STEMS, order):
        if not chunks[index]:
            raise CorpusError(f"{path}: stream {index} ({stem}) decodes to no audio")
        wavs.append(np.concatenate(chunks[index], axis=1))
    length = min([w.shape[1] for w in wavs] + declared)
    if max(w.shape[1] for w in wavs) - length > 0:
        logger.debug("%s: stream lengths %s, trimmed to %d", path, [w.shape[1] for w in wavs], length)
    return [np.ascontiguousarray(w[:, :length]) for w in wavs]


def _complete(folder):
    """True when all five stems exist with the same length (each was written atomically)."""
    try:
        infos = [audio_info(folder / f"{stem}.wav") for stem in STEMS]
    except CorpusError:
        return False
    return len({(i.frames, i.samplerate, i.channels) for i in infos}) == 1


def decode_all(found, wav_root):
    """Decode every track not decoded yet into ``wav_root/<split>/<track>/``; returns the folders."""
    todo = [(split, name, path) for split, tracks in found.items() for name, path in tracks.items()]
    out = {split: {} for split in found}
    for split, name, path in tqdm(todo, desc="decode musdb18", unit="track"):
        folder = Path(wav_root) / split / name
        out[split][name] = folder
        if _complete(folder):
            continue
        for stem, wav in zip(STEMS, _decode(path)):
            subtype = "PCM_16" if np.abs(wav).max() < 1.0 else "FLOAT"
            if subtype == "FLOAT":
                logger.info("%s: %s peaks at %.3f, stored as float wav", path, stem, float(np.abs(wav).max()))
            try:
                write_audio(folder / f"{stem}.wav", wav, SAMPLE_RATE, subtype=subtype)
            except AudioError as exc:
                raise CorpusError(str(exc)) from None
    return out


def _valid_names(valid_tracks, train_names, root):
    names = []
    for item in valid_tracks:
        if item.startswith("@"):
            listing = Path(item[1:])
            if not listing.is_file():
                raise CorpusError(f"{listing}: missing (--valid-tracks @FILE lists one track per line)")
            names += [ln.strip() for ln in listing.read_text(encoding="utf-8").splitlines() if ln.strip()]
        else:
            names.append(item)
    by_utt = {utt_id(n): n for n in train_names}
    chosen = []
    for name in names:
        track = name if name in train_names else by_utt.get(name)
        if track is None:
            raise CorpusError(f"{Path(root) / 'train'}: validation track {name!r} not found")
        chosen.append(track)
    return sorted(set(chosen))


def prepare(root, outdir, *, hq=False, valid_tracks=None, valid_fraction=None, seed=0, mixture="file", stems=2,
            overwrite=False):
    """Write the MUSDB18 sets (decoding stem files first unless ``hq``); returns ``{set name: Path}``.

    Args:
        hq: MUSDB18-HQ wav layout instead of ``.stem.mp4`` files.
        stems: 2 (vocals, accompaniment) or 4 (vocals, drums, bass, other); see :func:`set_names`.
        valid_tracks: training tracks (names or ``@file`` listings) to hold out for validation.
        valid_fraction: otherwise hold out this fraction of training tracks (default 0.1).
        seed: seed of the validation choice.
        mixture: ``"file"`` (official mixture) or ``"sum"`` (sum of the four stems).
    """
    if mixture not in ("file", "sum"):
        raise CorpusError(f"--mixture must be 'file' or 'sum', got {mixture!r}")
    names_of = set_names(stems)
    if valid_tracks and valid_fraction is not None:
        raise CorpusError("give either --valid-tracks or --valid-fraction, not both")
    found = scan(root, hq)
    train_names = list(found.get("train", {}))
    if valid_tracks:
        valid = _valid_names(valid_tracks, train_names, root)
    else:
        valid = pick_held_out(train_names, 0.1 if valid_fraction is None else valid_fraction, seed,
                              "training tracks", Path(root) / "train") if train_names else []
    groups = {"train": [n for n in train_names if n not in valid], "valid": valid,
              "test": list(found.get("test", {}))}
    if groups["train"] == [] and train_names:
        raise CorpusError("every training track is held out for validation; none left to train on")
    check_targets(outdir, [names_of[g] for g, names in groups.items() if names], overwrite)
    if hq:
        folders = found
    else:
        folders = decode_all(found, Path(outdir) / WAV_DIR)
    sets = {}
    for group, names in groups.items():
        if not names:
            continue
        split = "test" if group == "test" else "train"
        ids = unique_utt_ids(names, Path(root) / split)
        wav, utt2dur = {}, {}
        scps = {source: {} for source in SOURCES_OF[stems]}
        for name in names:
            folder = folders[split][name].resolve()
            files = {stem: folder / f"{stem}.wav" for stem in STEMS}
            infos = {stem: audio_info(path) for stem, path in files.items()}
            ref = infos["mixture"]
            for stem, info in infos.items():
                if (info.samplerate, info.channels, info.frames) != (ref.samplerate, ref.channels, ref.frames):
                    raise CorpusError(f"{files[stem]}: {info.samplerate} Hz, {info.channels} ch, "
                                      f"{info.frames} samples, but {files['mixture']} has {ref.samplerate} Hz, "
                                      f"{ref.channels} ch, {ref.frames} samples")
            utt = ids[name]
            wav[utt] = (str(files["mixture"]) if mixture == "file"
                        else spec_json(sum=[str(files[stem]) for stem in ACCOMPANIMENT + ("vocals",)]))
            for source, parts in SOURCES_OF[stems].items():
                scps[source][utt] = (str(files[parts[0]]) if len(parts) == 1
                                     else spec_json(sum=[str(files[stem]) for stem in parts]))
            utt2dur[utt] = ref.frames / ref.samplerate
        sets[names_of[group]] = (wav, scps, utt2dur)
    return write_sets(outdir, sets, overwrite=overwrite)
