"""Feature dumps (ark/scp from ``sepkit.bin.compute_feats``) and the segment dataset of training.

Dump layout ``dump/<feat_tag>/<set>/``::

    mix.scp, <source>.scp     <utt> <ark path>:<byte offset>   magnitudes (T, F) float32, F = n_mels
                              (feat_conf bins: mel) or n_fft // 2 + 1 (bins: linear)
    <source>.psa.scp          |S_c| cos(theta_c - theta_X) (T, F), only with phase_sensitive: true
    utt2num_frames            <utt> <T>
    sources                   source names, one a line (the order of the source axis)
    feat_conf.yaml            FeatureConfig.to_dict()
    cmvn.ark                  Kaldi CMVN stats of the network input (training set only)

Reading: every scp is parsed once into ``(ark, offset)``; each ark is memory-mapped once per
process (lazily, so DataLoader workers map their own), the Kaldi binary matrix header at the
offset is parsed once per matrix, and a segment is a row slice of the mapped matrix, so only the
segment's bytes are ever read or copied. Arks of another layout (compressed, text) fall back to
``kaldiio.load_mat``. Opening a dump checks every matrix header against its ark (a truncated or
overwritten ark is a :class:`DumpError` naming the ark and the utterance, before any training). A dump moved to another place still loads: an ark path that does not exist
is looked up by its file name inside the dump dir.
"""
import logging
import struct
from pathlib import Path

import numpy as np
import torch

from sepkit.frontend import CMVN, FeatureConfig, Frontend

logger = logging.getLogger(__name__)

__all__ = ["DumpError", "FeatureDump", "SegmentDataset", "collate", "get_frontend", "read_dump_scp",
           "dump_streams", "DELTA_CONTEXT", "MIX", "PSA"]

MIX = "mix"  # name of the mixture's scp/ark in a dump
PSA = ".psa"  # suffix of the sources' phase-sensitive targets (<source>.psa.scp)
DELTA_CONTEXT = 2  # frames each side that sepkit.frontend.deltas (width 2) looks at

_HEADER = struct.Struct("<2s3sbibi")  # "\0B", "FM "/"DM ", 4, rows, 4, cols
_DTYPES = {b"FM ": np.dtype("<f4"), b"DM ": np.dtype("<f8")}


def dump_streams(sources, feat_conf):
    """Names of a dump's matrices (scp/ark prefixes): mixture, sources, then PSA targets if stored."""
    return [MIX] + list(sources) + ([s + PSA for s in sources] if feat_conf.phase_sensitive else [])


class DumpError(Exception):
    """A missing or inconsistent feature dump; the message names the file at fault."""


def read_dump_scp(path):
    """``{utt: (ark path, byte offset)}`` of a feature scp (``<utt> <path>:<offset>`` lines)."""
    from sepkit.data.datadir import DataDirError, read_scp

    try:
        table = read_scp(path)
    except DataDirError as exc:
        raise DumpError(str(exc)) from None
    out = {}
    for utt, value in table.items():
        ark, sep, offset = value.rpartition(":")
        if not sep or not ark or not offset.isdigit():
            raise DumpError(f"{path}: utterance {utt}: expected '<ark>:<offset>', got {value!r}")
        out[utt] = (ark, int(offset))
    return out


_FRONTENDS = {}


def get_frontend(config):
    """The process-wide :class:`Frontend` for ``config`` (built once: the mel filters cost ~1 s)."""
    key = tuple(sorted(config.to_dict().items()))
    if key not in _FRONTENDS:
        _FRONTENDS[key] = Frontend(config)
    return _FRONTENDS[key]


