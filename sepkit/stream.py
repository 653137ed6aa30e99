"""Streaming separation, file to file, in memory that does not grow with the input's length.

:meth:`sepkit.separate.Separator.separate_file` (used by ``sepkit-separate``) reads the input with
soundfile in blocks of ``block_seconds``, resamples each channel with a streaming soxr resampler
(the filter of the in-memory path; soxr's streamed and one-shot outputs are the same samples), and
computes the mel spectrogram, features, network segments, masks and inverse STFT in blocks of
``Separator.block_frames`` frames, the blocks of the in-memory :meth:`Separator.separate`. The
estimates are resampled back and written in blocks (soundfile in write mode, temporary names
renamed onto the outputs at the end). Only a sliding window of a few blocks is held (a block of
frames, one batch of segments and the inverse STFT's margin), and the outputs equal those of
:meth:`Separator.separate` on the whole waveform (tests/test_separate_stream.py).

Passes over the file: the MI head needs one. The DC head needs one k-means over the whole file. When
the file's embeddings ``(T, F, D)``, mask-bin magnitudes and model-rate samples fit in ``dc_memory_mb``
(60 s of the paper's features with D = 20: ~95 MB; the default 512 MB holds ~5 min), they are held and the
file is read and the network run once (k-means on the same subsample, then labels and outputs from what is
held). Longer files keep memory bounded and read the file three times: (0) the mel spectrogram only, for the file's peak, which defines
the silent bins (``silence_db`` below it); (1) the network, keeping the embeddings of at most
``kmeans_points`` non-silent bins, those with the smallest values of a hash of their index
(:func:`sepkit.blockwise.subsample_bins`: a uniform random subset, fixed by ``seed``, that does not depend on how
the file is cut into blocks; the in-memory path fits k-means on the same bins); k-means on them;
(2) the network again: every bin takes its nearest centre's label and the masks are applied. The
clusters are named as in the in-memory path (``Separator.dc_naming``): by the MI head (its masks
computed in the same forward pass as the embeddings of the k-means subsample, pass 1 or the one
pass) or by the model file's ``dc_centers``, both known when k-means ends, so the centres are put in
source order before any label is given. The < 200 Hz rule ("lowfreq") needs the whole file's labels,
known only at the end of pass 2, so each cluster's estimate is written under a temporary name and
named by the final renaming.

The per-block steps (framing with the carried overlap, magnitudes, features, inverse STFT with the
carried tail) are those of :class:`sepkit.engine.BlockEngine`, which :mod:`sepkit.online` shares. A
causal model (body ``lstm``) reads the file once with either head: its network runs over the whole
sequence with its state carried from block to block (:class:`sepkit.engine.CausalMasks`), and its DC
masks come from the persistent centres of :mod:`sepkit.engine` (no k-means, no naming rule).
"""
import copy
import errno
import os
import shutil
from collections import deque
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sepkit.audio import _format_of, umask_mkstemp
from sepkit.blockwise import AudioReader, BinSubsample, Resampler, Window, nearest, plan_segments, resampled_length
from sepkit.engine import BlockEngine, CausalMasks
from sepkit.errors import SeparationError
from sepkit.pipeline import Stages, WriteBehind
from sepkit import fullband


__all__ = ["separate_file"]


class _Plan:
    """What every pass over one input shares: its size, the model-rate length and the segments."""

    def __init__(self, sep, reader, block_seconds, stages=None):
        self.reader, self.sr, self.channels, self.n = reader, reader.sample_rate, reader.channels, reader.frames
        self.nm = resampled_length(self.n, self.sr, sep.sample_rate)
        self.T = sep.frontend.num_frames(self.nm)
        self.starts, self.owned, self.L = plan_segments(self.T, sep.segment_frames, sep.overlap)
        self.starts_dev = torch.tensor(self.starts, device=sep.device)
        self.block_samples = max(1, int(round(block_seconds * self.sr)))
        self.stages = stages or Stages(False)  # the pipeline's worker threads (sepkit.pipeline), or none
        self.fullband = fullband.for_rate(sep, self.sr)  # None: estimates at the model's rate, resampled back


