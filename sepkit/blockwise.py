"""Block-wise building blocks of streamed separation (:mod:`sepkit.stream`).

A block reader of audio files (the checks of :func:`sepkit.audio.read_audio`), a streaming soxr
resampler whose output equals the one-shot resampling of the whole signal, a sliding window over a
long sequence, the k-means subsample of DC bins (:func:`subsample_bins`) that can be picked from
pieces of a file as well as from the whole, and the segment plan and nearest-centre labels that
both separation paths share.
"""
import numpy as np
import soundfile as sf
import soxr
import torch

from sepkit.audio import AudioError, probe_audio

__all__ = ["bin_keys", "subsample_bins", "BinSubsample", "AudioReader", "Resampler", "Window", "resample_row",
           "plan_segments", "nearest"]

_M32 = 0xFFFFFFFF


def bin_keys(idx, seed):
    """Pseudo-random 32-bit keys (int64 tensor) of bin indices ``idx``; distinct for indices < 2^32.

    A xorshift-multiply hash (odd multipliers below 2^31, so that no int64 product overflows).
    """
    x = (idx ^ ((idx >> 32) * 0x2545F491)) & _M32
    x = x ^ ((int(seed) * 0x9E3779B1) & _M32)
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _M32
    x = ((x ^ (x >> 15)) * 0x46CA68B5) & _M32
    return x ^ (x >> 16)


def _smallest(keys, n):
    """Positions (sorted) of the ``n`` smallest ``keys``, ties to the earlier position."""
    if keys.numel() <= n:
        return torch.arange(keys.numel(), device=keys.device)
    return torch.sort(keys, stable=True).indices[:n].sort().values


def subsample_bins(idx, n, seed):
    """Positions in ``idx`` (sorted bin indices) of the k-means subsample: at most ``n`` bins.

    The bins with the ``n`` smallest :func:`bin_keys`: uniform without replacement, fixed by
    ``seed``; :class:`BinSubsample` picks the same bins from pieces of ``idx``.
    """
    return _smallest(bin_keys(idx, seed), n)


class BinSubsample:
    """:func:`subsample_bins` over bins that arrive in pieces, in increasing index order, with rows.

    Holds at most ``2 n`` bins: a piece keeps only keys below the ``n``-th smallest so far.
    """

    def __init__(self, n, seed):
        self.n, self.seed = int(n), seed
        self.idx, self.keys, self.rows, self.count, self.cut = [], [], [], 0, None

    def add(self, idx, rows):
        keys = bin_keys(idx, self.seed)
        if self.cut is not None:  # a key equal to the cut loses the tie to the earlier bin
            keep = keys < self.cut
            idx, keys, rows = idx[keep], keys[keep], rows[keep]
        self.idx.append(idx)
        self.keys.append(keys)
        self.rows.append(rows)
        self.count += idx.numel()
        if self.count > 2 * self.n:
            self._prune()

    def _prune(self):
        idx, keys, rows = (torch.cat(v) for v in (self.idx, self.keys, self.rows))
        pos = _smallest(keys, self.n)
        self.idx, self.keys, self.rows, self.count = [idx[pos]], [keys[pos]], [rows[pos]], pos.numel()
        if pos.numel() == self.n:
            self.cut = self.keys[0].max()

    def result(self):
        """``(bin indices (M,) sorted, rows (M, ...))``, M <= n."""
        self._prune()
        return self.idx[0], self.rows[0]


class AudioReader:
    """An audio file in blocks ``(channels, n)`` float32, with :func:`sepkit.audio.read_audio`'s checks."""

    def __init__(self, path):
        self.path = str(path)
        info = probe_audio(self.path)
        self.sample_rate, self.channels, self.frames = int(info.samplerate), int(info.channels), int(info.frames)
        if self.frames <= 0:
            raise AudioError(f"{self.path}: audio has no samples")

    def blocks(self, n):
        """Yield the samples in blocks of ``n`` (the last one shorter)."""
        done = 0
        try:
            with sf.SoundFile(self.path) as f:
                while done < self.frames:
                    data = f.read(min(n, self.frames - done), dtype="float32", always_2d=True)
                    if data.shape[0] == 0:
                        break
                    if not np.isfinite(data).all():
                        raise AudioError(f"{self.path}: audio contains NaN or infinite samples")
                    done += data.shape[0]
                    yield np.ascontiguousarray(data.T)
        except AudioError:
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise AudioError(f"{self.path}: cannot decode audio, file may be truncated ({first})") from None
        if done < self.frames:
            raise AudioError(f"{self.path}: truncated audio: header says {self.frames} samples, read {done}")


