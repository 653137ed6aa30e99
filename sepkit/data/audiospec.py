"""Audio specs of data dirs: a plain path or a one-line JSON object, resolved to samples.

Forms (see :mod:`sepkit.data.datadir`)::

    /x/clip.wav                                 the file as is, all channels
    {"path": "/x/clip.wav", "channel": 1}       one channel (0-based) of a file -> mono
    {"path": "/x/clip.wav", "channel": "sum"}   sum of the file's channels -> mono
    {"sum": ["/a/bass.wav", "/a/drums.wav"]}    sample-wise sum of files (items may be specs too)

Every error is an :class:`sepkit.audio.AudioError` whose one-line message names the spec's files.
"""
import json
import logging
import os

import numpy as np

from sepkit.audio import AudioError, read_audio, resample

logger = logging.getLogger(__name__)

__all__ = ["load_audio", "parse_spec", "spec_files", "spec_duration", "SUM_LENGTH_TOLERANCE"]

# {"sum": [...]} files may differ in length by less than this fraction (then trimmed to the shortest).
SUM_LENGTH_TOLERANCE = 0.01


def parse_spec(spec):
    """Normalise an audio spec (str path, JSON string or dict) into a tree of dicts.

    Returns ``{"path": str, "channel": None | int | "sum"}`` or ``{"sum": [normalised, ...]}``.
    Raises:
        AudioError: invalid JSON, unknown keys or values; the message quotes the spec.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise AudioError("empty audio spec")
        if not text.startswith("{"):
            return {"path": text, "channel": None}
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AudioError(f"audio spec {text}: invalid JSON ({exc.msg})") from None
    if not isinstance(spec, dict):
        raise AudioError(f"audio spec {spec!r}: expected a path or a JSON object")
    shown = json.dumps(spec)
    if "sum" in spec:
        if set(spec) != {"sum"}:
            raise AudioError(f"audio spec {shown}: 'sum' takes no other keys")
        items = spec["sum"]
        if not isinstance(items, list) or not items:
            raise AudioError(f"audio spec {shown}: 'sum' must be a non-empty list")
        return {"sum": [parse_spec(item) for item in items]}
    if "path" in spec:
        unknown = set(spec) - {"path", "channel"}
        if unknown:
            raise AudioError(f"audio spec {shown}: unknown keys {sorted(unknown)}")
        path, channel = spec["path"], spec.get("channel")
        if not isinstance(path, str) or not path:
            raise AudioError(f"audio spec {shown}: 'path' must be a non-empty string")
        ok = channel is None or channel == "sum" or (type(channel) is int and channel >= 0)
        if not ok:
            raise AudioError(f"audio spec {shown}: 'channel' must be a 0-based index or \"sum\"")
        return {"path": path, "channel": channel}
    raise AudioError(f"audio spec {shown}: expected a 'path' or 'sum' key")


def spec_files(spec):
    """All file paths an audio spec reads, in order."""
    node = parse_spec(spec) if not _is_parsed(spec) else spec
    if "sum" in node:
        return [p for item in node["sum"] for p in spec_files(item)]
    return [node["path"]]


def _is_parsed(spec):
    return isinstance(spec, dict) and (("path" in spec and "channel" in spec) or
                                       ("sum" in spec and all(isinstance(i, dict) for i in spec["sum"])))


def _describe(node):
    return node["path"] if "path" in node else "{sum of " + ", ".join(_describe(i) for i in node["sum"]) + "}"


def _load_node(node):
    """Resolve a parsed spec at the files' own sample rate: ``(wav (C, N) float32, sr)``."""
    if "path" in node:
        wav, sr = read_audio(node["path"])
        channel = node["channel"]
        if channel == "sum":
            wav = wav.sum(axis=0, keepdims=True)
        elif channel is not None:
            if channel >= wav.shape[0]:
                raise AudioError(f"{node['path']}: channel {channel} requested but the file has "
                                 f"{wav.shape[0]} channel(s)")
            wav = wav[channel:channel + 1]
        return np.ascontiguousarray(wav, dtype=np.float32), sr
    parts = [(_describe(item),) + _load_node(item) for item in node["sum"]]
    names = ", ".join(p[0] for p in parts)
    rates = {p[2] for p in parts}
    if len(rates) > 1:
        detail = ", ".join(f"{name} {sr} Hz" for name, _, sr in parts)
        raise AudioError(f"cannot sum [{names}]: sample rates differ ({detail})")
    chans = {p[1].shape[0] for p in parts}
    if len(chans) > 1:
        detail = ", ".join(f"{name} {w.shape[0]} ch" for name, w, _ in parts)
        raise AudioError(f"cannot sum [{names}]: channel counts differ ({detail})")
    lengths = [p[1].shape[1] for p in parts]
    shortest, longest = min(lengths), max(lengths)
    if longest - shortest >= SUM_LENGTH_TOLERANCE * longest:
        detail = ", ".join(f"{name} {w.shape[1]} samples" for name, w, _ in parts)
        raise AudioError(f"cannot sum [{names}]: lengths differ by {SUM_LENGTH_TOLERANCE:.0%} or more ({detail})")
    if shortest != longest:
        logger.debug("trimming [%s] to the shortest file (%d of up to %d samples)", names, shortest, longest)
    total = np.zeros((parts[0][1].shape[0], shortest), dtype=np.float64)
    for _, wav, _ in parts:
        total += wav[:, :shortest]
    return total.astype(np.float32), parts[0][2]


def load_audio(spec, sample_rate=None):
    """Resolve an audio spec (see module docstring) to samples.

    Args:
        spec: plain path, one-line JSON string, or the equivalent dict.
        sample_rate: resample the result to this rate (Hz) when given.
    Returns:
        (wav, sr): wav ``(C, N)`` float32 (``C = 1`` for ``channel`` specs), sr in Hz.
    Raises:
        AudioError: bad spec, unreadable file, channel out of range, or files of a ``sum`` that
        differ in rate, channel count, or length (by 1% or more; smaller differences are trimmed
        to the shortest file). The message names the files.
    """
    wav, sr = _load_node(parse_spec(spec))
    if sample_rate is not None and sample_rate != sr:
        wav, sr = resample(wav, sr, sample_rate), int(sample_rate)
    return wav, sr


def spec_header(spec):
    """``(sample rate, frames)`` of what :func:`load_audio` returns, from file headers (no decoding).

    Raises:
        AudioError: a missing or unreadable file, no samples, or files of a ``sum`` at different rates.
    """
    import soundfile as sf

    node = parse_spec(spec) if not _is_parsed(spec) else spec
    if "sum" in node:
        parts = [(_describe(item),) + spec_header(item) for item in node["sum"]]
        if len({rate for _, rate, _ in parts}) > 1:
            detail = ", ".join(f"{name} {rate} Hz" for name, rate, _ in parts)
            raise AudioError(f"cannot sum [{', '.join(p[0] for p in parts)}]: sample rates differ ({detail})")
        return parts[0][1], min(frames for _, _, frames in parts)
    path = node["path"]
    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such file")
    try:
        info = sf.info(path)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AudioError(f"{path}: not a readable audio file ({first})") from None
    if info.samplerate <= 0 or info.frames <= 0:
        raise AudioError(f"{path}: audio has no samples")
    return int(info.samplerate), int(info.frames)


def spec_duration(spec):
    """Duration in seconds of what :func:`load_audio` returns, from file headers (no decoding)."""
    rate, frames = spec_header(spec)
    return frames / rate