class _Pass(BlockEngine):
    """One read of the input: model-rate samples, mel, features and network batches, on demand.

    The block engine (:class:`~sepkit.engine.BlockEngine`) fed from the file: everything is held in
    :class:`~sepkit.blockwise.Window` s from which what no later step needs is dropped.
    """

    def __init__(self, sep, plan, head=None, desc="", reconstructs=False):
        from tqdm import tqdm

        # reconstructs: else samples are dropped as soon as their frames have a mel
        super().__init__(sep, plan.channels, plan.nm, feed=self._read, keep_samples=reconstructs)
        self.p, self.head = plan, head
        self.share = False  # pipeline: no network left to run (held DC), the caller reconstructs every other block
        self.samples = plan.stages.prefetch(_model_rate_blocks(plan, sep.sample_rate))  # read ahead (pipeline)
        self.bar = tqdm(total=len(plan.starts), desc=desc, unit="seg", leave=False,
                        disable=None if (sep.progress and head) else True)

    def _read(self):
        y = next(self.samples, None)
        self.push(torch.from_numpy(np.zeros((self.p.channels, 0), np.float32) if y is None else y).to(self.sep.device))

    def frozen(self, b0):
        """A copy of this pass whose windows stay as they are now, to reconstruct frames before ``b0`` from in the
        writer thread while this pass goes on (later steps replace a window's tensors, never write into them).
        The samples that frame ``b0 - 1`` reads are read first (the held DC path reads them only when asked)."""
        self.xpad((b0 - 1) * self.hop, (b0 - 1) * self.hop + self.n_fft)
        snap = copy.copy(self)
        for k, v in vars(self).items():
            if isinstance(v, Window):
                setattr(snap, k, copy.copy(v))
        snap.feed = None
        return snap

    def batches(self):
        """Yield ``(i, j, idx, out)``: network outputs ``(B, L, F, X)`` of segments ``i..j-1``, frames ``idx``."""
        p, B = self.p, self.sep.batch_size
        offsets = torch.arange(p.L, device=self.sep.device)
        for i in range(0, len(p.starts), B):
            j = min(i + B, len(p.starts))
            self.ensure_feats(p.starts[j - 1] + p.L)
            idx = p.starts_dev[i:j, None] + offsets  # (B, L)
            yield i, j, idx, self.sep._forward(self.feats.data[idx - self.feats.start], self.head)
            self.bar.update(j - i)
            nxt = p.starts[j] if j < len(p.starts) else p.T
            self.feats.drop_before(nxt)
            self.mel.drop_before(min(nxt, self.feats.end) - self.la)
        self.bar.close()

    def causal_masks(self):
        """Append the masks of a causal model to ``self.masks``, block by block: the network over the
        whole sequence with its state carried (:class:`~sepkit.engine.CausalMasks`), no segments."""
        run, T, B = CausalMasks(self.sep, self.head), self.p.T, self.sep.block_frames
        self.bar.close()
        for a in range(0, T, B):
            b = min(a + B, T)
            self.ensure_feats(b)
            out = run.push(self.feats.get(a, b), self.mel.get(a, b))
            self.masks.append(torch.cat([out, run.finish()]) if b == T else out)
            self.feats.drop_before(b)
            self.mel.drop_before(b - self.la)
            yield

    def mi_masks(self):
        """Append final MI masks to ``self.masks`` batch by batch (the in-memory cross-fade)."""
        sep, p = self.sep, self.p
        win = sep._crossfade(p.L)
        acc, wsum = Window(0), Window(0)
        for _, j, idx, mask in self.batches():
            grow = p.starts[j - 1] + p.L - acc.end
            if grow > 0:
                acc.append(torch.zeros(grow, *mask.shape[2:], device=sep.device))
                wsum.append(torch.zeros(grow, device=sep.device))
            sep._crossfade_add(acc.data, wsum.data, idx - acc.start, mask, win)
            final = p.starts[j] if j < len(p.starts) else p.T
            a = self.masks.end
            self.masks.append(acc.get(a, final) / wsum.get(a, final)[:, None, None])
            acc.drop_before(final)
            wsum.drop_before(final)
            yield

    def owned(self, i, j, out):
        """Yield ``(a, b, out)`` per segment of a batch: the frames it owns and their outputs."""
        for s, (a, b), o in zip(self.p.starts[i:j], self.p.owned[i:j], out):
            yield a, b, o[a - s:b - s]

    def dc_masks(self, centers, threshold):
        """Append one-hot DC masks ``(frames, F, k)`` in cluster order; sets ``self.occupancy``."""
        occ = [0, 0]
        for i, j, _, emb in self.batches():
            for a, b, e in self.owned(i, j, emb):
                labels = nearest(e, centers)
                occ = [o + n for o, n in zip(occ, self.sep._low_occupancy(labels, self.mel.get(a, b) > threshold))]
                self.masks.append(torch.nn.functional.one_hot(labels, self.sep.n_clusters).float())
            yield
        self.occupancy = occ

    def reconstruct(self, masks, n_est, emit):
        """Estimates of the first ``n_est`` masks at the model's rate, by blocks: ``emit((n_est, C, n), last)``."""
        sep, p = self.sep, self.p
        for a in range(0, p.T, sep.block_frames):
            b = min(a + sep.block_frames, p.T)
            a0, b0 = max(0, a - sep.margin), min(p.T, b + sep.margin)
            while self.masks.end < b0:
                next(masks)
            end = p.nm if b == p.T else b * self.hop
            if isinstance(emit, WriteBehind) and not (self.share and a // sep.block_frames % 2):
                # pipeline: the block reconstructed and written in the writer thread
                emit.later(_synth_emit, self.frozen(b0), a0, a, b0, end, n_est, b == p.T)
            else:  # (pipeline: written in the writer thread, in order)
                emit(self.synth(a0, a, b0, end, n_est).cpu().numpy(), b == p.T)
            self.drop_synthesised(b * self.hop)
        for _ in masks:  # nothing left: closes the batches' progress bar
            pass


def _model_rate_blocks(plan, rate):
    """The input's blocks of ``plan.block_samples`` resampled to ``rate``, ``(C, n)`` numpy; the last one ends
    the resampler (its tail). What the reader stage of the pipeline runs."""
    resampler = Resampler(plan.channels, plan.sr, rate, plan.nm)
    for block in plan.reader.blocks(plan.block_samples):
        yield resampler.push(block, False)
    yield resampler.push(np.zeros((plan.channels, 0), np.float32), True)


def _synth_emit(emit, run, a0, a, b0, end, n_est, last):
    """One block reconstructed from the frozen pass ``run`` (:meth:`_Pass.frozen`) and handed to ``emit``: the
    writer stage's call."""
    emit(run.synth(a0, a, b0, end, n_est).cpu().numpy(), last)


class _Outputs:
    """Estimates at the model's rate -> resampled back -> target files under temporary names.

    ``targets``: functions ``(E (S, C, n), input (C, n)) -> (C, n)`` at the input's rate, each
    written to a temporary file ``paths[t]`` + a random suffix; :meth:`commit` renames the chosen ones.
    """

    def __init__(self, sep, plan, n_est, targets, paths, fmt, subtype, need_input):
        self.plan, self.n_est, self.targets, self.files, self.writers = plan, n_est, targets, [], []
        self.resampler = Resampler(n_est * plan.channels, plan.sr if plan.fullband else sep.sample_rate, plan.sr,
                                   plan.n)
        self.raw = sf.SoundFile(plan.reader.path) if need_input else None
        try:
            for path in paths:
                tmp = umask_mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                self.files.append(tmp)
                self.writers.append(_soundfile_call(sf.SoundFile, tmp, "w", plan.sr, plan.channels, subtype=subtype,
                                                    format=fmt))
        except BaseException:
            self.discard()
            raise

    def __call__(self, est, last):
        y = self.resampler.push(est.reshape(self.n_est * self.plan.channels, -1), last)
        y = y.reshape(self.n_est, self.plan.channels, -1)
        wav = None if self.raw is None else self.raw.read(y.shape[-1], dtype="float32", always_2d=True).T
        for target, w in zip(self.targets, self.writers):
            block = target(y, wav)
            if not np.isfinite(block).all():
                raise SeparationError("the model produced NaN or infinite samples")
            _soundfile_call(w.write, block.T)

    def commit(self, chosen, dests):
        """Rename target ``chosen[i]`` onto ``dests[i]``; the other temporary files are removed."""
        self._close()
        for tmp in self.files:
            with open(tmp, "rb+") as fh:  # data on disk before the rename makes it visible
                os.fsync(fh.fileno())
        for t, dest in zip(chosen, dests):
            os.replace(self.files[t], dest)
            self.files[t] = None
        self.discard()

    def _close(self):
        for w in self.writers + [self.raw]:
            if w is not None and not w.closed:
                w.close()

    def discard(self):
        self._close()
        for tmp in self.files:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def _soundfile_call(fn, *args, **kwargs):
    """libsndfile's errors (a full disk, a subtype the format lacks) as one-line OSErrors.

    libsndfile reports a full disk as "System error."; the file's disk is looked at while the partial
    file is still there, so the error says ENOSPC (No space left on device) when that is what happened.
    """
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, ValueError) as exc:
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        path = getattr(getattr(fn, "__self__", None), "name", None) or (args[0] if args else None)
        try:
            full = isinstance(path, (str, os.PathLike)) and shutil.disk_usage(os.path.dirname(os.path.abspath(
                path))).free < (256 << 10)
        except OSError:
            full = False
        if full:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({msg})") from None
        raise OSError(msg) from None