class FeatureDump:
    """Read access to a feature dump.

    Attributes:
        path: the dump dir. utts: utterance ids (C order). sources: source names.
        feat_conf: :class:`FeatureConfig`. num_frames: ``{utt: T}``.
    """

    def __init__(self, path):
        import yaml

        from sepkit.data.datadir import sort_key

        self.path = Path(path)
        if not (self.path / "mix.scp").is_file():
            raise DumpError(f"{self.path}: not a feature dump (no mix.scp); run utils/compute_feats.sh")
        self.sources = _read_sources(self.path / "sources")
        conf_path = self.path / "feat_conf.yaml"
        try:
            self.feat_conf = FeatureConfig.from_dict(yaml.safe_load(conf_path.read_text()) or {})
        except (OSError, ValueError, TypeError, yaml.YAMLError) as exc:
            raise DumpError(f"{conf_path}: cannot read feature settings ({exc})") from None
        bad = self.feat_conf.check()
        if bad:
            raise DumpError(f"{conf_path}: {bad}")
        frames = read_dump_scp_values(self.path / "utt2num_frames")
        streams = dump_streams(self.sources, self.feat_conf)
        tables = [read_dump_scp(self.path / f"{name}.scp") for name in streams]
        for name, table in zip(["utt2num_frames"] + streams[1:], [frames] + tables[1:]):
            if set(table) != set(tables[0]):
                odd = sorted(set(table) ^ set(tables[0]), key=sort_key)[0]
                raise DumpError(f"{self.path / name}{'' if name == 'utt2num_frames' else '.scp'}: "
                                f"utterances differ from mix.scp (e.g. {odd})")
        self.utts = sorted(tables[0], key=sort_key)
        self.num_frames = frames
        arks = {}  # scp path -> index into self._arks
        self._entries = {}  # utt -> tuple of (ark index, offset), mixture first
        for utt in self.utts:
            self._entries[utt] = tuple((arks.setdefault(t[utt][0], len(arks)), t[utt][1]) for t in tables)
        self._arks = [self._resolve(p) for p in arks]
        self._maps = {}  # ark index -> np.memmap (per process)
        self._views = {}  # (utt, stream) -> (rows, cols) array view of the mapped data
        self._check_headers()
        self._maps = {}

    def _check_headers(self):
        """Every matrix's header, size and shape against its ark (reads a few bytes per matrix)."""
        for utt in self.utts:
            for stream in range(len(self._entries[utt])):
                self._open(utt, stream)

    def _resolve(self, ark):
        path = Path(ark)
        if path.is_file():
            return path
        moved = self.path / path.name
        if moved.is_file():
            return moved
        raise DumpError(f"{self.path}: ark file {ark} not found (nor {moved})")

    def __len__(self):
        return len(self.utts)

    def __repr__(self):
        return f"FeatureDump({str(self.path)!r}, {len(self)} utts, sources={self.sources})"

    def __getstate__(self):  # memory maps are per process: a pickled copy re-maps lazily
        state = dict(self.__dict__)
        state["_maps"], state["_views"] = {}, {}
        return state

    def matrix(self, utt, stream=0):
        """Read-only ``(T, F)`` view of one stored matrix (0 = mixture, 1 + c = source c); no copy."""
        key = (utt, stream)
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = self._open(utt, stream)
        return view

    def _open(self, utt, stream):
        if utt not in self._entries:
            raise KeyError(f"{self.path}: no utterance {utt!r}")
        index, offset = self._entries[utt][stream]
        ark = self._arks[index]
        mm = self._maps.get(index)
        if mm is None:
            try:
                mm = self._maps[index] = np.memmap(ark, dtype=np.uint8, mode="r")
            except (OSError, ValueError) as exc:  # unreadable, or empty (a truncated ark)
                raise DumpError(f"{ark}: cannot read ({getattr(exc, 'strerror', None) or exc}; utterance {utt})") from None
        if offset >= mm.shape[0]:
            raise DumpError(f"{ark}: truncated: utterance {utt} is at byte {offset}, the file has {mm.shape[0]} bytes")
        head = bytes(mm[offset:offset + _HEADER.size])
        if len(head) == _HEADER.size and head[:2] == b"\0B" and head[2:5] in _DTYPES:
            _, kind, s1, rows, s2, cols = _HEADER.unpack(head)
            dtype = _DTYPES[kind]
            end = offset + _HEADER.size + rows * cols * dtype.itemsize
            if s1 != 4 or s2 != 4 or rows < 0 or cols < 0 or end > mm.shape[0]:
                raise DumpError(f"{ark}: corrupt or truncated matrix header at byte {offset} (utterance {utt})")
            view = np.ndarray((rows, cols), dtype=dtype, buffer=mm, offset=offset + _HEADER.size)
        else:  # compressed or text matrices: let kaldiio decode them once
            import kaldiio

            try:
                view = np.asarray(kaldiio.load_mat(f"{ark}:{offset}"))
            except Exception as exc:  # kaldiio raises ValueError, struct.error, UnicodeDecodeError, ...
                raise DumpError(f"{ark}: corrupt matrix at byte {offset} (utterance {utt}): "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            if view.ndim != 2:
                raise DumpError(f"{ark}: corrupt matrix at byte {offset} (utterance {utt}): not a matrix")
        if view.shape[0] != self.num_frames[utt] or view.shape[1] != self.feat_conf.n_bins:
            raise DumpError(f"{ark}: utterance {utt} is {view.shape[0]} x {view.shape[1]}, expected "
                            f"{self.num_frames[utt]} frames (utt2num_frames) x {self.feat_conf.n_bins} "
                            f"{self.feat_conf.bins} bins")
        return view

    def read(self, utt, stream=0, start=0, end=None):
        """Frames ``[start, end)`` of one matrix as a float32 ``(end - start, F)`` array (a copy)."""
        return np.array(self.matrix(utt, stream)[start:end], dtype=np.float32)

    def load_segment(self, utt, start=0, end=None):
        """``(mix (n, F), src (n, F, C))`` float32 of frames ``[start, end)``."""
        mix = self.read(utt, 0, start, end)
        src = np.stack([self.matrix(utt, 1 + c)[start:end] for c in range(len(self.sources))], axis=-1)
        return mix, src.astype(np.float32, copy=False)

    def load_psa(self, utt, start=0, end=None):
        """``|S_c| cos(theta_c - theta_X)`` ``(n, F, C)`` float32 of frames ``[start, end)`` (phase_sensitive dumps)."""
        if not self.feat_conf.phase_sensitive:
            raise DumpError(f"{self.path}: no phase-sensitive targets; re-run stage 2 (compute_feats) with "
                            "phase_sensitive: true in the feature config")
        C = len(self.sources)
        return np.stack([self.matrix(utt, 1 + C + c)[start:end] for c in range(C)], axis=-1).astype(np.float32)

    def load(self, utt):
        """Whole utterance: ``(mix (T, F), src (T, F, C))`` float32 numpy arrays."""
        return self.load_segment(utt)


def read_dump_scp_values(path):
    """``{utt: int}`` of ``utt2num_frames``."""
    from sepkit.data.datadir import DataDirError, read_scp

    try:
        table = read_scp(path)
    except DataDirError as exc:
        raise DumpError(str(exc)) from None
    out = {}
    for utt, value in table.items():
        if not value.isdigit() or int(value) <= 0:
            raise DumpError(f"{path}: utterance {utt}: invalid frame count {value!r}")
        out[utt] = int(value)
    return out


def _read_sources(path):
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise DumpError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not names:
        raise DumpError(f"{path}: no sources listed")
    return names


class SegmentDataset(torch.utils.data.Dataset):
    """Fixed-length segments of a dump, with network inputs computed on the fly.

    Segments (a pure function of dump, ``segment_frames``, ``train``, ``seed`` and the epoch, so
    ``len`` and ``__getitem__(i)`` agree across processes, e.g. under ``DistributedSampler``):

    * ``segment_frames=None``: one item per whole utterance.
    * train: each utterance of T frames gives ``ceil(T / S)`` segments of S frames at random
      offsets, stratified (the k-th drawn uniformly in the k-th of ``ceil(T / S)`` equal slices of
      the possible offsets) so an epoch covers the utterance; seeded by ``(seed, epoch)``.
      Utterances shorter than S give one shorter item (padded in :func:`collate`); those shorter
      than ``min_frames`` (default ``S // 4``) are dropped.
    * valid (``train=False``): consecutive segments ``[0, S), [S, 2S), ...``, the last one shorter.

    Items: ``feats`` (n, Fin) = CMVN(Frontend.input_features(mix)), computed on the segment plus
    :data:`DELTA_CONTEXT` frames each side where the utterance has them, so they equal the
    whole-utterance features at the same frames; ``mix`` (n, F); ``src`` (n, F, C); ``length`` n;
    ``psa`` (n, F, C) when the dump is phase-sensitive. F is that of ``mask_bins``.

    The epoch and segment length live in a shared-memory tensor, so :meth:`set_epoch` and
    :meth:`set_segment_frames` in the main process also reach persistent DataLoader workers.

    Args:
        dump: :class:`FeatureDump` or its path.
        segment_frames: S, or None for whole utterances.
        cmvn: :class:`CMVN`, a path to ``cmvn.ark``, a ``CMVN.to_dict()`` dict, or None (no
            normalisation).
        train: random (train) or consecutive (validation) segments.
        seed: seed of the random offsets (combined with the epoch).
        min_frames: train mode drops utterances shorter than this (default ``S // 4``).
        mask_bins: bins of the targets ``mix``/``src``/``psa``: ``mel`` or ``linear``; None = the
            dump's. A linear dump gives mel targets through the mel filters (as a mel dump has them).
    """

    def __init__(self, dump, segment_frames=None, cmvn=None, train=True, seed=0, min_frames=None, mask_bins=None):
        self.dump = dump if isinstance(dump, FeatureDump) else FeatureDump(dump)
        if isinstance(cmvn, (str, Path)):
            cmvn = CMVN.load(cmvn)
        elif isinstance(cmvn, dict):  # as stored in model files
            cmvn = CMVN.from_dict(cmvn)
        if cmvn is not None and cmvn.mean.numel() != self.dump.feat_conf.input_dim:
            raise ValueError(f"{self.dump.path}: CMVN has {cmvn.mean.numel()} dimensions, the network input "
                             f"of feat_conf.yaml has {self.dump.feat_conf.input_dim}")
        self.cmvn = cmvn
        self.dump_bins = self.dump.feat_conf.bins
        self.mask_bins = mask_bins or self.dump_bins
        if self.mask_bins == "linear" and self.dump_bins != "linear":
            raise ValueError(f"{self.dump.path}: linear-bin masks need a dump of linear magnitudes; re-run "
                             "stage 2 (compute_feats) with bins: linear in the feature config")
        self.train, self.seed, self.min_frames = bool(train), int(seed), min_frames
        self.frontend = get_frontend(self.dump.feat_conf)  # built before workers fork
        self.context = DELTA_CONTEXT if self.dump.feat_conf.use_delta else 0
        self._lengths = np.array([self.dump.num_frames[u] for u in self.dump.utts], dtype=np.int64)
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()  # epoch, S (0 = whole utts)
        self._built_for = None
        self._segments = None
        self.set_segment_frames(segment_frames)

    @property
    def epoch(self):
        return int(self._state[0])

    @property
    def segment_frames(self):
        s = int(self._state[1])
        return s or None

    def set_epoch(self, epoch):
        """Select the epoch whose random offsets ``__getitem__`` uses."""
        self._state[0] = int(epoch)

    def set_segment_frames(self, segment_frames):
        """Change the segment length (curriculum); None = whole utterances. Changes ``len``."""
        if segment_frames is not None and int(segment_frames) < 1:
            raise ValueError(f"segment_frames must be a positive number of frames or None, got {segment_frames}")
        self._state[1] = int(segment_frames or 0)

    @property
    def segments(self):
        """``(N, 3)`` int64 array of (utterance index, start frame, length) for the current epoch."""
        key = (self.epoch, self.segment_frames)
        if self._built_for != key:
            self._segments = self._build(*key)
            self._built_for = key
        return self._segments

    def _build(self, epoch, S):
        lengths = self._lengths
        if S is None:
            idx = np.arange(len(lengths))
            return np.stack([idx, np.zeros_like(idx), lengths], axis=1)
        if self.train:
            min_frames = self.min_frames if self.min_frames is not None else S // 4
            keep = np.nonzero(lengths >= max(1, min_frames))[0]
        else:
            keep = np.arange(len(lengths))
        counts = -(-lengths[keep] // S)  # ceil(T / S)
        utt = np.repeat(keep, counts)
        k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # k-th segment of its utt
        T, n = lengths[utt], np.repeat(counts, counts)
        if self.train:
            u = np.random.default_rng([self.seed, epoch]).random(len(utt))
            span = np.maximum(T - S, 0) + 1  # number of possible offsets
            start = np.minimum(((k + u) * span / n).astype(np.int64), span - 1)
            length = np.minimum(T, S)
        else:
            start = k * S
            length = np.minimum(T - start, S)
        return np.stack([utt, start, length], axis=1).astype(np.int64)

    def __len__(self):
        return len(self.segments)

    def segment(self, i):
        """``(utt, start frame, length)`` of item ``i``."""
        u, start, length = self.segments[i]
        return self.dump.utts[u], int(start), int(length)

    def __getitem__(self, i):
        utt, start, n = self.segment(i)
        T = self.dump.num_frames[utt]
        a, b = max(0, start - self.context), min(T, start + n + self.context)
        mix_ctx = self.dump.read(utt, 0, a, b)  # (b - a, F) with delta context
        _, src = self.dump.load_segment(utt, start, start + n)
        mix_ctx = torch.from_numpy(mix_ctx)
        item = {"mix": mix_ctx[start - a:start - a + n], "src": torch.from_numpy(src), "length": n}
        if self.dump.feat_conf.phase_sensitive:
            item["psa"] = torch.from_numpy(self.dump.load_psa(utt, start, start + n))
        with torch.no_grad():
            feats = self.frontend.input_features(mix_ctx[None], self.dump_bins)[0, start - a:start - a + n]
            if self.cmvn is not None:
                feats = self.cmvn(feats)
            if self.mask_bins != self.dump_bins:  # linear dump, mel targets
                for key in ("mix", "src", "psa"):
                    if key in item:
                        x = item[key]  # (n, K) or (n, K, C)
                        item[key] = self.frontend.mel(x) if x.dim() == 2 else \
                            self.frontend.mel(x.transpose(-1, -2)).transpose(-1, -2).contiguous()
        item["feats"] = feats.contiguous()
        return item


def collate(items):
    """Pad items to the longest: ``feats`` (B, T, Fin), ``mix`` (B, T, F), ``src`` (B, T, F, C), ``psa``
    (B, T, F, C) when the items have it (zeros after each item's length) and ``lengths`` (B,) long."""
    lengths = torch.tensor([int(it["length"]) for it in items], dtype=torch.long)
    T = int(lengths.max())
    out = {}
    for key in [k for k in ("feats", "mix", "src", "psa") if k in items[0]]:
        first = items[0][key]
        buf = first.new_zeros((len(items), T) + tuple(first.shape[1:]))
        for b, it in enumerate(items):
            buf[b, :it[key].shape[0]] = it[key]
        out[key] = buf
    out["lengths"] = lengths
    return out
