"""Synthetic corpora written in the official layouts of DSD100, iKala, MIR-1K and MUSDB18-HQ, or
as plain song folders; the songs come from :func:`sepkit.data.synth.make_song`.

=========  ==============================================================================  ========
layout     files                                                                           default
=========  ==============================================================================  ========
dsd100     ROOT/Mixtures/{Dev,Test}/<song>/mixture.wav,                                    44.1 kHz
           ROOT/Sources/{Dev,Test}/<song>/{bass,drums,other,vocals}.wav                    stereo
musdb18hq  ROOT/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav                 44.1 kHz
ikala      ROOT/Wavfile/<5-digit id>_<verse|chorus>.wav, left = music, right = vocals      44.1 kHz
mir1k      ROOT/Wavfile/<singer>_<song>_<nn>.wav, left = accompaniment, right = voice;     16 kHz
           training singers abjones, amy; test singers annar, yifen, synth1
folder     ROOT/<song>/mix.wav, source-01.wav (vocals), source-02.wav (accompaniment)      22.05 kHz
=========  ==============================================================================  ========

All files are 16-bit PCM WAV. Sources are quantised first and every mixture is the integer sum of
its quantised sources, so ``mixture == sum(sources)`` holds exactly after reading. The same seed
gives byte-identical files (on one machine: numpy's SIMD math may differ in the last bit between
CPUs). Song ``i`` of a split (its audio and name) depends only on ``(seed, layout, split, i)``, so
asking for more songs leaves the first ones unchanged; MIR-1K groups clips into songs in order,
so there only the clips before the change stay the same.
"""
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf

from sepkit.audio import atomic_path
from sepkit.data.synth import draw_singer, make_song

logger = logging.getLogger(__name__)

__all__ = ["LAYOUTS", "SynthError", "make_corpus"]

# Per layout: sample rate, songs (training split), test songs (None: the layout has no split),
# seconds per song (None: MIR-1K clips of 4-12 s), channels.
LAYOUTS = {
    "dsd100": dict(sample_rate=44100, num_songs=4, num_test_songs=2, duration=20.0, channels=2),
    "musdb18hq": dict(sample_rate=44100, num_songs=4, num_test_songs=2, duration=20.0, channels=2),
    "ikala": dict(sample_rate=44100, num_songs=6, num_test_songs=None, duration=10.0, channels=2),
    "mir1k": dict(sample_rate=16000, num_songs=8, num_test_songs=6, duration=None, channels=2),
    "folder": dict(sample_rate=22050, num_songs=4, num_test_songs=None, duration=10.0, channels=1),
}
MIR1K_TRAIN_SINGERS = (("abjones", "male"), ("amy", "female"))
MIR1K_TEST_SINGERS = (("annar", "female"), ("yifen", "female"), ("synth1", "male"))
_MIN_DURATION = 2.0
_ARTIST = (("Velvet", "Paper", "Silver", "Northern", "Hollow", "Crimson", "Electric", "Quiet", "Golden", "Lunar",
            "Static", "Amber", "Glass", "Midnight", "Copper", "Synth"),
           ("Oscillators", "Harbour", "Foxes", "Lanterns", "Engines", "Choir", "Satellites", "Orchard", "Tides",
            "Machines", "Rivers", "Signals", "Artist"))
_TITLE = ("Falling", "Summer", "Lights", "Over", "Blue", "Echo", "Dreams", "Rain", "City", "Heart", "Slow",
          "Morning", "Wire", "Horizon", "Fade", "Stone", "Open", "Window", "Distance", "Song", "Title", "Home")


class SynthError(ValueError):
    """Bad options or an unusable output directory; the message is one line naming the problem."""


def _pcm16(x):
    """Float (C, N) -> int16 (C, N) such that reading back gives ``q / 32768``."""
    scaled = np.asarray(x, dtype=np.float32) * np.float32(32768.0)  # exact: a power-of-two scale
    return np.rint(np.clip(scaled, -32768, 32767, out=scaled), out=scaled).astype(np.int16)