def _destinations(sources, out_paths, overwrite):
    if isinstance(out_paths, dict):
        missing = [s for s in sources if s not in out_paths]
        if missing or len(out_paths) != len(sources):
            raise ValueError(f"out_paths must name every source ({', '.join(sources)}), got {sorted(out_paths)}")
        out_paths = [out_paths[s] for s in sources]
    dests = [Path(d) for d in out_paths]
    if len(dests) != len(sources):
        raise ValueError(f"need {len(sources)} output paths ({', '.join(sources)}), got {len(dests)}")
    for d in dests:
        if (d.exists() or d.is_symlink()) and not overwrite:
            raise FileExistsError(f"{d}: exists (overwrite=True replaces it)")
    return dests


def separate_file(sep, in_path, out_paths, head, block_seconds=10.0, subtype=None, overwrite=False, pipeline=None):
    """:meth:`sepkit.separate.Separator.separate_file` (see there and this module's text); ``pipeline``: read
    ahead and write behind in worker threads (:mod:`sepkit.pipeline`, same outputs; None: when a core is free)."""
    with Stages(pipeline) as stages:
        return _separate_file(sep, in_path, out_paths, head, block_seconds, subtype, overwrite, stages)


def _separate_file(sep, in_path, out_paths, head, block_seconds, subtype, overwrite, stages):
    dests = _destinations(sep.sources, out_paths, overwrite)
    if not block_seconds > 0:
        raise ValueError(f"block_seconds must be positive, got {block_seconds}")
    plan = _Plan(sep, AudioReader(in_path), block_seconds, stages)
    S, fmt = len(sep.sources), _format_of(dests[0])
    named = head == "dc" and sep.names_clusters and not sep.causal  # a causal model's cluster i is source i
    if named and len({_format_of(d) for d in dests}) > 1:
        raise SeparationError("the outputs of the DC head must all have one format (wav, flac or ogg)")
    with torch.inference_mode():
        if head == "dc" and not sep.causal:
            centers, threshold, held = _fit_centers(sep, plan)
        n_est = sep.n_clusters if named else S - int(sep.residual)
        targets = [lambda E, wav, c=c: E[c] for c in range(n_est)]
        if sep.residual:  # the last source is the input minus the other estimates
            rests = [slice(c, c + 1) for c in range(n_est)] if named else [slice(0, n_est)]
            targets += [lambda E, wav, r=r: wav - E[r].sum(0) for r in rests]
        paths = [dests[0].with_name(f"{head}{t}") for t in range(len(targets))] if named else dests
        out = stages.write_behind(_Outputs(sep, plan, n_est, targets, paths, fmt, subtype, sep.residual))
        try:
            run = _Pass(sep, plan, head, f"separate ({head})" + (" 2/2" if head == "dc" else ""),
                        reconstructs=plan.fullband is None)  # full band: the input's own samples, read again
            if head == "dc" and not sep.causal and held is not None:
                masks = _held_dc_masks(sep, run, centers, *held)
                run.share = True  # labels only: the caller has time for half of the blocks' reconstruction
            else:
                masks = run.causal_masks() if sep.causal else run.mi_masks() if head == "mi" else run.dc_masks(
                    centers, threshold)
            if plan.fullband is not None:  # the masks on the input's own STFT at its rate (sepkit.fullband)
                fullband.reconstruct_stream(plan.fullband, run, plan, masks, n_est, out)
            else:
                run.reconstruct(masks, n_est, out)
            chosen = list(range(S))
            if named:
                order = sep._cluster_order(*run.occupancy)
                chosen = order[:S - 1] + [n_est + order[0] if sep.residual else order[-1]]
            out.commit(chosen, dests)
        except BaseException:
            out.discard()
            raise
    return plan.sr, plan.channels, plan.n


