"""Online (live) separation with a causal model: blocks of any size in, separated blocks out, fixed delay.

::

    sep = Separator.from_pretrained("causal.pt")            # body: lstm (a causal model)
    live = sep.online(sample_rate=44100, channels=2, head="mi")
    for block in blocks:                                     # (2, n) float, n from 1 sample to seconds
        out = live.process(block)                            # {source: (2, n)}: n samples per source
    tail = live.flush()                                      # {source: (2, latency_samples)}

:class:`OnlineSeparator` keeps between blocks everything the offline path would compute from past
samples: the streaming soxr resamplers' state (input rate -> model rate for each channel, and back for
each estimate), the STFT's overlap (samples that the next frames still read), the features' context,
the LSTM state and the frames of the body's lookahead, the DC head's cluster centres
(:mod:`sepkit.engine`), and the inverse STFT's tail (frames that the next samples still overlap). The
per-block steps are those of :class:`sepkit.engine.BlockEngine`, the streamed file path's engine.

Delay and equality. Every call :meth:`process` with a block of ``n`` samples returns ``n`` samples per
source; :meth:`flush` returns ``latency_samples`` more. Concatenated, the outputs are ``latency_samples``
zeros followed by :meth:`Separator.separate <sepkit.separate.Separator.separate>`'s output on the whole
signal with ``band="model"`` (the causal model's offline path: the network over the whole sequence; online
separation keeps the model-rate path, input resampled to the model's rate and estimates back, for its latency:
the offline default ``band="full"``, :mod:`sepkit.fullband`, differs above the model's rate), to float32 rounding
(tests/test_online.py: within 1e-5), whatever the block sizes. ``latency_samples`` is the smallest
fixed delay for which every output sample is complete when it is due (at the input's rate):

* same rate as the model: ``n_fft - 1 + (lookahead + delta) * hop``, where ``delta`` is 2 frames
  when the model's features have deltas (``use_delta``: a delta looks 2 frames ahead), else 0. Sample
  ``m`` is complete once every frame that overlaps it has its mask: the last such frame reads up to
  sample ``m + n_fft - 1`` (at most), and its mask needs ``lookahead + delta`` frames more. An output
  sample is returned in the call that delivers the input sample ``latency_samples`` after it (0 would
  be a pass-through). No hop is added: a frame is computed as soon as its last sample arrives.
* another rate: the same, plus the largest lag of soxr's streaming HQ resampler behind the ideal
  output count, measured once per pair of rates (:func:`resampler_lag`) for both directions, at the
  input's rate. soxr's filter and block processing are long: e.g. 44.1 kHz -> 16 kHz -> 44.1 kHz adds
  about 100 ms, 8 kHz about 235 ms; feed the model's rate to avoid it.

``latency_seconds = latency_samples / sample_rate``. The time spent in each call is kept
(``block_seconds``; :attr:`rtf` = compute time / audio time).

Rejected blocks (one-line :class:`~sepkit.errors.SeparationError`): another channel count, another
rate (``process(block, sample_rate=)``), NaN or infinite samples, a non-float dtype, an array that is
not ``(n,)`` or ``(channels, n)``, a block after :meth:`flush`. Every check runs before any state
changes: the next good block gives the output it would have given had the bad one never been sent. An
error inside the computation (the model's NaN or infinite output, a device error) stops the stream:
later calls are refused in one line.
A model whose body is not causal (BLSTM), MISI phase reconstruction, or the DC head of a model
file without ``dc_centers`` are refused when the separator is made.
"""
import functools
import math
import time

import numpy as np
import soxr
import torch

from sepkit.engine import BlockEngine, CausalMasks, dc_anchors, feature_lookahead, is_causal
from sepkit.errors import SeparationError

__all__ = ["OnlineSeparator", "resampler_lag"]

_PROBE_STEP = 16  # input samples per push of the lag probe


