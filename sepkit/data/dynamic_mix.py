"""Dynamic mixing: training examples mixed on the fly from the stems of different tracks.

Cross-track stem mixing (open-unmix, Demucs, asteroid's X-UMX; ../shared/DESIGN.md section 6), done
in the data loader instead of an offline remix stage. Example ``i`` of epoch ``e`` is drawn by a
generator seeded with ``(seed, e, i)`` only, so it is the same whatever the number of DataLoader
workers, of DDP ranks sharding the global batch, or a resume; nothing is written to disk.

One example, for each source ``c`` of the training dump's ``sources`` (any number of them):

1. a track: with probability ``same_track_prob`` one track gives every source, at one offset (a
   coherent excerpt of that track); otherwise every source takes its own track (different tracks
   when the data dir has at least C of them) at its own uniformly random offset;
2. a segment of ``(S - 1 + 2 m) * hop`` samples at the model's rate (S frames plus ``m`` frames of
   margin each side, ``m = ceil(n_fft / 2 / hop)`` + the delta context: no frame of the example sees
   the zero padding of the STFT); a track shorter than that is zero padded at its end;
3. **silence rule**: a segment whose RMS (mono downmix at the model rate, before the gain) is below
   ``silence_dbfs`` (default -50 dBFS) is drawn again (another track and offset, up to
   :data:`TRIES` draws; the last one is kept when all are silent), so a 4-stem example rarely lacks a
   source;
4. a channel swap of a stereo stem with probability ``swap_prob``, then the mono downmix (mean of the
   channels) that the features use. Note: the mean of the channels is symmetric, so with today's
   mono features the swap changes no sample (it is kept so that the draw is open-unmix's);
5. a gain uniform in ``[gain_min, gain_max]`` (open-unmix: 0.25-1.25).

The mixture is the **sum** of the drawn, scaled stems, not an official mix: say so beside results.
The features and targets are then those of the feature dump path (:class:`~sepkit.data.dataset.
SegmentDataset`): magnitudes of the mixture and of each source through :class:`~sepkit.frontend.
Frontend` (mel or linear, ``mask_bins``), the network input CMVN(input features of the mixture)
with the training dump's CMVN, and ``psa`` (``|S_c| cos(theta_c - theta_X)``) when the dump is
phase-sensitive. Items have every key of a dump item and are S frames long.

Audio: the data dir's ``wav.scp`` / ``<source>.scp`` (any audio spec). When the stems, resampled to
the model's rate with their channels, fit in ``cache_mb`` MiB (estimated from the file headers) they
are loaded once, in the process that builds the dataset (DataLoader workers forked later share the
pages; each DDP rank holds its own copy); otherwise each segment is read from disk with a partial
read (soundfile ``start``/``frames``) and resampled alone (with a margin of :data:`RESAMPLE_MARGIN_S`
each side). The two modes give the same tracks, offsets and gains; their samples differ only by
resampling at the segment edges (not at all when the files are at the model's rate).
"""
import logging
import math

import numpy as np
import torch

from sepkit.data.dataset import DELTA_CONTEXT, get_frontend

logger = logging.getLogger(__name__)

__all__ = ["DynamicMixError", "DynamicMixDataset", "from_config", "TRIES", "SILENT_DBFS", "RESAMPLE_MARGIN_S"]

TRIES = 10  # draws of a source's segment before a silent one is kept
SILENT_DBFS = -50.0  # a segment whose RMS is below this (dB re full scale) counts as silent
RESAMPLE_MARGIN_S = 0.02  # seconds read each side of a segment resampled alone (disk mode)


class DynamicMixError(Exception):
    """Bad input to dynamic mixing (data dir, sources, audio); the message names the file at fault."""