def _fit_centers(sep, plan):
    """DC: ``(centres, silence threshold, held)``; ``held`` is what :func:`_fit_held` keeps, else None.

    When the file's embeddings, magnitudes and model-rate samples fit in ``dc_memory_mb`` (as the in-memory
    path, which holds the embeddings below that size): one pass (:func:`_fit_held`). Else passes 0 and 1:
    the file's mel peak, then k-means on the subsample of its non-silent bins (pass 2 runs the network again).
    """
    F, D = sep.model.n_freq, sep.dc_fit_width
    if (len(plan.starts) * plan.L * D + plan.T) * F * 4 + plan.channels * plan.nm * 4 <= sep.dc_memory_bytes:
        return _fit_held(sep, plan)
    scan = _Pass(sep, plan)  # pass 0: mel only
    peak = torch.zeros((), device=sep.device)
    for a in range(0, plan.T, sep.block_frames):
        scan.ensure_mel(a + sep.block_frames)
        peak = torch.maximum(peak, scan.mel.data.max())
        scan.mel.drop_before(scan.mel.end)
    threshold = sep._silence_threshold(peak)
    F, k = sep.model.n_freq, sep.n_clusters
    active, every, n_active = BinSubsample(sep.kmeans_points, sep.seed), BinSubsample(sep.kmeans_points, sep.seed), 0
    run = _Pass(sep, plan, sep.dc_fit_head, "separate (dc) 1/2")
    for i, j, _, emb in run.batches():
        for a, b, e in run.owned(i, j, emb):
            mel = run.mel.get(a, b).reshape(-1)
            e = torch.cat([e.reshape(-1, e.shape[-1]), mel[:, None]], 1)  # each bin's magnitude: the naming's weight
            act = (mel > threshold).nonzero().squeeze(1)
            active.add(act + a * F, e[act])
            n_active += act.numel()
            if n_active < k:  # a (nearly) silent file so far: k-means may need all bins
                every.add(torch.arange(a * F, b * F, device=sep.device), e)
    idx, points = (active if n_active >= k else every).result()
    return sep._dc_kmeans(points[:, :-1], points[:, -1]), threshold, None