def _mix16(parts, path):
    total = np.sum([p.astype(np.int32) for p in parts], axis=0)
    if np.abs(total).max() > 32767:  # cannot happen with make_song's peak <= 0.89; kept as a guard
        raise SynthError(f"{path}: mixture of quantised sources would clip")
    return total.astype(np.int16)


class _Writer:
    """Writes int16 WAVs under ``stage`` (atomically each) and remembers them relative to the root."""

    def __init__(self, stage, sr):
        self.stage, self.sr, self.files = Path(stage), int(sr), []

    def __call__(self, rel, q):
        path = self.stage / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            sf.write(tmp, np.ascontiguousarray(q.T), self.sr, subtype="PCM_16", format="WAV")
        self.files.append(str(rel))
        return str(rel)


def _name(seed, split, index, taken):
    """A song name "Artist - Title" drawn from ``(seed, split, index)``, distinct from ``taken``."""
    rng = np.random.default_rng([seed, 99, split, index])
    for _ in range(100):
        name = f"{rng.choice(_ARTIST[0])} {rng.choice(_ARTIST[1])} - {' '.join(rng.choice(_TITLE, 2, replace=False))}"
        if name not in taken:
            break
    else:
        name = f"{name} {index + 1}"
    taken.add(name)
    return name


def _song(seed, layout, split, index, duration, sr, channels, singer=None):
    rng = np.random.default_rng([seed, sorted(LAYOUTS).index(layout), split, index])
    return make_song(rng, duration, sr, channels, singer)


def _record(name, split, duration, files, info, rests=None):
    rests = info["vocal_rests"] if rests is None else rests
    return dict(name=name, split=split, duration=round(duration, 6), files=files, tempo=round(info["tempo"], 2),
                key=info["key"], mode=info["mode"], singer=info["singer"]["gender"],
                vocal_rests=[[round(a, 4), round(b, 4)] for a, b in rests])


def _stems_corpus(layout, write, opts, bar):
    """DSD100 and MUSDB18-HQ: four stereo stems and their exact sum per song."""
    songs, dsd = [], layout == "dsd100"
    splits = [("Dev" if dsd else "train", opts["num_songs"]), ("Test" if dsd else "test", opts["num_test_songs"])]
    number, taken = {"Test": 1, "Dev": 1 + splits[1][1]}, set()  # DSD100 numbers its test songs first
    for split_id, (split, count) in enumerate(splits):
        for i in range(count):
            name = _name(opts["seed"], split_id, i, taken)
            name = f"{number[split] + i:03d} - {name}" if dsd else name
            stems, info = _song(opts["seed"], layout, split_id, i, opts["duration"], opts["sample_rate"],
                                opts["channels"])
            q = {k: _pcm16(v) for k, v in stems.items()}
            mix = _mix16(list(q.values()), name)
            if dsd:
                files = [write(Path("Mixtures", split, name, "mixture.wav"), mix)]
                files += [write(Path("Sources", split, name, f"{k}.wav"), q[k])
                          for k in ("bass", "drums", "other", "vocals")]
            else:
                files = [write(Path(split, name, "mixture.wav"), mix)]
                files += [write(Path(split, name, f"{k}.wav"), q[k]) for k in ("drums", "bass", "other", "vocals")]
            songs.append(_record(name, split, opts["duration"], files, info))
            bar.update(1)
    return songs


def _two_channel(stems):
    """Mono stems -> (accompaniment, vocals) float (1, N) each."""
    return stems["bass"] + stems["drums"] + stems["other"], stems["vocals"]


def _ikala(write, opts, bar):
    songs, taken = [], set()
    for i in range(opts["num_songs"]):
        rng = np.random.default_rng([opts["seed"], 98, i])
        clip_id = int(rng.integers(10000, 100000))
        while clip_id in taken:
            clip_id = int(rng.integers(10000, 100000))
        taken.add(clip_id)
        name = f"{clip_id}_{rng.choice(['verse', 'chorus'])}"
        stems, info = _song(opts["seed"], "ikala", 0, i, opts["duration"], opts["sample_rate"], 1)
        music, vocals = _two_channel(stems)
        files = [write(Path("Wavfile", f"{name}.wav"), _pcm16(np.concatenate([music, vocals])))]
        songs.append(_record(name, "all", opts["duration"], files, info))
        bar.update(1)
    return songs