def _node_shape(node):
    """``(rate, frames, channels)`` of what an audio spec gives, from file headers."""
    import soundfile as sf

    from sepkit.data.audiospec import spec_header

    rate, frames = spec_header(node)
    if "sum" in node:
        chans = [_node_shape(item)[2] for item in node["sum"]]
        if len(set(chans)) > 1:
            from sepkit.audio import AudioError
            from sepkit.data.audiospec import spec_files

            detail = ", ".join(f"{'+'.join(spec_files(item))} {c} ch" for item, c in zip(node["sum"], chans))
            raise AudioError(f"cannot sum [{detail}]: channel counts differ")
        return rate, frames, chans[0]
    if node["channel"] is not None:
        return rate, frames, 1
    return rate, frames, int(sf.info(node["path"]).channels)


def _read_part(node, start, frames):
    """Samples ``[start, start + frames)`` of a parsed spec at the file's rate, ``(channels, frames)``
    float32; zeros where the range is outside the file."""
    import soundfile as sf

    from sepkit.audio import AudioError

    if "sum" in node:
        total = None
        for item in node["sum"]:
            part = _read_part(item, start, frames).astype(np.float64)
            total = part if total is None else total + part
        return total.astype(np.float32)
    lead = max(0, -start)
    try:
        with sf.SoundFile(node["path"]) as f:
            f.seek(min(max(start, 0), f.frames))
            data = f.read(frames=max(frames - lead, 0), dtype="float32", always_2d=True).T
    except Exception as exc:  # soundfile raises RuntimeError / LibsndfileError / OSError
        raise AudioError(f"{node['path']}: cannot read ({str(exc).strip().splitlines()[0] if str(exc) else exc})") from None
    channel = node["channel"]
    if channel == "sum":
        data = data.sum(axis=0, keepdims=True)
    elif channel is not None:
        data = data[channel:channel + 1]
    out = np.zeros((data.shape[0], frames), dtype=np.float32)
    out[:, lead:lead + data.shape[1]] = data
    return out


