"""DSD100-remix (Luo et al. 2017, §3.1): silence removal, resampling and 0 dB remixing.

Per song of a source data dir (``vocals`` and ``accompaniment`` sources, e.g. ``dsd100_dev``),
each source is downmixed to mono (mean of channels), resampled to ``sample_rate`` (soxr), and
its silent parts are removed by an energy detector applied to each track separately
(:func:`activity_mask`): non-overlapping frames (32 ms) whose energy is more than 40 dB below
the track's loudest frame are silent, except that silent gaps shorter than ``min_gap_ms``
between active frames are kept (hangover: pauses between sung phrases stay) and active bursts
shorter than ``min_active_ms`` are dropped (clicks, breaths). Resampling comes before detection
(the paper says the reverse): the detector sees the same signal either way, and resampling the
continuous track avoids filtering across the joins of the concatenated active parts.

* Training/validation sets (:func:`make_train_valid`): the songs are split by song (seeded);
  each mixture takes a random ``segment_seconds`` chunk of the active vocals of a song drawn
  uniformly (songs with less than ``segment_seconds`` of active audio are skipped) and a
  random chunk of the active accompaniment of the *same* song (the paper leaves this open; with
  ``cross_song`` of another song), the accompaniment scaled to the vocals' energy (0 dB SNR).
  Mixtures are generated until ``hours`` (``valid_hours``) are reached.
* Test set (:func:`make_test`): one fully overlapped piece of ``test_seconds`` per song, taken from
  the samples where *both* tracks are active, so the vocals stay aligned with their
  accompaniment as in the song (start chosen with the seed), mixed at 0 dB.

Output ``OUTDIR/<set>/`` is a data dir whose specs point to mono float32 wavs under
``OUTDIR/<set>/wav/{mix,vocals,accompaniment}/<utt>.wav``; the stored mixture is exactly the sum of
the stored float32 sources (all three are scaled together when a peak would pass ``PEAK``).
``remix.tsv`` records where every chunk came from. A set is built in a hidden staging folder and
renamed into place when complete. Everything is a function of ``seed``.
"""
import logging
import math
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sepkit.audio import AudioError, resample, to_mono, umask_mkdtemp, write_audio
from sepkit.data.datadir import DataDir, DataDirError, load_audio

logger = logging.getLogger(__name__)

__all__ = ["RemixError", "DETECTOR_DEFAULTS", "PEAK", "frame_energy_db", "activity_mask", "remove_silence",
           "mix_0db", "split_songs", "make_train_valid", "make_test"]

DETECTOR_DEFAULTS = {"threshold_db": -40.0, "frame_ms": 32.0, "min_gap_ms": 300.0, "min_active_ms": 100.0}
PEAK = 0.99  # largest |sample| allowed in a stored mixture or source


class RemixError(Exception):
    """Bad input to the remixer (no usable song, bad source dir); the message names the path."""


# ---------------------------------------------------------------------------------------- detector