def _mir1k(write, opts, bar):
    """Clips of the same song are consecutive excerpts of one synthetic song by one singer."""
    songs, seed, sr = [], opts["seed"], opts["sample_rate"]
    rng = np.random.default_rng([seed, 97])
    for split_id, (split, singers, count) in enumerate(
            [("train", MIR1K_TRAIN_SINGERS, opts["num_songs"]), ("test", MIR1K_TEST_SINGERS, opts["num_test_songs"])]):
        for s_id, (singer, gender) in enumerate(singers):
            voice = draw_singer(np.random.default_rng([seed, 50, split_id, s_id]), gender)
            left, song_no = len(range(s_id, count, len(singers))), 0
            while left > 0:
                song_no += 1
                n_clips = min(left, int(rng.integers(1, 4)))
                left -= n_clips
                lengths = [opts["duration"] or round(float(rng.uniform(4.0, 12.0)), 2) for _ in range(n_clips)]
                stems, info = _song(seed, "mir1k", split_id, 1000 * s_id + song_no, sum(lengths), sr, 1, voice)
                acc, vocals = _two_channel(stems)
                start = 0
                for c, length in enumerate(lengths):
                    a, b = start, start + int(round(length * sr))
                    start = b
                    name = f"{singer}_{song_no}_{c + 1:02d}"
                    clip = np.concatenate([acc[:, a:b], vocals[:, a:b]])  # left accompaniment, right voice
                    files = [write(Path("Wavfile", f"{name}.wav"), _pcm16(clip))]
                    rests = [(max(x, a / sr) - a / sr, min(y, b / sr) - a / sr) for x, y in info["vocal_rests"]
                             if min(y, b / sr) > max(x, a / sr)]
                    songs.append(_record(name, split, (b - a) / sr, files, info, rests))
                    bar.update(1)
    return songs


def _folder(write, opts, bar):
    songs = []
    for i in range(opts["num_songs"]):
        name = f"song_{i + 1:03d}"
        stems, info = _song(opts["seed"], "folder", 0, i, opts["duration"], opts["sample_rate"], opts["channels"])
        acc, vocals = (_pcm16(x) for x in _two_channel(stems))
        files = [write(Path(name, "mix.wav"), _mix16([vocals, acc], name)), write(Path(name, "source-01.wav"), vocals),
                 write(Path(name, "source-02.wav"), acc)]
        songs.append(_record(name, "all", opts["duration"], files, info))
        bar.update(1)
    return songs


def _options(layout, num_songs, num_test_songs, duration, sample_rate, channels, seed):
    """Fill defaults and check every option; raises SynthError with one line."""
    if layout not in LAYOUTS:
        raise SynthError(f"unknown layout {layout!r} (choose from {', '.join(sorted(LAYOUTS))})")
    d = LAYOUTS[layout]
    if num_test_songs is not None and d["num_test_songs"] is None:
        raise SynthError(f"layout {layout} has no test split: --num-test-songs does not apply")
    if channels is not None and layout != "folder":
        raise SynthError(f"layout {layout} is stereo by definition: --channels applies to the folder layout only")
    opts = dict(num_songs=d["num_songs"] if num_songs is None else int(num_songs),
                num_test_songs=(d["num_test_songs"] or 0) if num_test_songs is None else int(num_test_songs),
                duration=d["duration"] if duration is None else float(duration),
                sample_rate=d["sample_rate"] if sample_rate is None else int(sample_rate),
                channels=d["channels"] if channels is None else int(channels), seed=int(seed))
    if opts["num_songs"] < 0 or opts["num_test_songs"] < 0 or opts["num_songs"] + opts["num_test_songs"] < 1:
        raise SynthError(f"need at least one song and no negative counts (got {opts['num_songs']} and "
                         f"{opts['num_test_songs']})")
    if opts["duration"] is not None and not (_MIN_DURATION <= opts["duration"] <= 3600):
        raise SynthError(f"duration must be between {_MIN_DURATION} and 3600 seconds, got {opts['duration']}")
    if not 8000 <= opts["sample_rate"] <= 192000:
        raise SynthError(f"sample rate must be between 8000 and 192000 Hz, got {opts['sample_rate']}")
    if opts["channels"] not in (1, 2):
        raise SynthError(f"channels must be 1 or 2, got {opts['channels']}")
    if seed < 0:
        raise SynthError(f"seed must be non-negative, got {seed}")
    if opts["sample_rate"] != d["sample_rate"]:
        logger.warning("%s: sample rate %d Hz differs from the official %d Hz", layout, opts["sample_rate"],
                       d["sample_rate"])
    return opts


