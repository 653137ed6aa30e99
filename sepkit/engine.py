"""The block engine of streamed and online separation: model-rate samples in, estimates out, block by block.

:class:`BlockEngine` holds what the per-block steps carry between blocks, in sliding windows
(:class:`sepkit.blockwise.Window`): the model-rate samples that frames still overlap (the STFT's
carried overlap), mask-bin magnitudes of the mono downmix (mel, or linear STFT bins), the network
features (with the delta features' 2 frames of context on each side), the masks, and the frames that
the inverse STFT of the next samples still overlaps (its carried tail). Its samples either come
from a callback that reads the next block of a file whose length is known (:mod:`sepkit.stream`,
``sepkit-separate``) or are pushed as they arrive, the length becoming known at the end
(:mod:`sepkit.online`, ``sepkit-stream``). Whatever the blocks, every frame, feature and sample is
computed from the same values as :meth:`sepkit.separate.Separator.separate` computes them.

:class:`CausalMasks` runs a causal network (a body with ``causal = True``, :class:`sepkit.nets.encoder.LSTMEncoder`)
over a stream of feature frames with its recurrent state carried, delays its output by the body's
``lookahead`` frames and ends the stream with that many zero frames, which is exactly the body's
whole-sequence ``forward``. Its MI masks are the MI head's; its DC masks come from cluster centres
that persist and adapt (:class:`SequentialCenters`):

DC rule (causal models): the centres start at the model file's ``dc_centers`` (one per source, in the
model's source order: the mean unit-norm embedding of the bins each source dominates in the training
data, stored at the end of training). Then, frame by frame, in time order: every bin takes the label
of its nearest centre (the one-hot mask of that frame; cluster i is source i, no naming rule); the
frame's non-silent bins (more than ``silence_db`` below the running peak of the mask-bin magnitudes
so far, this frame included, are silent) move their centre: ``c_i += a (mean_i - c_i)``, ``mean_i`` the
mean embedding of the non-silent bins labelled i in this frame (a centre with none stays), with
``a = 1 - exp(-hop / (sample_rate * tau))``: an exponential moving average of time constant ``tau``
seconds (``Separator(dc_time_constant=)``, default :data:`DC_TIME_CONSTANT`). The rule is per frame,
so the cut of the stream into blocks cannot change it; the offline path of a causal model uses the same
rule over the whole file (no k-means), so online and offline DC outputs are the same.
"""
import contextlib
import math

import torch

from sepkit.blockwise import Window, nearest
from sepkit.errors import SeparationError

__all__ = ["BlockEngine", "CausalMasks", "SequentialCenters", "is_causal", "feature_lookahead", "causal_masks",
           "DC_TIME_CONSTANT"]

DELTA = 2  # frames of context of the delta features on each side (sepkit.frontend.deltas, width 2)
DC_TIME_CONSTANT = 10.0  # seconds: time constant of the DC centres' moving average (causal models)
ONEDNN_MIN_FRAMES = 32  # chunks of fewer frames run the LSTM without oneDNN (see CausalMasks._run)


def is_causal(model):
    """Whether the network's body is causal (``encoder.causal``; BLSTM bodies have no such attribute)."""
    return bool(getattr(getattr(model, "encoder", None), "causal", False))


def feature_lookahead(config):
    """Frames of future input that the features of a frame need: the deltas' 2, else 0."""
    return DELTA if config.use_delta else 0