def _fit_held(sep, plan):
    """DC in one network pass: the file read once, every embedding (the network's outputs, per segment, not
    copied), the magnitudes on the mask bins ``(T, F)`` and the model-rate sample blocks held; k-means on the
    in-memory path's subsample (:meth:`Separator._dc_fit_held`). Returns ``(centres, threshold, (held pieces
    (a, b, (b - a, F, D)), non-silent bins (T, F), samples))``."""
    run = _Pass(sep, plan, sep.dc_fit_head, "separate (dc) 1/2")
    samples, push = deque(), run.push
    run.push = lambda y: (samples.append(y), push(y))  # what the reconstruction reads again, without the file
    mel = torch.empty(plan.T, sep.model.n_freq, device=sep.device)
    held = []
    for i, j, _, emb in run.batches():
        for a, b, e in run.owned(i, j, emb):
            held.append((a, b, e))
            mel[a:b] = run.mel.get(a, b)
    centers, active = sep._dc_fit_held(held, mel)
    return centers, sep._silence_threshold(mel.max()), (held, active, samples)


def _held_dc_masks(sep, run, centers, held, active, samples):
    """Pass 2 of :func:`_fit_held`: one-hot masks in cluster order from the held embeddings, piece by piece,
    into ``run.masks`` (the samples from ``samples``, not the file); sets ``run.occupancy``."""
    run.feed = lambda: run.push(samples.popleft())
    occ = [0, 0]
    while held:
        a, b, e = held.pop(0)
        labels = nearest(e[..., :sep.model.emb_dim], centers)
        occ = [o + n for o, n in zip(occ, sep._low_occupancy(labels, active[a:b]))]
        run.masks.append(torch.nn.functional.one_hot(labels, sep.n_clusters).float())
        yield
    run.occupancy = occ