def frame_energy_db(x, frame_len):
    """Energy of non-overlapping frames in dB relative to the loudest frame.

    Args:
        x: ``(N,)`` mono samples; the last partial frame is zero padded.
        frame_len: frame length in samples.
    Returns:
        ``(ceil(N / frame_len),)`` float64, max 0 dB (all ``-inf`` for an all-zero signal).
    """
    n_frames = -(-len(x) // frame_len)
    padded = np.zeros(n_frames * frame_len)
    padded[:len(x)] = x
    energy = np.mean(padded.reshape(n_frames, frame_len) ** 2, axis=1)
    peak = energy.max() if n_frames else 0.0
    if peak <= 0:
        return np.full(n_frames, -np.inf)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(energy / peak)


def _runs(mask):
    """``(starts, ends)`` of the runs of True in a 1-D bool array (ends exclusive)."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def activity_mask(x, sample_rate, threshold_db=-40.0, frame_ms=32.0, min_gap_ms=300.0, min_active_ms=100.0):
    """Per-sample activity of a track by frame energy (see module docstring).

    Args:
        x: ``(N,)`` mono samples.
        sample_rate: Hz.
        threshold_db: frames above (max frame energy + threshold_db) are active.
        frame_ms: frame length in ms.
        min_gap_ms: silent gaps shorter than this, between active frames, count as active.
        min_active_ms: active runs shorter than this (after gap filling) count as silent.
    Returns:
        ``(N,)`` bool.
    """
    frame_len = max(1, int(round(sample_rate * frame_ms / 1000)))
    active = frame_energy_db(np.asarray(x, dtype=np.float64), frame_len) > threshold_db
    starts, ends = _runs(~active)
    for s, e in zip(starts, ends):  # hangover: inner gaps shorter than min_gap_ms
        if s > 0 and e < len(active) and (e - s) * frame_ms < min_gap_ms:
            active[s:e] = True
    starts, ends = _runs(active)
    for s, e in zip(starts, ends):
        if (e - s) * frame_ms < min_active_ms:
            active[s:e] = False
    return np.repeat(active, frame_len)[:len(x)]


def remove_silence(x, sample_rate, **detector):
    """The active samples of ``x`` (``(N,)``) concatenated: ``(M,)`` with ``M <= N``."""
    return np.asarray(x)[activity_mask(x, sample_rate, **detector)]


# ---------------------------------------------------------------------------------------- mixing

def mix_0db(vocals, accompaniment, peak=PEAK):
    """Mix two equal-length mono signals at 0 dB SNR.

    The accompaniment is scaled to the vocals' energy; if any of vocals, accompaniment or their
    sum would pass ``peak``, all three are scaled down together.
    Returns:
        ``(mix, vocals, accompaniment)``, each ``(N,)`` float32, with ``mix == vocals + accompaniment``
        exactly in float32 (the mixture is computed from the float32 sources).
    """
    v = np.asarray(vocals, dtype=np.float64)
    a = np.asarray(accompaniment, dtype=np.float64)
    ev, ea = np.sum(v ** 2), np.sum(a ** 2)
    if ev <= 0 or ea <= 0:
        raise ValueError("cannot mix at 0 dB: a source is all zeros")
    a = a * math.sqrt(ev / ea)
    top = max(np.abs(v).max(), np.abs(a).max(), np.abs(v + a).max())
    gain = min(1.0, peak / top)
    v32, a32 = (v * gain).astype(np.float32), (a * gain).astype(np.float32)
    return v32 + a32, v32, a32


def split_songs(songs, valid_fraction, seed):
    """Split songs into ``(train, valid)`` lists: ``round(fraction * n)`` valid songs (>= 1 if fraction > 0)."""
    songs = sorted(songs)
    if not 0 <= valid_fraction < 1:
        raise RemixError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    n_valid = max(1, int(round(valid_fraction * len(songs)))) if valid_fraction > 0 else 0
    if n_valid and n_valid >= len(songs):
        raise RemixError(f"cannot hold out {n_valid} of {len(songs)} songs for validation and keep one for training")
    chosen = set(np.random.default_rng([seed, 0]).choice(len(songs), size=n_valid, replace=False).tolist())
    return ([s for i, s in enumerate(songs) if i not in chosen], [s for i, s in enumerate(songs) if i in chosen])


# ---------------------------------------------------------------------------------------- sources

def _open_source(src):
    try:
        data = DataDir(src)
    except DataDirError as exc:
        raise RemixError(str(exc)) from None
    if sorted(data.sources) != ["accompaniment", "vocals"]:  # other stems would be dropped or missing
        raise RemixError(f"{data.path / 'sources'}: lists {' '.join(data.sources)}; remixes (the paper's "
                         "DSD100-remix) are made of vocals and accompaniment only")
    return data, data.source("vocals"), data.source("accompaniment")


def _load_mono(spec, sample_rate, utt):
    try:
        wav, sr = load_audio(spec)
    except AudioError as exc:
        raise RemixError(f"utterance {utt}: {exc}") from None
    return resample(to_mono(wav), sr, sample_rate)[0]


def _check_target(outdir, name, overwrite, src):
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise RemixError(f"invalid set name {name!r}")
    target = Path(outdir) / name
    if target.resolve() == Path(src).resolve():
        raise RemixError(f"{target}: is the source data dir; choose another output name")
    if target.exists() and not (target.is_dir() and (overwrite or not any(target.iterdir()))):
        raise RemixError(f"{target}: exists (use --overwrite to replace it)")


def _write_set(outdir, name, items, sample_rate, total, overwrite):
    """Store ``(utt, vocals, accompaniment, provenance)`` items as a data dir ``outdir/name``."""
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    final = outdir / name
    staging = umask_mkdtemp(prefix=f".{name}.", suffix=".partial", dir=outdir)  # published: follows the umask
    try:
        specs = {"mix": {}, "vocals": {}, "accompaniment": {}}
        utt2dur, rows = {}, []
        for utt, vocals, accomp, origin in tqdm(items, total=total, desc=name, unit="mix"):
            mix, v32, a32 = mix_0db(vocals, accomp)
            for kind, sig in (("mix", mix), ("vocals", v32), ("accompaniment", a32)):
                write_audio(staging / "wav" / kind / f"{utt}.wav", sig, sample_rate, subtype="FLOAT")
                specs[kind][utt] = str(final / "wav" / kind / f"{utt}.wav")
            utt2dur[utt] = len(mix) / sample_rate
            rows.append("\t".join([utt] + [str(x) for x in origin]))
        if not utt2dur:
            raise RemixError(f"{final}: nothing to write")
        DataDir.create(staging, specs["mix"], {"vocals": specs["vocals"], "accompaniment": specs["accompaniment"]},
                       utt2dur=utt2dur, overwrite=True)
        header = "utt\tvocals_song\tvocals_offset_s\taccompaniment_song\taccompaniment_offset_s\n"
        (staging / "remix.tsv").write_text(header + "".join(r + "\n" for r in sorted(rows)), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote %s: %d mixtures, %.3f h", final, len(utt2dur), sum(utt2dur.values()) / 3600)
    return final


# ---------------------------------------------------------------------------------------- train/valid

def _usable(pool, songs, seg_len, cross_song):
    """Songs that can give a vocal chunk / an accompaniment chunk of ``seg_len`` samples."""
    voc = [s for s in songs if len(pool[s][0]) >= seg_len]
    acc = [s for s in songs if len(pool[s][1]) >= seg_len]
    if not cross_song:
        voc = acc = [s for s in voc if s in acc]
    return voc, acc


def _random_chunks(pool, voc, acc, count, seg_len, sample_rate, rng, cross_song, prefix):
    """Yield ``count`` random (vocal chunk, accompaniment chunk) pairs from ``pool[song] = (v, a)``."""
    for i in range(count):
        for _ in range(100):  # redraw a chunk that is all zeros (can't mix it at 0 dB)
            vs = voc[rng.integers(len(voc))]
            others = [s for s in acc if s != vs] or acc
            as_ = others[rng.integers(len(others))] if cross_song else vs
            v0 = int(rng.integers(len(pool[vs][0]) - seg_len + 1))
            a0 = int(rng.integers(len(pool[as_][1]) - seg_len + 1))
            v = np.array(pool[vs][0][v0:v0 + seg_len], dtype=np.float32)
            a = np.array(pool[as_][1][a0:a0 + seg_len], dtype=np.float32)
            if np.any(v) and np.any(a):
                break
        else:
            raise RemixError(f"could not draw a non-silent chunk from {vs} / {as_}")
        yield f"{prefix}_{i:06d}", v, a, (vs, round(v0 / sample_rate, 4), as_, round(a0 / sample_rate, 4))


def make_train_valid(src, outdir, *, hours=15.0, valid_hours=0.5, valid_fraction=0.1, segment_seconds=10.0,
                     cross_song=False, train_name="train_remix", valid_name="valid_remix", sample_rate=16000,
                     seed=0, detector=None, overwrite=False):
    """Build the training (and validation) sets from the songs of data dir ``src``.

    Args:
        hours, valid_hours: total mixture duration of each set (h); ``valid_hours=0``: no valid set.
        valid_fraction: fraction of songs (>= 1 song) reserved for validation.
        segment_seconds: length of every mixture (s).
        cross_song: take the accompaniment from another song than the vocals.
        detector: overrides of :data:`DETECTOR_DEFAULTS`.
    Returns:
        ``{set name: Path}``.
    """
    detector = {**DETECTOR_DEFAULTS, **(detector or {})}
    if hours <= 0 or valid_hours < 0 or segment_seconds <= 0:
        raise RemixError("hours and segment seconds must be positive, valid hours >= 0")
    data, vocals, accomp = _open_source(src)
    if len(data.utts) < 2 and valid_hours > 0:
        raise RemixError(f"{data.path}: {len(data.utts)} song(s); a validation split needs at least 2")
    train, valid = split_songs(data.utts, valid_fraction if valid_hours > 0 else 0.0, seed)
    if valid_hours > 0 and not valid:
        raise RemixError("--valid-hours > 0 needs --valid-fraction > 0")
    if valid_hours > 0 and train_name == valid_name:
        raise RemixError(f"the training and validation sets have the same name {train_name!r}")
    plan = [(train_name, train, hours, 1)] + ([(valid_name, valid, valid_hours, 2)] if valid_hours > 0 else [])
    for name, *_ in plan:
        _check_target(outdir, name, overwrite, data.path)
    seg_len = int(round(segment_seconds * sample_rate))
    Path(outdir).mkdir(parents=True, exist_ok=True)
    made = {}
    with tempfile.TemporaryDirectory(prefix=".remix-cache.", dir=outdir) as cache:
        pool = {}
        for index, utt in enumerate(tqdm(data.utts, desc="silence removal", unit="song")):
            files = [Path(cache) / f"{index}{kind}.npy" for kind in "va"]  # memory-mapped: ~1 GB for 50 songs
            for spec, file in zip((vocals[utt], accomp[utt]), files):
                active = remove_silence(_load_mono(spec, sample_rate, utt), sample_rate, **detector)
                np.save(file, active.astype(np.float32))
            pool[utt] = tuple(np.load(file, mmap_mode="r") for file in files)
            short = [k for k, x in zip(("vocals", "accompaniment"), pool[utt]) if len(x) < seg_len]
            if short:
                logger.warning("%s: song %s has less than %g s of active %s, not used for it", data.path, utt,
                               segment_seconds, " and ".join(short))
        usable = {name: _usable(pool, songs, seg_len, cross_song) for name, songs, *_ in plan}
        for name, songs, *_ in plan:  # all checked before any set is written
            if not all(usable[name]):
                raise RemixError(f"{data.path}: none of the {len(songs)} songs for {name} has {segment_seconds:g} s "
                                 "of active vocals and accompaniment (see the warnings above)")
        for name, songs, set_hours, stream in plan:
            count = int(math.ceil(set_hours * 3600 / segment_seconds - 1e-9))
            chunks = _random_chunks(pool, *usable[name], count, seg_len, sample_rate,
                                    np.random.default_rng([seed, stream]), cross_song, name)
            made[name] = _write_set(outdir, name, chunks, sample_rate, count, overwrite)
        pool.clear()
    return made


# ---------------------------------------------------------------------------------------- test

def make_test(src, outdir, *, test_seconds=30.0, name="test_remix", sample_rate=16000, seed=0, detector=None,
              overwrite=False):
    """One fully overlapped ``test_seconds`` piece per song of ``src``; returns ``{name: Path}``."""
    detector = {**DETECTOR_DEFAULTS, **(detector or {})}
    if test_seconds <= 0:
        raise RemixError("test seconds must be positive")
    data, vocals, accomp = _open_source(src)
    _check_target(outdir, name, overwrite, data.path)
    piece = int(round(test_seconds * sample_rate))
    usable = []

    def pieces():
        for utt in data.utts:
            v = _load_mono(vocals[utt], sample_rate, utt)
            a = _load_mono(accomp[utt], sample_rate, utt)
            n = min(len(v), len(a))
            both = activity_mask(v[:n], sample_rate, **detector) & activity_mask(a[:n], sample_rate, **detector)
            v, a = v[:n][both], a[:n][both]
            if len(v) < piece:
                logger.warning("%s: song %s has %.1f s where vocals and accompaniment are both active, less "
                               "than %g s; skipped", data.path, utt, len(v) / sample_rate, test_seconds)
                continue
            rng = np.random.default_rng([seed, zlib.crc32(utt.encode("utf-8"))])
            start = int(rng.integers(len(v) - piece + 1))
            usable.append(utt)
            offset = round(start / sample_rate, 4)
            yield utt, v[start:start + piece], a[start:start + piece], (utt, offset, utt, offset)

    try:
        return {name: _write_set(outdir, name, pieces(), sample_rate, len(data.utts), overwrite)}
    except RemixError:
        if not usable:
            raise RemixError(f"{data.path}: no song has {test_seconds:g} s where vocals and accompaniment "
                             "are both active") from None
        raise
