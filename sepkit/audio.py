"""Audio I/O, resampling and channel handling.

Waveforms are float32 numpy arrays shaped ``(channels, samples)``. Every reading error is raised
as :class:`AudioError` whose message names the file and the problem in one line, so that command
line tools can print it as is.
"""
import errno
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

__all__ = ["AudioError", "check_wav_complete", "probe_audio", "read_audio", "write_audio", "resample", "to_mono",
           "atomic_path"]


class AudioError(RuntimeError):
    """A file that cannot be read or written as audio; the message names the file."""


def check_wav_complete(path):
    """Raise :class:`AudioError` for a RIFF/WAVE file whose data chunk is cut short.

    libsndfile silently reads what is there, so a truncated WAV would be separated as a shorter
    song; a declared data size larger than the bytes left in the file means a partial copy.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            size = os.fstat(f.fileno()).st_size
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return
                n = int.from_bytes(chunk[4:], "little")
                if chunk[:4] == b"data":
                    left = size - f.tell()
                    if 0 < n < 0xFFFFFFFF and n > left:  # 0 / 0xFFFFFFFF: length unknown (streamed)
                        raise AudioError(f"{path}: truncated audio: data chunk declares {n} bytes, file has {left}")
                    return
                f.seek(n + (n & 1), os.SEEK_CUR)
    except OSError:
        return  # read_audio reports unreadable files itself


def probe_audio(path):
    """The checks made before reading ``path`` (also by the block reader of :mod:`sepkit.stream`).

    Returns:
        ``soundfile.info(path)``.
    Raises:
        AudioError: missing, directory, empty, truncated WAV, not audio, zero channels.
    """
    path = str(path)
    problem = path_problem(path)
    if problem is not None:
        raise AudioError(f"{path}: {problem}")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file")
    check_wav_complete(path)
    try:
        info = sf.info(path)
    except Exception as exc:  # libsndfile's messages are multi-line; keep the first line.
        raise AudioError(f"{path}: not a readable audio file ({_first_line(exc)})") from None
    if info.channels < 1:
        raise AudioError(f"{path}: audio has zero channels")
    return info


def read_audio(path, sample_rate=None, mono=False, dtype="float32"):
    """Read an audio file.

    Args:
        path: any format the installed libsndfile decodes (wav, flac, ogg, ...).
        sample_rate: resample to this rate (Hz) when given.
        mono: average the channels to one.
    Returns:
        (wav, sr): wav is ``(channels, samples)`` float32 (``(1, samples)`` when mono), sr in Hz.
    Raises:
        AudioError: missing, empty, truncated or non-audio files, zero channels, NaN/inf samples.
    """
    path = str(path)
    info = probe_audio(path)
    try:
        data, sr = sf.read(path, dtype=dtype, always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio, file may be truncated ({_first_line(exc)})") from None
    if info.frames > 0 and data.shape[0] < info.frames:
        raise AudioError(f"{path}: truncated audio: header says {info.frames} samples, read {data.shape[0]}")
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio has no samples")
    if data.shape[1] == 0:
        raise AudioError(f"{path}: audio has zero channels")
    wav = np.ascontiguousarray(data.T)
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if mono:
        wav = to_mono(wav)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)


def write_audio(path, wav, sample_rate, subtype=None):
    """Write ``wav`` (``(channels, samples)`` or ``(samples,)``) atomically: temp file, then rename."""
    wav = np.asarray(wav)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise AudioError(f"{path}: expected (channels, samples) audio, got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: refusing to write NaN or infinite samples")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            sf.write(tmp, wav.T, int(sample_rate), subtype=subtype, format=_format_of(path))
    except AudioError:
        raise
    except OSError as exc:
        raise AudioError(f"{path}: cannot write ({exc.strerror or exc})") from None


def path_problem(path):
    """Why ``path`` cannot be opened, in a few words (``"no such file"``, ``"symbolic link loop"``, ...), or None."""
    try:
        os.stat(path)
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (too many levels of symbolic links)"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
        if exc.errno == errno.ENOENT:
            return "no such file"
        return f"cannot be opened ({exc.strerror or exc})"


def current_umask():
    """The process's file mode creation mask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def umask_mkdtemp(prefix, suffix, dir):
    """``tempfile.mkdtemp`` whose directory follows the umask (mkdtemp makes 0700) once renamed into place."""
    tmp = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=dir)
    os.chmod(tmp, 0o777 & ~current_umask())
    return Path(tmp)


def umask_mkstemp(prefix, suffix, dir):
    """``tempfile.mkstemp`` (closed) whose file follows the umask as ``open()`` would (mkstemp makes 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=dir)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    return tmp


class atomic_path:
    """Context manager yielding a temporary path beside ``path``; renamed onto it on success only.

    Usage: ``with atomic_path(out) as tmp: write(tmp)``. On an exception the temporary file is
    removed and ``path`` is left untouched, so no half-written output is ever visible.
    """

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self):
        self.tmp = umask_mkstemp(prefix="." + self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            with open(self.tmp, "rb+") as fh:  # data on disk before the rename makes it visible
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.unlink(self.tmp)
        return False


def resample(wav, orig_sr, target_sr):
    """Resample along the last axis with soxr (librosa's default, high quality)."""
    if orig_sr == target_sr:
        return wav
    import librosa

    return librosa.resample(np.asarray(wav, dtype=np.float32), orig_sr=orig_sr, target_sr=target_sr,
                            res_type="soxr_hq", axis=-1).astype(np.float32)


def to_mono(wav):
    """Average channels: ``(channels, samples) -> (1, samples)``."""
    wav = np.asarray(wav)
    if wav.ndim == 1:
        return wav[None]
    return wav.mean(axis=0, keepdims=True).astype(wav.dtype)


def _format_of(path):
    ext = Path(path).suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}.get(ext, "WAV")


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