class BlockEngine:
    """Model-rate samples ``(C, n)`` -> mono mask-bin magnitudes -> features; masks -> estimates, in blocks.

    Args:
        sep: the :class:`~sepkit.separate.Separator` whose signal path (framing, bins, features,
            reconstruction) is used.
        channels: C.
        length: model-rate samples in all, when known from the start (a file), else None: the
            length is known at :meth:`end`.
        feed: a function that pushes the next block of samples (:meth:`push`) when more are
            needed, or None (samples are pushed by the caller and only what they allow is computed).
        keep_samples: keep samples until the estimates are reconstructed (else they are dropped as
            soon as their frames have a magnitude: a pass that only reads).
    """

    def __init__(self, sep, channels, length=None, feed=None, keep_samples=True):
        c = sep.frontend.config
        self.sep, self.channels, self.feed, self.keep_samples = sep, channels, feed, keep_samples
        self.hop, self.n_fft, self.half = c.hop_length, c.n_fft, c.n_fft // 2
        self.la = feature_lookahead(c)
        self.length = self.T = None
        if length is not None:
            self._set_length(length)
        self.x, self.mel, self.feats, self.masks = Window(1), Window(0), Window(0), Window(0)

    def _set_length(self, n):
        self.length, self.T = int(n), self.sep.frontend.num_frames(int(n))

    def push(self, y):
        """Append model-rate samples ``(C, n)`` (a tensor on the model's device)."""
        self.x.append(y)

    def end(self):
        """No more samples: the length is what was pushed."""
        self._set_length(self.x.end)

    @property
    def frames_known(self):
        """Frames whose samples are all known (all T once the length is)."""
        if self.T is not None:
            return self.T
        right = self.n_fft - self.half  # frame t reads samples [t * hop - half, t * hop + right)
        return max(0, (self.x.end - right) // self.hop + 1) if self.x.end >= right else 0

    def xpad(self, a, b):
        """Samples ``[a, b)`` ``(C, b - a)`` of the signal zero padded by ``n_fft // 2`` on both sides."""
        n = self.length
        if n is not None:
            b = min(b, n + 2 * self.half)  # as slicing the padded signal
        lo, hi = max(a - self.half, 0), b - self.half if n is None else min(b - self.half, n)
        if hi <= lo:
            return torch.zeros(self.channels, b - a, device=self.sep.device)
        if self.feed is not None:
            while self.x.end < hi:
                self.feed()
        return torch.nn.functional.pad(self.x.get(lo, hi), (lo - a + self.half, b - self.half - hi))

    def spec(self, a, b):
        """Mixture STFT frames ``[a, b)`` of every channel, ``(C, b - a, K)``."""
        return self.sep._frames(self.xpad(a * self.hop, (b - 1) * self.hop + self.n_fft), 0, b - a)

    def ensure_mel(self, t):
        """Magnitudes on the mask bins of the mono downmix up to frame ``t`` (as far as known), in blocks
        of ``Separator.block_frames``."""
        known = self.frames_known
        while self.mel.end < min(t, known):
            a = self.mel.end
            b = min(a + self.sep.block_frames, known)
            mono = self.xpad(a * self.hop, (b - 1) * self.hop + self.n_fft).mean(0, keepdim=True)
            self.mel.append(self.sep._to_bins(self.sep._frames(mono, 0, b - a).abs())[0])
            if not self.keep_samples:
                self.x.drop_before(b * self.hop - self.half)

    def ensure_feats(self, t):
        """Network features up to frame ``t`` (as far as the known magnitudes allow)."""
        T = self.T
        if T is not None and self.feats.end >= min(t, T):
            return
        self.ensure_mel(t + self.la)
        a = self.feats.end
        b = T if T is not None and self.mel.end == T else self.mel.end - self.la
        if b <= a:
            return
        lo, hi = max(0, a - self.la), b + self.la if T is None else min(T, b + self.la)
        self.feats.append(self.sep._features(self.mel.get(lo, hi))[a - lo:b - lo])

    def synth(self, a0, a, b0, end, n_est):
        """Estimates of the first ``n_est`` masks, model-rate samples ``[a * hop, end)`` ``(n_est, C, n)``,
        from the frames ``[a0, b0)`` (their masks must be in ``self.masks``; the frames outside
        ``[a, end)`` only complete the overlap-add)."""
        return self.sep._reconstruct_block(self.spec(a0, b0), self.masks.get(a0, b0)[..., :n_est], a0, a, end)

    def synth_samples(self, s0, s1, n_est):
        """Estimates of samples ``[s0, s1)`` ``(n_est, C, s1 - s0)``: every frame that overlaps them must
        have its mask (:meth:`complete_samples`)."""
        a = s0 // self.hop
        a0 = max(0, a - self.sep.margin)
        y = self.synth(a0, a, self.masks.end, s1, n_est)
        return y[..., s0 - a * self.hop:]

    def complete_samples(self):
        """Model-rate samples whose every overlapping frame has its mask."""
        M = self.masks.end
        if self.T is not None and M == self.T:
            return self.length
        return max(0, min(M * self.hop - self.half, self.x.end))

    def drop_synthesised(self, s):
        """Forget what only samples before ``s`` needed (frames and samples more than a margin before)."""
        nxt = max(0, s // self.hop - self.sep.margin)
        self.masks.drop_before(nxt)
        self.x.drop_before(nxt * self.hop - self.half)


class SequentialCenters:
    """DC cluster centres that persist and adapt frame by frame (this module's DC rule).

    Args:
        anchors: ``(C, D)`` initial centres, cluster i = source i. alpha: the moving average's weight
        per frame. silence_db: bins this far below the running peak do not move the centres.
    """

    def __init__(self, anchors, alpha, silence_db):
        self.centers = anchors.clone()
        self.alpha, self.ratio = float(alpha), 10 ** (-silence_db / 20)
        self.peak = torch.zeros((), device=anchors.device)

    def __call__(self, emb, bins):
        """Embeddings ``(t, F, D)`` and mask-bin magnitudes ``(t, F)`` of consecutive frames -> one-hot
        masks ``(t, F, C)`` in source order."""
        C = self.centers.shape[0]
        out = torch.empty(*emb.shape[:2], C, device=emb.device)
        for i in range(emb.shape[0]):
            e = emb[i]
            self.peak = torch.maximum(self.peak, bins[i].max())
            active = (bins[i] > self.peak.clamp_min(1e-20) * self.ratio).float()  # (F,)
            onehot = torch.nn.functional.one_hot(nearest(e, self.centers), C).float()  # (F, C)
            out[i] = onehot
            w = onehot * active[:, None]
            n = w.sum(0)  # (C,)
            mean = (w.t() @ e) / n.clamp_min(1.0)[:, None]
            self.centers = torch.where(n[:, None] > 0, self.centers + self.alpha * (mean - self.centers), self.centers)
        return out


def dc_anchors(sep):
    """The model's ``dc_centers`` as a ``(C, D)`` tensor, or a one-line :class:`SeparationError`."""
    if sep.dc_centers is None:
        raise SeparationError("the DC head of a causal model needs the model file's dc_centers (per-source "
                              "anchor embeddings, stored at the end of training); use the MI head, or retrain")
    return sep.dc_centers


class CausalMasks:
    """A causal network over a stream of feature frames, state carried: masks in frame order.

    :meth:`push` takes features ``(t, Din)`` and mask-bin magnitudes ``(t, F)`` of the next frames
    and returns the masks ``(t', F, C)`` of the frames whose lookahead has arrived; :meth:`finish`
    ends the stream with ``lookahead`` zero frames and returns the rest. The masks are those of the
    body's whole-sequence ``forward`` with the MI head, or of :class:`SequentialCenters` with the DC head.
    """

    def __init__(self, sep, head):
        if not is_causal(sep.model):
            raise SeparationError("the model's body is not causal (a BLSTM sees the whole signal); online "
                                  "separation needs a causal body (body: lstm)")
        self.sep, self.head, enc = sep, head, sep.model.encoder
        self.lookahead, self.seen = int(enc.lookahead), 0
        self.state = enc.init_state(1, sep.device)
        self.bins = Window(0)  # magnitudes of the frames whose masks are not out yet (DC silence)
        self.centers = None
        if head == "dc":
            c = sep.frontend.config
            alpha = 1.0 - math.exp(-c.hop_length / (c.sample_rate * sep.dc_time_constant))
            self.centers = SequentialCenters(dc_anchors(sep), alpha, sep.silence_db)

    def push(self, feats, bins):
        self.bins.append(bins)
        return self._run(feats)

    def finish(self):
        return self._run(torch.zeros(self.lookahead, self.sep.frontend.config.input_dim, device=self.sep.device))

    def _run(self, feats):
        sep, model = self.sep, self.sep.model
        # oneDNN's LSTM costs milliseconds per call whatever its length (weights reordered each time): a
        # few frames (the online case) run ~3x faster on torch's native kernel; whole chunks faster on oneDNN.
        with torch.autocast(sep.device.type, dtype=sep.autocast_dtype or torch.float32,
                            enabled=sep.autocast_dtype is not None), _onednn(feats.shape[0] >= ONEDNN_MIN_FRAMES):
            h, self.state = model.encoder.step(feats[None], self.state)
            skip = max(0, self.lookahead - self.seen)  # outputs before the first frame's lookahead
            self.seen += feats.shape[0]
            h = h[:, skip:]
            t = h.shape[1]
            if t == 0:
                return torch.zeros(0, model.n_freq, self.sep.n_clusters if self.head == "dc" else model.n_sources,
                                   device=sep.device)
            z = model.linear(h).reshape(1, t, model.n_freq, model.emb_dim)
            out = getattr(model, f"{self.head}_head")(z).float().reshape(t, model.n_freq, -1)
        a = self.bins.start
        if self.centers is not None:
            if not bool(torch.isfinite(out).all()):  # the one-hot masks below would hide them
                raise SeparationError("the model produced NaN or infinite embeddings")
            out = self.centers(out, self.bins.get(a, a + t))
        self.bins.drop_before(a + t)
        return out


@contextlib.contextmanager
def _onednn(use):
    """oneDNN on (as it was) or off for the block (torch.backends.mkldnn.flags also resets TF32 and warns)."""
    was = torch._C._get_mkldnn_enabled()
    torch.backends.mkldnn.set_flags(_enabled=bool(use and was), _fp32_precision=None)
    try:
        yield
    finally:
        torch.backends.mkldnn.set_flags(_enabled=was, _fp32_precision=None)


def causal_masks(sep, feats, bins, head):
    """Masks ``(T, F, C)`` of a whole signal's features ``(T, Din)`` and magnitudes ``(T, F)`` by a causal
    model: the network over the whole sequence, in chunks of ``block_frames`` frames with its state carried
    (memory bounded by the chunk), no segments."""
    run = CausalMasks(sep, head)
    T = feats.shape[0]
    B = sep.block_frames
    parts = [run.push(feats[a:a + B], bins[a:a + B]) for a in range(0, T, B)]
    return torch.cat(parts + [run.finish()], 0)