@functools.lru_cache(maxsize=None)
def resampler_lag(orig, target):
    """The largest lag (``target``-rate samples) of a streaming soxr HQ resampler's output count behind
    ``n * target / orig`` after ``n`` input samples, plus 2 samples of margin.

    soxr's output count depends only on how many samples went in, not on how they were cut into
    chunks (checked by tests/test_online.py), and its lag repeats with soxr's processing blocks; it
    is measured over 2 s of input pushed ``_PROBE_STEP`` samples at a time (a lag inside a push is at
    most ``_PROBE_STEP * target / orig`` above the lag before it).
    """
    stream = soxr.ResampleStream(orig, target, 1, dtype="float32", quality="soxr_hq")
    zeros, n, out, worst = np.zeros(_PROBE_STEP, np.float32), 0, 0, 0.0
    for _ in range(2 * orig // _PROBE_STEP + 1):
        worst = max(worst, n * target / orig - out)
        out += stream.resample_chunk(zeros).shape[0]
        n += _PROBE_STEP
    return worst + _PROBE_STEP * target / orig + 2


class _Fifo:
    """Samples along the last axis, appended and taken from the front."""

    def __init__(self, rows):
        self.parts, self.rows, self.size = [], rows, 0

    def append(self, a):
        if a.shape[-1]:
            self.parts.append(a)
            self.size += a.shape[-1]

    def take(self, n):
        whole = np.concatenate(self.parts, -1) if self.parts else np.zeros((*self.rows, 0), np.float32)
        self.parts = [whole[..., n:]] if whole.shape[-1] > n else []
        self.size = whole.shape[-1] - min(n, whole.shape[-1])
        return whole[..., :n]


class OnlineSeparator:
    """A live stream of blocks through a causal model; see this module's text.

    Args:
        sep: a :class:`~sepkit.separate.Separator` of a causal model (its options apply: device,
            dtype, ``residual``, ``silence_db``, ``dc_time_constant``, ``block_frames``).
        sample_rate: the stream's rate (Hz, any; resampled to the model's and back).
        channels: the stream's channel count; masks estimated on the mono downmix apply to every channel.
        head: ``mi`` or ``dc`` (default: the separator's default head).
    """

    def __init__(self, sep, sample_rate, channels=1, head=None):
        if not is_causal(sep.model):
            raise SeparationError("the model's body is not causal (a BLSTM needs the whole signal): online "
                                  "separation needs a causal model (body: lstm)")
        if sep.misi_iters:
            raise SeparationError("MISI phase reconstruction looks misi_iters windows ahead: not online (misi_iters 0)")
        if not (isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool) and sample_rate > 0):
            raise SeparationError(f"invalid sample rate {sample_rate!r} (a positive integer)")
        if not (isinstance(channels, (int, np.integer)) and not isinstance(channels, bool) and channels > 0):
            raise SeparationError(f"invalid channel count {channels!r} (a positive integer)")
        self.sep, self.head = sep, sep._check_head(head)
        if self.head == "dc":
            dc_anchors(sep)  # refused now, not at the first block
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.n_est = len(sep.sources) - int(sep.residual)
        R, r = sep.sample_rate, self.sample_rate
        c = sep.frontend.config
        reach = c.n_fft + (sep.model.encoder.lookahead + feature_lookahead(c)) * c.hop_length  # model-rate samples
        if r == R:
            self.latency_samples = reach - 1
            self.res_in = self.res_out = None
        else:
            self.latency_samples = math.ceil((resampler_lag(r, R) + reach) * r / R + resampler_lag(R, r))
            self.res_in = [soxr.ResampleStream(r, R, 1, dtype="float32", quality="soxr_hq") for _ in range(channels)]
            self.res_out = [soxr.ResampleStream(R, r, 1, dtype="float32", quality="soxr_hq")
                            for _ in range(self.n_est * channels)]
        self.engine = BlockEngine(sep, self.channels)
        self.masker = CausalMasks(sep, self.head)
        self.n_in = self.n_model = self.fed = self.done = self.emitted = self.zeros_out = 0
        self.out = _Fifo((self.n_est, self.channels))  # estimates at the input's rate, not returned yet
        self.held = _Fifo((self.channels,))  # input samples not yet matched by estimates (residual)
        self.block_seconds, self.finished, self.flat, self.broken = [], False, False, None

    @property
    def latency_seconds(self):
        return self.latency_samples / self.sample_rate

    @property
    def rtf(self):
        """Compute time over audio time so far (real-time factor)."""
        return sum(self.block_seconds) / max(self.n_in / self.sample_rate, 1e-12)

    def _check(self, block, sample_rate):
        if self.broken:
            raise SeparationError(f"the stream stopped at an earlier error ({self.broken}); make a new online "
                                  "separator")
        if self.finished:
            raise SeparationError("the stream was flushed; make a new online separator for another stream")
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise SeparationError(f"a block at {sample_rate} Hz in a stream at {self.sample_rate} Hz (one rate per "
                                  "stream)")
        if not isinstance(block, (np.ndarray, torch.Tensor)):
            raise SeparationError(f"a block must be a numpy array or torch tensor, got {type(block).__name__}")
        if isinstance(block, torch.Tensor):
            if not block.is_floating_point():
                raise SeparationError(f"a block must hold floats (in [-1, 1]), got dtype {block.dtype}")
            block = block.detach().cpu().float().numpy()  # bfloat16 has no numpy type
        if block.dtype.kind != "f":
            raise SeparationError(f"a block must hold floats (float16/32/64 in [-1, 1]), got dtype {block.dtype}")
        if block.ndim == 1 and self.channels == 1:
            block = block[None]
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise SeparationError(f"a block of shape {block.shape} in a stream of {self.channels} channel(s): "
                                  f"expected ({self.channels}, n)" + (" or (n,)" if self.channels == 1 else ""))
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused below
            x = np.array(block, dtype=np.float32)  # a copy: audio callbacks refill one buffer; samples are kept
        if not np.isfinite(x).all():
            raise SeparationError("the block contains NaN or infinite samples" + (
                " (beyond float32's range)" if np.isfinite(block).all() else ""))
        return x

    def process(self, block, sample_rate=None):
        """Separate the next block ``(channels, n)`` (or ``(n,)`` for one channel) of float samples.

        Returns ``{source: array}`` shaped like the block: the estimates of the samples
        ``latency_samples`` before this block's (zeros before the stream's start).
        """
        t0 = time.perf_counter()
        x = self._check(block, sample_rate)
        self.n_in += x.shape[1]
        if self.sep.residual:
            self.held.append(x)
        self.flat = np.ndim(block) == 1
        self._guarded(x, False)
        out = self._take(x.shape[1], self.flat)
        self.block_seconds.append(time.perf_counter() - t0)
        return out

    def flush(self):
        """End the stream: the last ``latency_samples`` samples of each source (see the module's text)."""
        t0 = time.perf_counter()
        if self.finished:
            raise SeparationError("the stream was already flushed")
        self.finished = True
        if self.broken:
            raise SeparationError(f"the stream stopped at an earlier error ({self.broken})")
        if self.n_in:
            self._guarded(np.zeros((self.channels, 0), np.float32), True)
        out = self._take(self.latency_samples, self.flat, last=True)
        self.block_seconds.append(time.perf_counter() - t0)
        return out

    def _guarded(self, x, last):
        """:meth:`_advance`; an error there (the model's NaN output, a device error) leaves the state half
        advanced, so the stream stops: later calls are refused."""
        try:
            with torch.inference_mode():
                self._advance(x, last)
        except BaseException as exc:
            self.broken = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise

    def _advance(self, x, last):
        """Push input samples through every step as far as they allow (to the end when ``last``)."""
        sep, eng = self.sep, self.engine
        if self.res_in is not None:
            y = np.stack([s.resample_chunk(row, last=last) for s, row in zip(self.res_in, x)])
            if last:  # as blockwise.resample_row: the model-rate length is ceil(N * R / r), zero padded
                short = math.ceil(self.n_in * sep.sample_rate / self.sample_rate) - self.n_model - y.shape[1]
                y = np.pad(y, ((0, 0), (0, max(0, short))))
        else:
            y = x
        self.n_model += y.shape[1]
        eng.push(torch.from_numpy(y).to(sep.device))
        if last:
            eng.end()
        eng.ensure_feats(eng.frames_known)
        if eng.feats.end > self.fed:
            a, b = self.fed, eng.feats.end
            eng.masks.append(self.masker.push(eng.feats.get(a, b), eng.mel.get(a, b)))
            self.fed = b
            eng.feats.drop_before(b)
            eng.mel.drop_before(b - eng.la)
        if last:
            eng.masks.append(self.masker.finish())
        s1 = eng.complete_samples()
        est = np.zeros((self.n_est * self.channels, 0), np.float32)
        if s1 > self.done:
            est = eng.synth_samples(self.done, s1, self.n_est).cpu().numpy().reshape(self.n_est * self.channels, -1)
            self.done = s1
            eng.drop_synthesised(s1)
        if self.res_out is not None:
            est = np.stack([s.resample_chunk(np.ascontiguousarray(row), last=last)
                            for s, row in zip(self.res_out, est)])
        if not np.isfinite(est).all():
            raise SeparationError("the model produced NaN or infinite samples")
        self.out.append(est.reshape(self.n_est, self.channels, -1))

    def _take(self, n, flat, last=False):
        """The next ``n`` samples of the output stream: zeros, then the estimates in order."""
        zeros = max(0, min(n, self.latency_samples - self.zeros_out))
        self.zeros_out += zeros
        want = n - zeros  # estimates of input samples [emitted, emitted + want)
        if last:  # the whole input: estimates cut or zero padded to its length, as the offline path
            want = self.n_in - self.emitted
            if self.out.size < want:
                self.out.append(np.zeros((self.n_est, self.channels, want - self.out.size), np.float32))
        elif self.out.size < want:
            raise RuntimeError(f"online separator: {want} estimated samples due, {self.out.size} ready (latency "
                               f"{self.latency_samples} too small: a bug)")
        est = self.out.take(want)
        if last:
            self.out = _Fifo((self.n_est, self.channels))
        self.emitted += want
        parts = [est[s] for s in range(self.n_est)]
        if self.sep.residual:
            parts.append(self.held.take(want) - est.sum(0))
        lead = np.zeros((self.channels, zeros), np.float32)
        out = {}
        for name, p in zip(self.sep.sources, parts):
            y = np.concatenate([lead, p], -1) if zeros else p
            out[name] = y[0] if flat else y
        return out