def make_corpus(layout, root, num_songs=None, num_test_songs=None, duration=None, sample_rate=None, seed=0,
                channels=None, overwrite=False, progress=True):
    """Write a synthetic corpus in ``layout`` (a key of :data:`LAYOUTS`) under ``root``.

    Args:
        num_songs: songs of the training split (dsd100 Dev, musdb18hq train, mir1k clips by abjones
            and amy), or all songs (ikala, folder). num_test_songs: test split (dsd100 Test,
            musdb18hq test, mir1k clips by annar, yifen, synth1); an error for ikala and folder.
        duration: seconds per song (mir1k default: 4-12 s per clip). sample_rate: Hz (default the
            layout's official rate). channels: folder layout only (default 1).
        overwrite: allow a non-empty ``root``; only the files this call writes are replaced.
    Returns:
        dict: layout, root, sample_rate, channels, seed, num_songs, num_files, total_seconds,
        elapsed_s and songs (name, split, duration, files relative to root, tempo, key, mode,
        singer gender, vocal_rests ``[[start, end]]`` seconds where the vocals are exactly zero).
    Raises:
        SynthError: bad options, ``root`` not a directory, or non-empty without ``overwrite``.
    """
    from tqdm import tqdm

    opts = _options(layout, num_songs, num_test_songs, duration, sample_rate, channels, seed)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise SynthError(f"{root}: exists and is not a directory")
    in_place = root.is_dir() and any(root.iterdir())
    if in_place and not overwrite:
        raise SynthError(f"{root}: directory is not empty (use --overwrite to replace the corpus files in it)")
    # A fresh corpus is built beside root and renamed onto it at the end: all or nothing.
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        stage = root if in_place else root.parent / f".{root.name}.{uuid.uuid4().hex[:8]}.tmp"
        stage.mkdir(exist_ok=in_place)
    except OSError as exc:
        raise SynthError(f"{root}: cannot create ({exc.strerror or exc})") from None
    start = time.perf_counter()
    write = _Writer(stage, opts["sample_rate"])
    total = opts["num_songs"] + opts["num_test_songs"]
    try:
        with tqdm(total=total, desc=f"synth {layout}", unit="song", disable=not progress) as bar:
            if layout in ("dsd100", "musdb18hq"):
                songs = _stems_corpus(layout, write, opts, bar)
            else:
                songs = {"ikala": _ikala, "mir1k": _mir1k, "folder": _folder}[layout](write, opts, bar)
        if not in_place:
            os.replace(stage, root)
    except BaseException:
        if not in_place:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    summary = dict(layout=layout, root=str(root), sample_rate=opts["sample_rate"],
                   channels=opts["channels"], seed=opts["seed"],
                   num_songs=len(songs), num_files=len(write.files),
                   total_seconds=round(sum(s["duration"] for s in songs), 3),
                   elapsed_s=round(time.perf_counter() - start, 3), songs=songs)
    logger.info("wrote %d %s songs (%d files, %.1f s of audio) to %s in %.1f s", len(songs), layout,
                len(write.files), summary["total_seconds"], root, summary["elapsed_s"])
    return summary