class Resampler:
    """Rows ``(R, n)`` in blocks from ``orig`` Hz to ``target`` Hz, ``length`` samples per row in all.

    Identical to :func:`resample_row` of each whole row (soxr HQ, cut or zero padded).
    """

    def __init__(self, rows, orig, target, length):
        self.streams = None if orig == target else [
            soxr.ResampleStream(orig, target, 1, dtype="float32", quality="soxr_hq") for _ in range(rows)]
        self.rows, self.length, self.done = rows, length, 0

    def push(self, block, last):
        if self.streams is None:
            y = block
        else:
            y = np.stack([s.resample_chunk(np.ascontiguousarray(r), last=last) for s, r in zip(self.streams, block)])
        y = y[:, :self.length - self.done]
        if last and self.done + y.shape[1] < self.length:
            y = np.pad(y, ((0, 0), (0, self.length - self.done - y.shape[1])))
        self.done += y.shape[1]
        return y.astype(np.float32, copy=False)


class Window:
    """Items ``[start, end)`` of a long sequence along axis ``dim`` of a tensor, global indices."""

    def __init__(self, dim=0):
        self.dim, self.data, self.start = dim, None, 0

    @property
    def end(self):
        return self.start + (0 if self.data is None else self.data.shape[self.dim])

    def append(self, t):
        self.data = t if self.data is None else torch.cat([self.data, t], self.dim)

    def get(self, a, b):
        assert self.start <= a <= b <= self.end, (self.start, a, b, self.end)
        return self.data.narrow(self.dim, a - self.start, b - a)

    def drop_before(self, a):
        a = min(max(a, self.start), self.end)
        if self.data is not None and a > self.start:
            self.data = self.data.narrow(self.dim, a - self.start, self.end - a).clone()
            self.start = a


def resample_row(x, orig_sr, target_sr, length=None):
    """One channel ``(N,)`` -> ``(length,)`` float32; the same soxr HQ filter as :func:`sepkit.audio.resample`.

    ``length`` defaults to ``ceil(N * target_sr / orig_sr)``, as librosa does; shorter output is
    zero padded, longer output cut.
    """
    if length is None:
        length = resampled_length(x.shape[-1], orig_sr, target_sr)
    y = x if orig_sr == target_sr else soxr.resample(x, orig_sr, target_sr, quality="soxr_hq")
    if y.shape[-1] < length:
        return np.pad(y, (0, length - y.shape[-1])).astype(np.float32, copy=False)
    return y[:length].astype(np.float32, copy=False)


def resampled_length(n, orig_sr, target_sr):
    return int(np.ceil(n * target_sr / orig_sr))


def plan_segments(num_frames, segment, overlap):
    """Segment starts and the frames each segment owns.

    Args:
        num_frames: T. segment: L frames. overlap: fraction in [0, 1) shared by neighbours.
    Returns:
        ``(starts, owned, length)``: ``starts`` sorted, every segment ``[s, s + length)`` inside
        ``[0, T)`` (the last one ends at T; ``length = min(L, T)``); ``owned`` is a list of
        ``(a, b)`` frame ranges, a partition of ``[0, T)``, each frame given to the segment in which
        it is most central.
    """
    length = min(segment, num_frames)
    hop = max(1, int(round(length * (1.0 - overlap))))
    starts = list(range(0, num_frames - length + 1, hop))
    if starts[-1] + length < num_frames:
        starts.append(num_frames - length)
    bounds = [0] + [(s1 + s0 + length) // 2 for s0, s1 in zip(starts, starts[1:])] + [num_frames]
    return starts, list(zip(bounds[:-1], bounds[1:])), length


def nearest(emb, centers):
    """Labels ``(...)`` of the nearest centre for embeddings ``(..., D)``; centres ``(k, D)``.

    ``||c||^2 - 2 e.c`` (``||e - c||^2`` up to the constant ``||e||^2``), computed in place; for k = 2 a
    comparison (ties to centre 0, as argmin; the same labels, without a reduction over a last axis of 2)."""
    d = (emb @ centers.t()).mul_(-2).add_(centers.square().sum(1))
    return (d[..., 1] < d[..., 0]).long() if d.shape[-1] == 2 else d.argmin(-1)