class DynamicMixDataset(torch.utils.data.Dataset):
    """Training examples mixed on the fly (see the module docstring).

    Args:
        data: data dir (path or :class:`~sepkit.data.datadir.DataDir`) of the training tracks.
        sources: source names, the order of the source axis (each must be a source of ``data``).
        feat_conf: :class:`~sepkit.frontend.FeatureConfig` (the training dump's).
        segment_frames: S, frames of every example.
        examples: examples per epoch: an int, or a function of S (the curriculum changes S).
        cmvn: :class:`~sepkit.frontend.CMVN` of the network input, or None.
        seed: with the epoch and the index, the only input of an example's draws.
        gain_min, gain_max: range of the uniform random gain of every stem.
        swap_prob: probability of a channel swap of a stereo stem.
        same_track_prob: probability that one track gives every source of an example (one offset).
        cache_mb: keep the resampled stems in memory when they fit in this many MiB; 0 = never.
        mask_bins: bins of the targets ``mix``/``src``/``psa`` (mel or linear); None = feat_conf's.
        silence_dbfs: the silence rule's threshold (RMS in dB re full scale).
        dump: the training :class:`~sepkit.data.dataset.FeatureDump` (kept as ``.dump`` for logs).
    """

    def __init__(self, data, sources, feat_conf, segment_frames, examples, cmvn=None, seed=0, gain_min=0.25,
                 gain_max=1.25, swap_prob=0.5, same_track_prob=0.0, cache_mb=1024, mask_bins=None,
                 silence_dbfs=SILENT_DBFS, dump=None):
        from sepkit.audio import AudioError
        from sepkit.data.audiospec import parse_spec
        from sepkit.data.datadir import DataDir, DataDirError, header_problems

        try:
            self.data = data if isinstance(data, DataDir) else DataDir(data)
        except DataDirError as exc:
            raise DynamicMixError(f"dynamic mixing: {exc}") from None
        self.sources = list(sources)
        missing = [s for s in self.sources if s not in self.data.sources]
        if missing:
            raise DynamicMixError(f"{self.data.path / 'sources'}: no source {missing[0]!r} (it lists "
                                  f"{', '.join(self.data.sources)}; the training dump's sources are "
                                  f"{', '.join(self.sources)})")
        if not 0 < gain_min <= gain_max:
            raise DynamicMixError(f"dynamic mixing: gains must satisfy 0 < gain_min <= gain_max, got "
                                  f"{gain_min} and {gain_max}")
        tables = {s: self.data.source(s) for s in self.sources}
        problems = header_problems(self.data.path, self.data.wav, tables)
        if problems:
            raise DynamicMixError(problems[0])
        self.feat_conf, self.cmvn, self.seed, self.dump = feat_conf, cmvn, int(seed), dump
        self.gain_min, self.gain_max = float(gain_min), float(gain_max)
        self.swap_prob, self.same_track_prob = float(swap_prob), float(same_track_prob)
        self.silence_rms = 10.0 ** (float(silence_dbfs) / 20.0)
        self.mask_bins = mask_bins or feat_conf.bins
        self._examples = examples
        self.rate = int(feat_conf.sample_rate)
        self.hop = int(feat_conf.hop_length)
        self.margin = -(-(feat_conf.n_fft // 2) // self.hop) + (DELTA_CONTEXT if feat_conf.use_delta else 0)
        self.frontend = get_frontend(feat_conf)  # built before workers fork
        self.tracks = list(self.data.utts)
        # per source, per track: parsed spec, file rate, length at the model rate, channels
        self._specs, self._rates, self._lengths, self._channels = {}, {}, {}, {}
        nbytes = 0
        for s in self.sources:
            specs, rates, lengths, chans = [], [], [], []
            for utt in self.tracks:
                node = parse_spec(tables[s][utt])
                try:
                    rate, frames, ch = _node_shape(node)
                except AudioError as exc:
                    raise DynamicMixError(f"{self.data.path / (s + '.scp')}: utterance {utt}: {exc}") from None
                specs.append(node)
                rates.append(rate)
                lengths.append(int(math.ceil(frames * self.rate / rate)))
                chans.append(ch)
                nbytes += 4 * ch * lengths[-1]
            self._specs[s], self._rates[s] = specs, rates
            self._lengths[s], self._channels[s] = np.array(lengths, dtype=np.int64), chans
        # a track's length for a coherent (same-track) draw: its shortest stem
        self._track_len = np.min(np.stack([self._lengths[s] for s in self.sources]), axis=0)
        self.cache = None
        self.cache_bytes = nbytes
        if cache_mb and nbytes <= cache_mb * 2 ** 20:
            self._load_cache()
        logger.info("dynamic mixing: %d tracks of %s, sources %s, stems %s (%.0f MiB at %d Hz)", len(self.tracks),
                    self.data.path, ", ".join(self.sources), "cached in memory" if self.cache is not None else
                    "read from disk per segment", nbytes / 2 ** 20, self.rate)
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()  # epoch, S
        self.set_segment_frames(segment_frames)

    def _load_cache(self):
        from sepkit.audio import AudioError, resample
        from sepkit.data.audiospec import load_audio

        cache = {}
        for s in self.sources:
            cache[s] = []
            for t, node in enumerate(self._specs[s]):
                try:
                    wav, sr = load_audio(node)
                except AudioError as exc:
                    raise DynamicMixError(f"{self.data.path / (s + '.scp')}: utterance {self.tracks[t]}: {exc}") from None
                cache[s].append(np.ascontiguousarray(resample(wav, sr, self.rate), dtype=np.float32))
                self._lengths[s][t] = cache[s][-1].shape[1]
        self._track_len = np.min(np.stack([self._lengths[s] for s in self.sources]), axis=0)
        self.cache = cache

    # ------------------------------------------------------------------------------------------ state
    @property
    def epoch(self):
        return int(self._state[0])

    @property
    def segment_frames(self):
        return int(self._state[1])

    def set_epoch(self, epoch):
        """Select the epoch (reaches persistent DataLoader workers: shared memory)."""
        self._state[0] = int(epoch)

    def set_segment_frames(self, segment_frames):
        """Frames of every example (curriculum); may change ``len`` (``examples`` as a function of S)."""
        if segment_frames is None or int(segment_frames) < 1:
            raise ValueError(f"dynamic mixing needs a positive segment length in frames, got {segment_frames}")
        self._state[1] = int(segment_frames)

    @property
    def num_samples(self):
        """Samples of every drawn segment: S frames plus the margin each side."""
        return (self.segment_frames - 1 + 2 * self.margin) * self.hop

    def __len__(self):
        n = self._examples(self.segment_frames) if callable(self._examples) else self._examples
        return int(n)

    # ------------------------------------------------------------------------------------------ draws
    def _segment(self, source, track, start, n):
        """``(channels, n)`` float32 samples ``[start, start + n)`` of a stem at the model rate."""
        if self.cache is not None:
            x = self.cache[source][track]
            out = np.zeros((x.shape[0], n), dtype=np.float32)
            part = x[:, start:start + n]
            out[:, :part.shape[1]] = part
            return out
        from sepkit.audio import AudioError, resample

        node, rate = self._specs[source][track], self._rates[source][track]
        try:
            if rate == self.rate:
                return _read_part(node, start, n)
            margin = int(math.ceil(RESAMPLE_MARGIN_S * rate))
            f0 = int(round(start * rate / self.rate))
            fn = int(math.ceil(n * rate / self.rate))
            part = resample(_read_part(node, f0 - margin, fn + 2 * margin), rate, self.rate)
        except AudioError as exc:
            raise DynamicMixError(f"{self.data.path / (source + '.scp')}: utterance {self.tracks[track]}: {exc}") from None
        skip = int(round(margin * self.rate / rate))
        out = np.zeros((part.shape[0], n), dtype=np.float32)
        got = part[:, skip:skip + n]
        out[:, :got.shape[1]] = got
        return out

    def _silent(self, x):
        mono = x.mean(axis=0, dtype=np.float64)
        return math.sqrt(float(np.mean(mono * mono))) < self.silence_rms

    def draw(self, i, epoch=None):
        """The draws of example ``i``: ``[(track, start, gain, swap), ...]`` one per source, and the
        stems ``[(channels, N) float32, ...]`` as read (before swap and gain)."""
        epoch = self.epoch if epoch is None else int(epoch)
        pick, mod = (np.random.default_rng(s) for s in np.random.SeedSequence([self.seed, epoch, int(i)]).spawn(2))
        C, T, n = len(self.sources), len(self.tracks), self.num_samples
        gains = mod.uniform(self.gain_min, self.gain_max, C)
        swaps = mod.random(C) < self.swap_prob
        chosen, stems = [None] * C, [None] * C
        if pick.random() < self.same_track_prob:
            for _ in range(TRIES):
                t = int(pick.integers(T))
                start = int(pick.integers(max(int(self._track_len[t]) - n, 0) + 1))
                segs = [self._segment(s, t, start, n) for s in self.sources]
                chosen, stems = [(t, start)] * C, segs
                if not any(self._silent(x) for x in segs):
                    break
        else:
            first = pick.permutation(T)[:C].tolist() if T >= C else pick.integers(T, size=C).tolist()
            for c, s in enumerate(self.sources):
                t = first[c]
                for k in range(TRIES):
                    if k:  # a silent draw: another track (not one of the other sources' when there are enough)
                        others = [u for u in range(T) if u not in first[:c] + first[c + 1:]] or list(range(T))
                        t = others[int(pick.integers(len(others)))]
                    start = int(pick.integers(max(int(self._lengths[s][t]) - n, 0) + 1))
                    x = self._segment(s, t, start, n)
                    chosen[c], stems[c] = (t, start), x
                    if not self._silent(x):
                        break
        plan = [(self.tracks[t], start, float(g), bool(w and stems[c].shape[0] == 2))
                for c, ((t, start), g, w) in enumerate(zip(chosen, gains, swaps))]
        return plan, stems

    def waveforms(self, i, epoch=None):
        """Example ``i``'s signals at the model rate: ``{"plan", "stems" [(channels, N)] after swap and
        gain, "src" (C, N) their mono downmixes, "mix" (N,) the sum of src}`` (float32)."""
        plan, raw = self.draw(i, epoch)
        stems = []
        for (_, _, gain, swap), x in zip(plan, raw):
            x = x[::-1] if swap else x
            stems.append(np.ascontiguousarray(x * np.float32(gain), dtype=np.float32))
        src = np.stack([x.mean(axis=0) for x in stems]).astype(np.float32)
        return {"plan": plan, "stems": stems, "src": src, "mix": src.sum(axis=0, dtype=np.float32)}

    def features(self, mix, src):
        """Dump-path item of waveforms ``mix`` (N,) and ``src`` (C, N) whose N is :attr:`num_samples`:
        ``feats`` (S, Fin), ``mix`` (S, F), ``src`` (S, F, C), ``psa`` (phase-sensitive dumps), ``length``."""
        fe, m, S = self.frontend, self.margin, self.segment_frames
        with torch.no_grad():
            wav = torch.from_numpy(np.concatenate([mix[None], src]).astype(np.float32, copy=False))
            spec = fe.stft(wav)  # (C + 1, S + 2m, K)
            mag = spec.abs()
            feats = fe.input_features(mag[:1], "linear")[0, m:m + S]
            if self.cmvn is not None:
                feats = self.cmvn(feats)
            bins = fe.to_bins(mag[:, m:m + S], self.mask_bins)  # (C + 1, S, F)
            item = {"feats": feats.contiguous(), "mix": bins[0].contiguous(),
                    "src": bins[1:].permute(1, 2, 0).contiguous(), "length": S}
            if self.feat_conf.phase_sensitive:  # |S_c| cos(theta_c - theta_X) = Re(S_c conj(X)) / |X|
                x = spec[:1, m:m + S]
                psa = (spec[1:, m:m + S] * x.conj()).real / x.abs().clamp_min(1e-30)
                item["psa"] = fe.to_bins(psa, self.mask_bins).permute(1, 2, 0).contiguous()
        return item

    def __getitem__(self, i):
        w = self.waveforms(i)
        return self.features(w["mix"], w["src"])


def _dump_data_dir(dump):
    """The data dir a dump was computed from (its ``.sepkit_dump`` record), or None."""
    from sepkit.bin.compute_feats import read_record

    record = read_record(dump.path)
    return record.get("data") if record else None


def from_config(conf, train_dump, segment_frames, cmvn):
    """The training set of ``dynamic_mix: true`` (:mod:`sepkit.train.config` keys ``dm_*``); one-line
    ``SystemExit`` on bad input. Data dir: ``dm_data``, else the one the training dump was computed from.
    Examples per epoch: ``dm_examples_per_epoch``, else ``steps_per_epoch x batch_size`` when
    ``steps_per_epoch`` is set (one pass = the epoch: no example twice), else as many as the dump's
    training segments of the current length (:class:`~sepkit.data.dataset.SegmentDataset`)."""
    from sepkit.data.dataset import SegmentDataset

    data = conf.get("dm_data") or _dump_data_dir(train_dump)
    if data is None:
        raise SystemExit(f"{train_dump.path}: dynamic_mix: the dump does not record its data dir (no .sepkit_dump); "
                         "give --dm_data data/<training set>")
    if conf.get("dm_examples_per_epoch"):
        examples = int(conf["dm_examples_per_epoch"])
    elif conf.get("steps_per_epoch"):
        examples = int(conf["steps_per_epoch"]) * int(conf["batch_size"])
    else:
        counter = SegmentDataset(train_dump, segment_frames, None, train=True, seed=conf["seed"])

        def examples(S):
            counter.set_segment_frames(S)
            return len(counter)
    try:
        return DynamicMixDataset(data, train_dump.sources, train_dump.feat_conf, segment_frames, examples, cmvn,
                                 seed=conf["seed"], gain_min=conf["dm_gain_min"], gain_max=conf["dm_gain_max"],
                                 swap_prob=conf["dm_swap_prob"], same_track_prob=conf["dm_same_track_prob"],
                                 cache_mb=conf["dm_cache_mb"], mask_bins=conf["mask_bins"], dump=train_dump)
    except DynamicMixError as exc:
        raise SystemExit(str(exc)) from None
