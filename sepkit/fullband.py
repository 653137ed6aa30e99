"""Full-band stems: the model's masks applied to the input's own STFT at the input's rate.

A model works at its own rate (16 kHz); on the default path of :class:`sepkit.Separator` (``band="model"``) the
input is resampled to it, masked and the estimates resampled back, so a 44.1 kHz song's stems hold nothing
above 8 kHz. With ``band="full"`` (the default whenever the input's rate is above the model's) the masks are
still estimated at the model's rate, but applied to the STFT of the input itself, at its rate, and inverted
there (no resampling of the estimates):

* **Grid.** The input-rate STFT has the model's window *duration*: ``hop_in = round(hop * r)`` and
  ``n_fft_in = (n_fft / hop) * hop_in`` (``r`` = input rate / model rate; the same overlap, so the inverse
  STFT keeps its fast overlap-add), else ``n_fft * r`` rounded to an even number; ``win_length`` likewise.
  A bin is then as wide in Hz as the model's, a frame as long in seconds (:func:`input_grid`).
* **Time.** Input frame ``j`` (centre ``j * hop_in / rate_in`` s) takes the masks of the model's frames
  around the same time, linearly interpolated between the two nearest (clamped at the ends).
* **Frequency, up to the model's Nyquist frequency.** The masks go to the model's STFT bins (MI/DC masks on
  mel bands through the existing mel -> linear transfer, :meth:`sepkit.frontend.Frontend.mask_to_linear`;
  linear-bin models as they are), then each input bin takes the linear interpolation of the two model bins
  around its centre frequency.
* **Above it (the extension rule).** Each source's mask is the mean of its model-bin masks over the top octave
  of the model's band (``fs / 4`` to ``fs / 2``: 4-8 kHz at 16 kHz), per frame, the same for every bin above.
  The network never sees that band; the octave just below it is the best evidence it gives of who owns the
  high band in that frame (cymbals and hi-hats -> drums, sibilants -> vocals), and a whole octave rather than
  the last bins is robust to the resampler's roll-off near Nyquist, where the model sees little energy.

Every input bin's mask is therefore a *convex combination* (weights >= 0 summing to 1) of the model's masks
(mel -> linear transfer columns, time and frequency interpolation, octave mean): masks that sum to one over
the sources (softmax MI, one-hot DC, oracle IBM) still do, with no renormalisation, and the estimates still
sum to the mixture; an all-ones mask gives the input back (perfect reconstruction). (The oracle Wiener-like
mask sums to less than one in near-silent bins: its rows renormalise above the Nyquist frequency,
:meth:`FullBand.masks` ``renorm``.)

Where the input's rate is the model's (or below it), ``band="full"`` is the model path itself, so outputs are
exactly those of ``band="model"``. The online path (:mod:`sepkit.online`, ``sepkit-stream``) keeps the
model-rate path (its latency budget). Both the in-memory and streamed file paths use :func:`synthesize`,
block by block on a :class:`~sepkit.engine.BlockEngine` of input-rate samples, so their outputs are equal.

Measured (egs/musdb18/chimera ``exp/ft_mir1k_s0`` MI head, the 10 7-s excerpts of ``data/musdb18_test``,
``separate_data --band``, ``score_v4``, ``band_energy``): BSS eval v4 SDR vocals / accompaniment 2.34 / 7.33 dB on
the model band, 2.43 / 7.61 dB on the full band; the estimates' energy above 8 kHz against the references' -53.7 /
-46.6 dB -> -5.6 / -0.1 dB. The extension band's start hardly matters for SDR (2-8 kHz, 4-8 kHz, 7.2-8 kHz: within
0.01 dB); the octave gives the high-band energy closest to the references' (2-8 kHz: -6.3 / +0.7 dB, 7.2-8 kHz:
-6.8 / +0.7 dB). Oracle rows on the same excerpts (conf/feats.yaml): mel IBM vocals 7.24 -> 7.76 dB, mel Wiener-like
7.58 -> 7.91 dB (model -> full band); on the full-band STFT itself (``ibm_stft`` / ``wlm_stft``) 7.90 / 8.29 dB.
The 1412-point FFT (4 x 353, a prime) costs: 60 s of 44.1 kHz stereo through that model (``separate_file``, MI, one
thread) take 1.0 s CPU on the model band, 1.45 s on the full band. Grids with fast FFT sizes were tried and left:
1400 / hop 350 (1.3 s; frames drift from the model's, so the time interpolation blends masks: oracle Wiener-like
vocals 7.91 -> 7.80 dB) and 1412 zero padded to 1440 (1.27 s; bins between the model's: 7.72 dB, with nearest-bin
instead of interpolation 7.82 dB); the model's own SDR was the same (2.43 / 7.60-7.61 dB) on all three.
"""
import itertools

import numpy as np
import torch

from sepkit.blockwise import Window
from sepkit.engine import BlockEngine
from sepkit.frontend import FeatureConfig, Frontend
from sepkit.phase import misi

__all__ = ["BANDS", "TOP_BAND", "FullBand", "input_grid", "freq_matrix", "for_rate", "synthesize", "reconstruct",
           "reconstruct_stream"]

BANDS = ("full", "model")
TOP_BAND = 0.5  # the extension averages the model bins from TOP_BAND x its Nyquist frequency up to it (an octave)


def _even(x):
    return max(2, 2 * int(round(x / 2)))


def input_grid(config, sample_rate):
    """:class:`FeatureConfig` of the STFT at ``sample_rate`` Hz with the window duration of ``config`` (the model's)."""
    ratio = sample_rate / config.sample_rate
    hop = max(1, int(round(config.hop_length * ratio)))
    r, rem = divmod(config.n_fft, config.hop_length)
    n_fft = r * hop if rem == 0 and (r * hop) % 2 == 0 else _even(config.n_fft * ratio)
    win = min(n_fft, _even(config.win_length * ratio)) if config.win_length else 0
    return FeatureConfig(sample_rate=int(sample_rate), n_fft=n_fft, hop_length=hop, win_length=win,
                         n_mels=config.n_mels, fmin=config.fmin, use_delta=config.use_delta)


def freq_matrix(model, grid, top=TOP_BAND):
    """``(K, K_in)`` float64 weights of the model's linear bins for each input bin; every column sums to 1.

    Args:
        model, grid: :class:`FeatureConfig` of the model (K = n_fft / 2 + 1 bins) and of the input (K_in).
        top: the extension band starts at ``top`` x the model's Nyquist frequency.
    """
    K, K_in, fs = model.n_fft // 2 + 1, grid.n_fft // 2 + 1, model.sample_rate
    f_in = np.arange(K_in) * grid.sample_rate / grid.n_fft  # centre frequencies (Hz) of the input bins
    below = f_in <= fs / 2
    w = np.zeros((K, K_in))
    p = np.clip(f_in[below] * model.n_fft / fs, 0, K - 1)  # fractional model bin
    k0 = np.minimum(np.floor(p).astype(np.int64), K - 2)
    cols = np.nonzero(below)[0]
    np.add.at(w, (k0, cols), 1.0 - (p - k0))
    np.add.at(w, (k0 + 1, cols), p - k0)
    band = np.arange(K) * fs / model.n_fft >= top * fs / 2
    w[np.ix_(band, ~below)] = 1.0 / band.sum()  # the extension rule: the top octave's mean
    return w


class FullBand:
    """The mapping of masks on a model's bins and frames onto the STFT grid of one input rate.

    Args:
        frontend: the model's :class:`~sepkit.frontend.Frontend`. bins: ``"mel"`` or ``"linear"`` (mask bins).
        sample_rate: the input's rate (Hz). device: where the mapping runs. misi_iters: MISI iterations of the
        reconstruction (:mod:`sepkit.phase`, at the input's rate). block_frames: input frames per block.
    """

    def __init__(self, frontend, bins, sample_rate, device, misi_iters=0, block_frames=1024):
        c = frontend.config
        self.device, self.misi_iters, self.block_frames = torch.device(device), int(misi_iters), int(block_frames)
        self.frontend = Frontend(input_grid(c, sample_rate)).to(self.device)  # BlockEngine's sep.frontend
        g = self.frontend.config
        self.sample_rate, self.hop, self.half = g.sample_rate, g.hop_length, g.n_fft // 2
        self.step = g.hop_length * c.sample_rate / (g.sample_rate * c.hop_length)  # model frames per input frame
        w = torch.from_numpy(freq_matrix(c, g))
        if bins == "mel":
            w = frontend.transfer.detach().cpu().double() @ w  # (F, K) @ (K, K_in): columns still sum to 1
        self.freq = w.float().to(self.device)  # (F, K_in)
        self.above = torch.arange(g.n_fft // 2 + 1, device=self.device) * g.sample_rate / g.n_fft > c.sample_rate / 2
        reach = -(-g.n_fft // g.hop_length)
        self.margin = reach + 1 + self.misi_iters * reach  # frames each side that a block's inverse STFT needs

    def num_frames(self, n):
        return self.frontend.num_frames(n)

    def _frames(self, xpad, a, b):
        """STFT frames ``[a, b)`` ``(C, b - a, K_in)`` of samples ``xpad`` that start at frame a's first sample."""
        return self.frontend.frames(xpad, a, b)

    def time_weights(self, a, b, T):
        """Input frames ``[a, b)`` -> ``(i0, w)`` ``(b - a,)``: model frame at or before each, weight of the next."""
        u = np.minimum(np.arange(a, b) * self.step, T - 1)
        i0 = np.floor(u).astype(np.int64)
        return i0, u - i0

    def model_span(self, a, b, T):
        """Model frames ``[lo, hi)`` whose masks input frames ``[a, b)`` read."""
        i0, _ = self.time_weights(a, b, T)
        return int(i0[0]), min(T, int(i0[-1]) + 2)

    def masks(self, masks, lo, a, b, T, renorm=False):
        """Model masks ``(n, F, S)`` of model frames from ``lo`` -> masks on input frames ``[a, b)`` and bins,
        ``(S, b - a, K_in)``: time interpolation, then the frequency map (both convex, see the module).

        ``renorm``: above the model's Nyquist frequency, divide the masks by their sum over the S sources (equal
        shares where it is 0): for masks meant to sum to one that do not everywhere, e.g. the oracle Wiener-like
        mask ``|S_c|^2 / (sum + eps)`` in the near-silent bins of the resampler's roll-off, whose deficit the
        octave mean would otherwise carry onto the whole high band. A no-op for softmax / one-hot masks.
        """
        i0, w = self.time_weights(a, b, T)
        i1 = np.minimum(i0 + 1, T - 1)
        wt = torch.as_tensor(w, dtype=torch.float32, device=masks.device)[:, None, None]
        m = masks[torch.as_tensor(i0 - lo, device=masks.device)] * (1 - wt) + \
            masks[torch.as_tensor(i1 - lo, device=masks.device)] * wt  # (b - a, F, S)
        lin = m.permute(2, 0, 1) @ self.freq  # (S, b - a, F) @ (F, K_in)
        if renorm:
            hi = lin[..., self.above]  # (S, b - a, K_hi)
            total = hi.sum(0, keepdim=True)
            lin[..., self.above] = torch.where(total > 1e-6, hi / total.clamp_min(1e-6), 1.0 / lin.shape[0])
        return lin

    def synth(self, spec, lin, a0, a, end):
        """Input STFT frames ``(C, n, K_in)`` from frame ``a0`` and masks ``(S, n, K_in)`` -> samples
        ``[a * hop, end)`` ``(S, C, m)`` (:func:`synth_frames`)."""
        return synth_frames(spec, lin, self.frontend, self.misi_iters, a0, a, end)


def synth_frames(spec, lin, frontend, misi_iters, a0, a, end):
    """Masked STFT frames ``(C, n, K)`` (from frame ``a0``; masks ``(S, n, K)``) -> samples ``[a * hop, end)``
    ``(S, C, m)`` of ``frontend``'s inverse STFT (MISI with ``misi_iters``); the frames outside ``[a, end)``
    only complete the overlap-add."""
    C, n, _ = spec.shape
    S, hop = lin.shape[0], frontend.config.hop_length
    if misi_iters:  # the whole span of the frames (margins included), then the block's samples
        y = misi(spec, lin, frontend, max(end - a0 * hop, (n - 1) * hop + 1), misi_iters)
        return y[..., (a - a0) * hop:end - a0 * hop]
    y = frontend.istft((spec[None] * lin[:, None]).reshape(S * C, n, -1), end - a0 * hop)
    return y[:, (a - a0) * hop:].reshape(S, C, -1)


def for_rate(sep, sample_rate):
    """The :class:`FullBand` of Separator ``sep`` at ``sample_rate`` (cached), or None on the model path."""
    if sep.band != "full" or sample_rate <= sep.sample_rate:
        return None
    cache = sep.__dict__.setdefault("_fullband", {})
    if sample_rate not in cache:
        cache[sample_rate] = FullBand(sep.frontend, sep.mask_bins, int(sample_rate), sep.device, sep.misi_iters,
                                      sep.block_frames)
    return cache[sample_rate]


def synthesize(fb, engine, masks, T, n_est, emit, more=None, renorm=False, schedule=None):
    """Estimates at the input's rate, block by block: ``emit((n_est, C, m) tensor, last)``.

    Args:
        fb: :class:`FullBand`. engine: :class:`~sepkit.engine.BlockEngine` of ``fb`` over the input's samples
            (length known). masks: :class:`~sepkit.blockwise.Window` of model masks ``(frames, F, >= n_est)``;
            ``more()`` appends the next ones (None: all are there). T: model frames in all. renorm: see
            :meth:`FullBand.masks` (over all the masks' sources; the first ``n_est`` are synthesised).
        schedule: None, or ``schedule(block, last)`` runs ``block()`` (the block's estimates from its masks and
            samples, held by the call: the pipeline's writer thread, :mod:`sepkit.pipeline`) and emits them.
    """
    T_in, N, B = engine.T, engine.length, fb.block_frames
    for a in range(0, T_in, B):
        b = min(a + B, T_in)
        a0, b0 = max(0, a - fb.margin), min(T_in, b + fb.margin)
        lo, hi = fb.model_span(a0, b0, T)
        while masks.end < hi:
            more()
        end = N if b == T_in else b * fb.hop
        if schedule is not None:  # masks, STFT and inverse STFT of the block in the writer thread
            xpad = engine.xpad(a0 * fb.hop, (b0 - 1) * fb.hop + fb.frontend.config.n_fft)
            schedule(lambda m=masks.get(lo, hi), xpad=xpad, lo=lo, a0=a0, a=a, b0=b0, end=end: fb.synth(
                fb._frames(xpad, 0, b0 - a0), fb.masks(m, lo, a0, b0, T, renorm)[:n_est], a0, a, end), b == T_in)
        else:
            lin = fb.masks(masks.get(lo, hi), lo, a0, b0, T, renorm)[:n_est]
            emit(fb.synth(engine.spec(a0, b0), lin, a0, a, end), b == T_in)
        nxt = max(0, b - fb.margin)  # the next block's first frame
        masks.drop_before(min(fb.model_span(nxt, nxt + 1, T)[0], masks.end))
        engine.x.drop_before(max(0, nxt * fb.hop - fb.half))


def reconstruct(fb, wav, masks, renorm=False):
    """In memory: input ``(C, N)`` (a tensor at the input's rate) and model masks ``(T, F, S)`` -> ``(S, C, N)``
    (``renorm``: :meth:`FullBand.masks`)."""
    engine = BlockEngine(fb, wav.shape[0], wav.shape[-1])
    engine.push(wav)
    window = Window(0)
    window.append(masks)
    parts = []
    synthesize(fb, engine, window, masks.shape[0], masks.shape[-1], lambda y, last: parts.append(y), renorm=renorm)
    return torch.cat(parts, -1)


def _write(emit, block, last):
    """The writer thread's call: a block's estimates computed (``block()``) and handed to ``emit``."""
    emit(block().cpu().numpy(), last)


def _scheduler(emit, share):
    """``synthesize``'s ``schedule`` for ``emit`` with a writer thread (``emit.later``), else None: every block
    computed in the writer thread, or with ``share`` (the caller has no network left to run) every other one in the
    caller (its write still in the writer thread, in order)."""
    later = getattr(emit, "later", None)
    if later is None:
        return None
    count = itertools.count()

    def schedule(block, last):
        if share and next(count) % 2:
            emit(block().cpu().numpy(), last)
        else:
            later(_write, block, last)
    return schedule


def reconstruct_stream(fb, run, plan, masks, n_est, emit):
    """Streamed (:mod:`sepkit.stream`): the model masks that generator ``masks`` appends to ``run.masks``
    (model frames of ``plan.T``), applied to the input file's own samples, read again in blocks;
    ``emit((n_est, C, m) numpy, last)``. With the pipeline (``plan.stages``, :mod:`sepkit.pipeline`) the blocks are
    read ahead in the reader thread and, when ``emit`` has ``later`` (its writer thread), each block's estimates
    are computed and written there."""
    blocks = plan.stages.prefetch(plan.reader.blocks(plan.block_samples))
    engine = BlockEngine(fb, plan.channels, plan.n)
    engine.feed = lambda: engine.push(torch.from_numpy(next(blocks)).to(fb.device))
    synthesize(fb, engine, run.masks, plan.T, n_est, lambda y, last: emit(y.cpu().numpy(), last),
               more=lambda: next(masks), schedule=_scheduler(emit, getattr(run, "share", False)))
    for _ in masks:  # nothing left: closes the batches' progress bar
        pass
