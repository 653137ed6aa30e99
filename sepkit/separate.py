"""Separate waveforms with a trained model: segment-wise batched inference, MI or DC masks (paper §3.3).

At test time the paper "split[s] the signal into fixed-length segments, on which we run the network
independently"; "the mask-inference head ... directly generates T-F masks. For deep clustering, the
masks are obtained by applying K-means on the embeddings for the whole signal", then the masks are
applied to the mel spectrogram of the input and the sources recovered "using an inverse mel-filterbank
transform and inverse-STFT with the mixture phase, followed by upsampling". :class:`Separator` does
exactly that:

1. Any channel count and sample rate: channels are resampled to the model's rate; the masks are
   estimated on the mono downmix (mean of channels) and applied to every channel; the estimates are
   resampled back and cut to the input's length.
2. Features ``cmvn(frontend.features(mel))`` of the whole file, cut into segments of ``segment_frames``
   (the model's training length by default); the last segment is aligned to the end of the file so
   that every segment has full length, and segments run through the network in batches.
3. MI head: per-segment masks are overlap-added with a Hann cross-fade (weights normalised per
   frame). DC head: each frame takes its embeddings from the segment in which it is most central;
   ONE k-means over the whole signal's non-silent bins (a random subsample of at most
   ``kmeans_points`` bins, see below; silent = more than ``silence_db`` below the file's peak),
   then every bin gets the label of its nearest centre. Naming the clusters (``dc_naming``,
   :mod:`sepkit.cluster`): a Chimera model by its own MI head ("mi", the default when the model has
   one: the MI masks come from the same forward pass; the overlap of each cluster with each source's
   mask on the k-means subsample, weighted by the bins' magnitude, one source per cluster by a linear
   assignment); a DC-only model by the model file's ``dc_centers`` ("centers", learnt from the
   validation data at training time: centre and anchor of largest cosine similarity, one source per
   cluster); "lowfreq" is the paper's < 200 Hz occupancy rule for vocals/accompaniment
   (:func:`sepkit.cluster.name_clusters_lowfreq`), the default of a DC-only model without ``dc_centers``.
4. Mel mask -> linear mask -> mixture STFT -> inverse STFT, computed in blocks of frames. Models whose
   heads output linear-frequency masks (``model_conf.mask_bins: linear``) skip the mel -> linear
   transfer: their masks (and DC silence, cluster naming) are on the STFT bins.

Causal models (body ``lstm``, :mod:`sepkit.engine`): step 2-3 differ: the network runs over the whole
sequence (in chunks of ``block_frames`` frames with its recurrent state carried, so memory is bounded),
never in segments, and the DC head takes the persistent centres of :mod:`sepkit.engine` (from the model
file's ``dc_centers``; cluster i is source i) instead of k-means. That is what
:meth:`Separator.online` (:mod:`sepkit.online`) computes block by block, to float rounding.

Memory: :meth:`Separator.separate` (arrays in and out) keeps per-frame arrays (mel, features, masks)
for the whole file and DC embeddings up to ``dc_memory_mb`` (else the network runs twice);
:meth:`Separator.separate_file` (file to file, used by ``sepkit-separate``) streams every step and
holds a few blocks whatever the length, with the same outputs (:mod:`sepkit.stream`). The k-means
subsample is the ``kmeans_points`` non-silent bins with the smallest hash of their index
(:func:`sepkit.blockwise.subsample_bins`), a uniform random subset fixed by ``seed``.

Everything after reading the waveform runs on the model's device; the per-segment loop never waits
for the device (no ``.item()``, no host copies). The network may run under bfloat16 autocast; masks,
k-means and reconstruction are float32.
"""
import contextlib
import logging
import math
import os

import numpy as np
import torch

from sepkit.cluster import kmeans, name_clusters_by_anchors, name_clusters_by_masks, name_clusters_lowfreq
from sepkit.engine import DC_TIME_CONSTANT, causal_masks, is_causal
from sepkit.errors import SeparationError
from sepkit import fullband
from sepkit.model_io import build_from_dict, load_model_dict
from sepkit.names import check_names
from sepkit.blockwise import nearest as _nearest
from sepkit.blockwise import plan_segments, subsample_bins
from sepkit.blockwise import resample_row as _resample_row
from sepkit.online import OnlineSeparator
from sepkit.stream import separate_file as _separate_file

logger = logging.getLogger(__name__)

__all__ = ["Separator", "SeparationError", "resolve_dtype", "plan_segments"]

DEFAULT_SEGMENT = 100  # frames; the paper's training segment length (§4.3)
# Overlap measured (bench/bench_separate.py overlap; 2 x 64 Chimera trained on MIR-1K, 107 test clips):
# 0.25-0.75 raise SI-SDRi by only 0.03-0.06 dB (MI and DC) for 1.3-4x the network time, so none.
DEFAULT_OVERLAP = 0.0
DEFAULT_BATCH = 32  # segments per network call
KMEANS_POINTS = 200_000  # bins in the k-means subsample
DC_MEMORY_MB = 512  # keep all DC embeddings below this size, else run the network twice
BLOCK_FRAMES = 1024  # frames per STFT / inverse-STFT block (4096: ~2x the time of the iSTFT, arrays > 32 MB page fault)
BACKENDS = ("torch", "onnxruntime")  # what runs the network (sepkit.onnx_backend for onnxruntime)


DC_NAMINGS = ("mi", "centers", "lowfreq")  # how DC clusters are named (sepkit.cluster); default: mi if the model has it
MISI_MAX = 1000  # MISI iterations: each widens every block by one window; gains stop after a few tens


def check_device(device):
    """``device`` as a ``torch.device`` this torch can use, else :class:`SeparationError` (one line)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SeparationError(f"device {device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SeparationError(f"device {device!r}: this torch sees no CUDA device "
                                  f"({'a CPU-only build' if torch.version.cuda is None else 'no GPU or driver'}); "
                                  "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SeparationError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        try:
            torch.empty(1, device=dev)
        except (RuntimeError, AssertionError) as exc:
            raise SeparationError(f"device {device!r} cannot be used ({(str(exc).splitlines() or [''])[0]})") from None
    return dev


def resolve_dtype(dtype, device):
    """``None``/``"auto"``/``"float32"``/``"bfloat16"`` -> autocast dtype or ``None`` (plain float32).

    Auto picks bfloat16 on CUDA devices that support it and on CPUs with native bf16 (AMX /
    avx512_bf16, as reported by oneDNN), float32 elsewhere. An explicit ``bfloat16`` on a CPU whose
    oneDNN cannot run a bf16 LSTM raises :class:`SeparationError`.
    """
    device = torch.device(device)
    name = str(dtype).replace("torch.", "") if dtype is not None else "auto"
    if name == "float32":
        return None
    if name not in ("auto", "bfloat16"):
        raise SeparationError(f"unknown dtype {dtype!r} (auto, float32 or bfloat16)")
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported() and _bf16_lstm_runs(device)
    elif device.type == "cpu":
        ok = _cpu_bf16_native() if name == "auto" else _bf16_lstm_runs(device)
    else:
        ok = name == "bfloat16"
    if name == "bfloat16" and not ok:
        raise SeparationError(f"bfloat16 is not supported on device {device} (use --dtype float32)")
    return torch.bfloat16 if ok else None


def _cpu_bf16_native():
    """oneDNN's word on native bf16 (AMX / avx512_bf16); ``SEPKIT_CPU_BF16=0`` says no (float32 by default,
    and how the test suite runs as on a CPU without bf16), ``=1`` yes wherever a bf16 LSTM runs."""
    forced = os.environ.get("SEPKIT_CPU_BF16", "")
    if forced in ("0", "1"):
        return forced == "1" and _bf16_lstm_runs(torch.device("cpu"))
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return native and _bf16_lstm_runs(torch.device("cpu"))


def _bf16_lstm_runs(device):
    """Probe: can a bidirectional LSTM run under bfloat16 autocast on ``device``?"""
    lstm = torch.nn.LSTM(4, 4, batch_first=True, bidirectional=True).to(device)
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            lstm(torch.zeros(1, 2, 4, device=device))
        return True
    except RuntimeError:
        return False


class Separator:
    """A trained model ready to separate waveforms of any rate, channel count and length.

    Args:
        model_dict: a model-file dict (:mod:`sepkit.model_io`).
        device: torch device for the network and the whole signal path.
        dtype: ``None``/"auto", "float32" or "bfloat16" (autocast of the network only).
        segment_frames: frames per segment (default: the model's training length, else 100).
        overlap: fraction of a segment shared by neighbouring segments.
        batch_size: segments per network call.
        silence_db: DC bins more than this below the file's peak are left out of k-means.
        kmeans_points, kmeans_n_init, seed: k-means subsample size, restarts and seed.
        dc_memory_mb: largest DC embedding store before switching to two passes.
        residual: the last source = the mixture minus the others (the other estimates, at the input's
            rate), for any number of sources; the estimates then sum to the input exactly. On the model
            band it also keeps the input's band above the model's Nyquist frequency, in the last source.
        band: ``"full"`` (default): for inputs above the model's rate the masks are applied to the input's
            own STFT at its rate, so every stem keeps the input's bandwidth (:mod:`sepkit.fullband`: the
            mapping and the rule above the model's Nyquist frequency); at or below the model's rate it is
            the model path. ``"model"``: the paper's path, every source masked at the model's rate and
            resampled back (nothing above the model's Nyquist frequency).
        progress: show a tqdm bar over segments.
        block_frames: frames per STFT / inverse-STFT block (both paths; the streamed window).
        misi_iters: iterations of MISI phase reconstruction (:mod:`sepkit.phase`); 0 = the mixture's
            phase (the paper). Needs every source masked (not with ``residual``).
        backend: ``"torch"`` or ``"onnxruntime"``: what runs the network (only the network; everything
            else is the same torch code). onnxruntime runs ``onnx_path`` (``sepkit-export --onnx``), float32
            on the CPU with ``num_threads`` intra-op threads (0 = its default); the file's settings must be
            ``model_dict``'s (:mod:`sepkit.onnx_backend`).
        dc_naming: how the DC head's k-means clusters are named (see above, :data:`DC_NAMINGS`): "mi" (the
            model's MI head), "centers" (the model file's ``dc_centers``) or "lowfreq" (< 200 Hz rule);
            None: "mi" when the model has an MI head, else "centers" when it has ``dc_centers``, else
            "lowfreq". Causal models name their persistent centres by ``dc_centers`` (cluster i is
            source i, :mod:`sepkit.engine`) and take no other rule.
    """

    def __init__(self, model_dict, device="cpu", dtype=None, segment_frames=None, overlap=DEFAULT_OVERLAP,
                 batch_size=DEFAULT_BATCH, silence_db=40.0, kmeans_points=KMEANS_POINTS, kmeans_n_init=1,
                 seed=0, dc_memory_mb=DC_MEMORY_MB, residual=False, progress=False, block_frames=BLOCK_FRAMES,
                 misi_iters=0, backend="torch", onnx_path=None, num_threads=0, dc_time_constant=DC_TIME_CONSTANT,
                 dc_naming=None, band="full"):
        self.device = check_device(device)
        if backend not in BACKENDS:
            raise SeparationError(f"unknown backend {backend!r} ({' or '.join(BACKENDS)})")
        self.backend = backend
        if backend == "onnxruntime":  # the network only; everything around it below stays torch
            from sepkit.nets import BODIES
            from sepkit.onnx_backend import load_backend

            body = model_dict.get("model_conf", {}).get("body", "blstm")
            if body in BODIES and BODIES.setting(body, "causal"):  # the graph has no step() to carry its state
                raise SeparationError(f"a causal model (body {body}) runs with the torch backend: its network runs "
                                      "over the whole signal with its state carried (sepkit.online), not in segments")

            if self.device.type != "cpu" or str(dtype or "auto").replace("torch.", "") not in ("auto", "float32"):
                raise SeparationError(f"the onnxruntime backend runs float32 on the CPU (got device {self.device}, "
                                      f"dtype {dtype}); use --device cpu --dtype float32, or --backend torch")
            self.autocast_dtype = None
            self.model, self.frontend, self.cmvn = load_backend(model_dict, onnx_path, num_threads)
        else:
            if onnx_path is not None:
                raise SeparationError("an ONNX file runs with backend onnxruntime, not torch")
            self.autocast_dtype = resolve_dtype(dtype, self.device)
            self.model, self.frontend, self.cmvn = build_from_dict(model_dict, self.device)
        self.cmvn.mean, self.cmvn.std = self.cmvn.mean.to(self.device), self.cmvn.std.to(self.device)
        self.sources = check_names(list(model_dict["sources"]), "model sources", at_least=2)  # they name files
        self.n_clusters = int(model_dict["model_conf"].get("n_sources", len(self.sources)))
        self.heads = [h for h in ("mi", "dc") if h in self.model.heads]
        self.causal = is_causal(self.model)  # whole-sequence network, persistent DC centres (sepkit.engine)
        self.dc_centers = self._dc_centers(model_dict.get("dc_centers"))
        self.dc_naming = self._resolve_dc_naming(dc_naming)
        if not dc_time_constant > 0:
            raise SeparationError(f"dc_time_constant must be a positive number of seconds, got {dc_time_constant}")
        self.dc_time_constant = float(dc_time_constant)
        self.mask_bins = self.model.mask_bins  # mel (paper) or linear: the bins of masks, silence and naming
        train_seg = model_dict.get("train", {}).get("segment_frames")
        if isinstance(train_seg, (list, tuple)):  # a curriculum: the last (final) length
            train_seg = train_seg[-1] if train_seg else None
        self.segment_frames = int(segment_frames or train_seg or DEFAULT_SEGMENT)
        if self.segment_frames < 1 or not 0.0 <= overlap < 1.0 or batch_size < 1:
            raise SeparationError(f"need segment_frames >= 1 (got {self.segment_frames}), 0 <= overlap < 1 "
                                  f"(got {overlap}) and batch_size >= 1 (got {batch_size})")
        self.overlap, self.batch_size, self.silence_db = float(overlap), int(batch_size), silence_db
        self.kmeans_points, self.kmeans_n_init, self.seed = int(kmeans_points), int(kmeans_n_init), seed
        self.dc_memory_bytes = int(dc_memory_mb * 2**20)
        self.residual, self.progress, self.block_frames = bool(residual), progress, int(block_frames)
        self.misi_iters = int(misi_iters)
        if band not in fullband.BANDS:
            raise SeparationError(f"unknown band {band!r} ({' or '.join(fullband.BANDS)})")
        self.band = band
        if not 0 <= self.misi_iters <= MISI_MAX or (self.misi_iters and self.residual):
            raise SeparationError(f"misi_iters must be in [0, {MISI_MAX}] (got {misi_iters}) and needs every source "
                                  "masked (it cannot be combined with residual)")
        import librosa

        c = self.frontend.config
        # Centre frequencies (Hz) of the mask bins (mel bands as in Frontend's filterbank, or STFT bins):
        # the < 200 Hz naming rule.
        self.mel_freqs = librosa.mel_frequencies(c.n_mels + 2, fmin=c.fmin, fmax=c.fmax or c.sample_rate / 2)[1:-1] \
            if self.mask_bins == "mel" else np.linspace(0, c.sample_rate / 2, c.n_fft // 2 + 1)

    @classmethod
    def from_pretrained(cls, path, device="cpu", dtype=None, **kwargs):
        """Load an exported model file, an ``exp/<tag>`` or hub folder, or a hub id ``owner/name[@revision]``
        (fetched or read from the local cache by ``huggingface_hub``; :mod:`sepkit.hub`), see :class:`Separator`.

        A ``.onnx`` file (``sepkit-export --onnx``) is a model too: it runs with ``backend="onnxruntime"``
        (:mod:`sepkit.onnx_backend`). ``backend="onnxruntime", onnx_path=...`` with a model file runs the
        ONNX file, refused unless it was exported from that model's settings."""
        from sepkit.onnx_backend import is_onnx_path, read_onnx

        if is_onnx_path(path):
            if kwargs.setdefault("backend", "onnxruntime") != "onnxruntime" or kwargs.get("onnx_path") not in (None, path):
                raise SeparationError(f"{path}: an ONNX file runs with backend onnxruntime (and no other onnx_path)")
            kwargs["onnx_path"] = path
            return cls(read_onnx(path)[0], device=device, dtype=dtype, **kwargs)
        return cls(load_model_dict(path), device=device, dtype=dtype, **kwargs)

    def _dc_centers(self, centers):
        """The model file's per-source DC anchors ``(C, D)`` on the device, or None."""
        if centers is None or "dc" not in self.heads:
            return None
        c = torch.as_tensor(centers, dtype=torch.float32)
        if c.shape != (self.n_clusters, getattr(self.model, "emb_dim", -1)) or not bool(torch.isfinite(c).all()):
            raise SeparationError(f"dc_centers must be {self.n_clusters} x {self.model.emb_dim} finite numbers, "
                                  f"got shape {tuple(c.shape)}")
        return c.to(self.device)

    def _resolve_dc_naming(self, naming):
        """The DC naming rule (:data:`DC_NAMINGS`) for ``naming`` (None: the default), or a one-line error."""
        if naming is not None and naming not in DC_NAMINGS:
            raise SeparationError(f"unknown dc_naming {naming!r} ({', '.join(DC_NAMINGS)})")
        if "dc" not in self.heads:
            return None
        if self.causal:
            if naming is not None:
                raise SeparationError(f"dc_naming {naming!r}: a causal model's DC clusters are its persistent centres, "
                                      "started at the model file's dc_centers (cluster i is source i); no other rule")
            return None
        explicit = naming is not None
        if not explicit:
            naming = "mi" if "mi" in self.heads else "centers" if self.dc_centers is not None else "lowfreq"
        if naming == "mi" and "mi" not in self.heads:
            raise SeparationError(f"dc_naming 'mi' names the DC clusters by the model's MI head, and this model has "
                                  f"none (heads: {', '.join(self.heads)}); use 'centers' or 'lowfreq'")
        if naming == "centers" and self.dc_centers is None:
            raise SeparationError("dc_naming 'centers' needs the model file's dc_centers (written by training since "
                                  "the causal-model commit), and this model file has none; use 'lowfreq'")
        if naming == "lowfreq" and explicit and sorted(self.sources) != ["accompaniment", "vocals"]:
            raise SeparationError(f"dc_naming 'lowfreq' names vocals and accompaniment only, and the model's sources "
                                  f"are {', '.join(self.sources)}")
        return naming

    def online(self, sample_rate, channels=1, head=None):
        """An :class:`~sepkit.online.OnlineSeparator` of this (causal) model for a live stream of blocks
        at ``sample_rate`` Hz with ``channels`` channels (:mod:`sepkit.online`)."""
        return OnlineSeparator(self, sample_rate, channels, head)

    @property
    def sample_rate(self):
        return self.frontend.config.sample_rate

    def default_head(self):
        return self.heads[0]

    # ------------------------------------------------------------------ public API
    def separate(self, waveform, sample_rate, head=None):
        """Separate one waveform.

        Args:
            waveform: ``(N,)`` or ``(C, N)`` float samples at ``sample_rate`` Hz.
            head: "mi" or "dc" (default: mi when the model has it).
        Returns:
            ``{source: array}`` in the model's source order, each shaped like ``waveform``, float32.
        Raises:
            SeparationError: empty input, zero channels, NaN/inf samples, unknown head.
        """
        wav = self._check_input(waveform, sample_rate)
        head = self._check_head(head)
        est = self._estimate(wav, sample_rate, head)  # (S, C, Nm) at the model's rate, or the input's (full band)
        n = wav.shape[-1]
        rate = sample_rate if fullband.for_rate(self, sample_rate) is not None else self.sample_rate
        out = np.empty((len(self.sources), wav.shape[0], n), dtype=np.float32)
        for s in range(est.shape[0]):  # row by row into one array: no full-size temporaries
            for ch in range(wav.shape[0]):
                out[s, ch] = _resample_row(est[s, ch], rate, sample_rate, n)
        del est
        if self.residual:
            out[-1] = wav - out[:-1].sum(0)
        return {name: out[s].reshape(np.shape(waveform)) for s, name in enumerate(self.sources)}

    def separate_file(self, in_path, out_paths, head=None, block_seconds=10.0, subtype=None, overwrite=False,
                      pipeline=None):
        """Separate audio file ``in_path`` streamed (:mod:`sepkit.stream`): memory does not grow with its length.

        ``out_paths``: ``{source: path}`` or paths in source order, written at the input's rate,
        channels and length (soundfile ``subtype``), each under a temporary name renamed onto the
        path once all are complete; existing files need ``overwrite``. Outputs equal :meth:`separate`'s.
        Returns ``(sample_rate, channels, samples)`` of the input. Raises AudioError (input),
        SeparationError (model), FileExistsError, OSError (writing). ``pipeline``: the next block read (and
        resampled) and the finished ones reconstructed and written in two worker threads while this one runs the
        network (:mod:`sepkit.pipeline`); the outputs are the same bits as with ``pipeline=False`` (all in this thread).
        None (default): on while torch's threads leave a core free (:func:`sepkit.pipeline.auto`), else off.
        """
        with self._cast_cache():
            return _separate_file(self, in_path, out_paths, self._check_head(head), block_seconds, subtype, overwrite,
                                  pipeline)

    def _cast_cache(self):
        """A disabled autocast context around a whole separation: the network's own autocast contexts (one per
        batch) are then nested in it and keep their bfloat16 casts of the weights until it ends, instead of
        casting every weight again for every batch (~2 % of the network's time on a CPU); nothing else runs
        under autocast, and the casts are the same values."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, enabled=False)

    def _check_head(self, head):
        head = head or self.default_head()
        if head not in self.heads:
            raise SeparationError(f"the model has no {head} head (heads: {', '.join(self.heads)})")
        return head

    def _estimate(self, wav, sample_rate, head):
        """``(C, N)`` numpy at ``sample_rate`` -> estimates ``(S, C, Nm)`` numpy at the model's rate, or
        ``(S, C, N)`` at ``sample_rate`` on the full band (:func:`sepkit.fullband.for_rate`).

        With ``residual`` the last source is left out (S - 1 rows).
        """
        with torch.inference_mode(), self._cast_cache():
            x = np.stack([_resample_row(row, sample_rate, self.sample_rate) for row in wav])
            x = torch.from_numpy(x).to(self.device)  # (C, Nm)
            mel = self._mel(x.mean(0, keepdim=True))[0]  # (T, F) of the mono downmix
            feats = self._features(mel)  # (T, Din)
            if self.causal:  # the whole sequence at once (state carried over chunks), no segments
                masks = causal_masks(self, feats, mel, head)
            else:
                masks = self._mi_masks(feats) if head == "mi" else self._dc_masks(feats, mel)  # (T, F, S)
            del feats
            if self.residual:
                masks = masks[..., :-1]
            fb = fullband.for_rate(self, sample_rate)
            if fb is not None:  # the input's own STFT at its rate (wav untouched by the resampler)
                return fullband.reconstruct(fb, torch.from_numpy(wav).to(self.device), masks).cpu().numpy()
            return self._reconstruct(x, masks).cpu().numpy()

    @staticmethod
    def _check_input(waveform, sample_rate):
        wav = np.asarray(waveform, dtype=np.float32)
        if wav.ndim == 1:
            wav = wav[None]
        if wav.ndim != 2:
            raise SeparationError(f"expected a (samples,) or (channels, samples) waveform, got shape {wav.shape}")
        if wav.shape[0] == 0:
            raise SeparationError("audio has zero channels")
        if wav.shape[1] == 0:
            raise SeparationError("audio has no samples")
        if not np.isfinite(wav).all():
            raise SeparationError("audio contains NaN or infinite samples")
        if not (isinstance(sample_rate, (int, np.integer)) or float(sample_rate).is_integer()) or sample_rate <= 0:
            raise SeparationError(f"invalid sample rate {sample_rate!r}")
        return wav

    # ------------------------------------------------------------------ signal path (blocks of frames)
    def _frames(self, xpad, a, b):
        """STFT frames ``[a, b)`` of the zero-padded signals ``xpad`` ``(C, N + n_fft)``: ``(C, b-a, K)``.

        Identical to frames a..b-1 of :meth:`Frontend.stft` (centred, zero padding).
        """
        return self.frontend.frames(xpad, a, b)

    def _pad(self, x):
        half = self.frontend.config.n_fft // 2
        return torch.nn.functional.pad(x, (half, half))

    def _mel(self, x, block=None):
        """``(C, N)`` -> magnitude on the mask bins ``(C, T, F)`` (mel, or linear for linear-mask models),
        T = 1 + N // hop, STFT in blocks of frames."""
        T, block = self.frontend.num_frames(x.shape[-1]), block or self.block_frames
        xpad = self._pad(x)
        return torch.cat([self._to_bins(self._frames(xpad, a, min(a + block, T)).abs())
                          for a in range(0, T, block)], dim=1)

    def _to_bins(self, mag):
        """Linear STFT magnitude ``(..., K)`` -> the mask bins' magnitude."""
        return self.frontend.to_bins(mag, self.mask_bins)

    def _features(self, mel):
        """Magnitude on the mask bins ``(T, F)`` -> normalised network input ``(T, Din)``."""
        return self.cmvn(self.frontend.input_features(mel[None], self.mask_bins))[0]

    def _reconstruct(self, x, masks, block=None):
        """Mixture ``(C, N)`` and mel masks ``(T, F, S)`` -> estimates ``(S, C, N)`` (§3.2, mixture phase).

        Same result as :meth:`Frontend.reconstruct` on the whole signal: each block of frames
        ``[a, b)`` is inverted with ``margin`` neighbouring frames on both sides, enough for every
        sample of the block to receive all of its overlapping frames.
        """
        C, N = x.shape
        hop, T, block = self.frontend.config.hop_length, masks.shape[0], block or self.block_frames
        xpad = self._pad(x)
        out = torch.empty(masks.shape[-1], C, N, device=x.device)
        for a in range(0, T, block):
            b = min(a + block, T)
            a0, b0 = max(0, a - self.margin), min(T, b + self.margin)
            end = N if b == T else b * hop
            out[:, :, a * hop:end] = self._reconstruct_block(self._frames(xpad, a0, b0), masks[a0:b0], a0, a, end)
        return out

    @property
    def margin(self):
        """Frames on each side of a block of frames that the inverse STFT of the block needs."""
        c = self.frontend.config
        reach = math.ceil(c.n_fft / c.hop_length)
        return reach + 1 + self.misi_iters * reach  # each MISI iteration reaches one window further

    def _reconstruct_block(self, spec, masks, a0, a, end):
        """Mixture STFT frames ``(C, n, K)`` from frame ``a0``, masks ``(n, F, S)`` -> samples ``[a * hop, end)``
        ``(S, C, M)``; the frames outside ``[a, end)`` only complete the overlap-add."""
        lin = masks.permute(2, 0, 1) if self.mask_bins == "linear" else self.frontend.mask_to_linear(
            masks.permute(2, 0, 1))  # (S, n, K)
        return fullband.synth_frames(spec, lin, self.frontend, self.misi_iters, a0, a, end)

    # ------------------------------------------------------------------ network over segments
    def _segment_batches(self, feats, head, desc):
        """Yield ``(starts, owned, idx, out)`` per batch of B segments.

        ``starts``/``owned``: host lists (see :func:`plan_segments`); ``idx``: ``(B, L)`` frame indices
        on the device; ``out``: ``(B, L, F, C)`` masks or ``(B, L, F, D)`` embeddings, float32.
        """
        from tqdm import tqdm

        T = feats.shape[0]
        starts, owned, L = plan_segments(T, self.segment_frames, self.overlap)
        offsets = torch.arange(L, device=feats.device)
        starts_dev = torch.tensor(starts, device=feats.device)
        with tqdm(total=len(starts), desc=desc, unit="seg", disable=None if self.progress else True,
                  leave=False) as bar:
            for i in range(0, len(starts), self.batch_size):
                j = min(i + self.batch_size, len(starts))
                idx = starts_dev[i:j, None] + offsets  # (B, L)
                yield starts[i:j], owned[i:j], idx, self._forward(feats[idx], head)
                bar.update(j - i)

    def _forward(self, x, head):
        """Features ``(B, L, Din)`` -> masks ``(B, L, F, C)`` or embeddings ``(B, L, F, D)``, float32; head
        ``"dc+mi"`` (DC with MI naming, one forward pass for both heads): ``(B, L, F, D + C)``, the embeddings
        then the masks."""
        heads = ("dc", "mi") if head == "dc+mi" else (head,)
        if self.backend == "onnxruntime":  # the backend switch: the only place the network runs
            outs = self.model.run(x, heads)
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                out = self.model(x, heads=heads)
            outs = [out["mask" if h == "mi" else "embedding"].float() for h in heads]
        outs = [o.reshape(*x.shape[:2], self.model.n_freq, -1) for o in outs]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    @property
    def dc_fit_head(self):
        """What the network computes for the k-means subsample: "dc+mi" when the MI head names the clusters."""
        return "dc+mi" if self.dc_naming == "mi" else "dc"

    @property
    def dc_fit_width(self):
        """Values per T-F bin of :attr:`dc_fit_head`'s output: D, or D + C with the MI masks."""
        return self.model.emb_dim + (self.model.n_sources if self.dc_fit_head == "dc+mi" else 0)

    def _mi_masks(self, feats):
        """MI head: masks ``(T, F, C)``, segment masks overlap-added with a Hann cross-fade."""
        T = feats.shape[0]
        win = self._crossfade(min(self.segment_frames, T))
        acc = torch.zeros(T, self.model.n_freq, self.model.n_sources, device=feats.device)
        wsum = torch.zeros(T, device=feats.device)
        for _, _, idx, mask in self._segment_batches(feats, "mi", "separate (mi)"):
            self._crossfade_add(acc, wsum, idx, mask, win)
        return acc / wsum[:, None, None]

    def _crossfade(self, L):
        """Hann cross-fade weights ``(L,)`` of the frames of a segment, > 0 everywhere."""
        return torch.sin(math.pi * (torch.arange(L, device=self.device) + 0.5) / L).square()

    @staticmethod
    def _crossfade_add(acc, wsum, idx, mask, win):
        """Add segment masks ``(B, L, F, C)`` weighted by ``win`` into ``acc`` at frames ``idx`` ``(B, L)``."""
        acc.index_add_(0, idx.reshape(-1), (mask * win[None, :, None, None]).reshape(-1, *mask.shape[2:]))
        wsum.index_add_(0, idx.reshape(-1), win.repeat(idx.shape[0]))

    def _dc_masks(self, feats, mel):
        """DC head: binary masks ``(T, F, C)`` from one k-means over the whole signal (§3.3).

        ``mel`` ``(T, F)`` is the mixture mel magnitude; it defines the silent bins.
        """
        T, F = mel.shape
        D, k = self.model.emb_dim, self.n_clusters
        starts, _, L = plan_segments(T, self.segment_frames, self.overlap)
        if len(starts) * L * F * self.dc_fit_width * 4 <= self.dc_memory_bytes:  # one pass: the outputs held
            held = [(a, b, emb[i, a - s:b - s]) for starts, owned, _, emb in self._segment_batches(
                    feats, self.dc_fit_head, "separate (dc)") for i, (s, (a, b)) in enumerate(zip(starts, owned))]
            centers, active = self._dc_fit_held(held, mel)
            labels = torch.cat([_nearest(e[..., :D], centers) for _, _, e in held])
            del held
        else:  # two passes: the subsample's embeddings, k-means, then the network again for the labels
            active = mel > self._silence_threshold(mel.max())  # (T, F)
            sample = self._dc_sample(active)
            sample_host = sample.cpu().numpy()
            points = torch.empty(sample.numel(), self.dc_fit_width, device=mel.device)
            for starts, owned, _, emb in self._segment_batches(feats, self.dc_fit_head, "separate (dc) 1/2"):
                self._dc_gather([(a, b, emb[i, a - s:b - s]) for i, (s, (a, b)) in enumerate(zip(starts, owned))],
                                sample, sample_host, points)
            centers = self._dc_kmeans(points, mel.reshape(-1)[sample])
            labels = torch.empty(T, F, dtype=torch.long, device=mel.device)
            for starts, owned, _, emb in self._segment_batches(feats, "dc", "separate (dc) 2/2"):
                for i, (s, (a, b)) in enumerate(zip(starts, owned)):
                    labels[a:b] = _nearest(emb[i, a - s:b - s], centers)
        order = self._cluster_order(*self._low_occupancy(labels, active))
        return torch.stack([labels == c for c in order], dim=-1).float()  # (T, F, C) in source order

    def _dc_sample(self, active):
        """The k-means subsample: sorted indices of at most ``kmeans_points`` of the non-silent bins ``active``
        ``(T, F)`` (of all bins when fewer than k are non-silent), :func:`subsample_bins`."""
        sample = active.reshape(-1).nonzero().squeeze(1)
        if sample.numel() < self.n_clusters:
            sample = torch.arange(active.numel(), device=active.device)
        return sample[subsample_bins(sample, self.kmeans_points, self.seed)]

    def _dc_kmeans(self, points, mags):
        """Centres ``(k, D)`` of k-means on the subsample's embeddings, named: in source order (centre s is source s)
        by ``dc_naming`` "mi" or "centers", in k-means' order for "lowfreq" (named at the end, :meth:`_cluster_order`).

        ``points`` ``(M, D)`` embeddings, or ``(M, D + C)`` with the MI masks of the same bins for "mi"; ``mags``
        ``(M,)``: the mixture's magnitude in those bins (the overlap's weights)."""
        if not bool(torch.isfinite(points).all()):
            raise SeparationError("the model produced NaN or infinite embeddings")
        D = self.model.emb_dim
        centers = kmeans(points[:, :D], self.n_clusters, n_init=self.kmeans_n_init, seed=self.seed).centers
        if self.dc_naming == "mi":
            order = name_clusters_by_masks(_nearest(points[:, :D], centers), points[:, D:], mags)
        elif self.dc_naming == "centers":
            order = name_clusters_by_anchors(centers, self.dc_centers)
        else:
            return centers
        return centers[order]

    def _dc_gather(self, pieces, sample, sample_host, points):
        """Copy the embeddings of the subsample's bins ``sample`` (sorted; ``sample_host`` on the host) that fall in
        ``pieces`` (``(a, b, embeddings of frames [a, b) (b - a, F, D))``) into their rows of ``points``."""
        F = self.model.n_freq
        for a, b, e in pieces:
            lo, hi = np.searchsorted(sample_host, [a * F, b * F])
            points[lo:hi] = e.reshape(-1, e.shape[-1])[sample[lo:hi] - a * F]
        return points

    def _dc_fit_held(self, held, mel):
        """k-means on the embeddings of the whole signal: ``held`` pieces ``(a, b, (b - a, F, D))`` in frame order
        (the network's outputs, not copied); ``mel`` ``(T, F)``, the mixture's magnitudes on the mask bins ->
        ``(centres (k, D), non-silent bins (T, F))``."""
        active = mel > self._silence_threshold(mel.max())
        sample = self._dc_sample(active)
        points = torch.empty(sample.numel(), self.dc_fit_width, device=mel.device)
        points = self._dc_gather(held, sample, sample.cpu().numpy(), points)
        return self._dc_kmeans(points, mel.reshape(-1)[sample]), active

    def _silence_threshold(self, peak):
        """Mel magnitudes at or below this are silent (DC): ``silence_db`` below the file's peak."""
        return peak.clamp_min(1e-20) * 10 ** (-self.silence_db / 20)

    @property
    def names_clusters(self):  # DC clusters named at the end by the < 200 Hz rule (mi, centers: named centres)
        return self.dc_naming == "lowfreq" and self.n_clusters == 2 and sorted(self.sources) == ["accompaniment", "vocals"]

    def _low_occupancy(self, labels, active):
        """Bins below 200 Hz per cluster ``(k,)``: ``(non-silent ones, all)``; labels, active ``(T, F)``."""
        low = self.mel_freqs < 200.0
        if not low.any():
            low[0] = True
        low = torch.as_tensor(low, device=labels.device)
        occ = torch.nn.functional.one_hot(labels[:, low], self.n_clusters)  # (T, F_low, k)
        return (occ * active[:, low, None]).sum((0, 1)), occ.sum((0, 1))

    def _cluster_order(self, occ_active, occ_all):
        """Cluster index for each of ``self.sources``, from :meth:`_low_occupancy` summed over the file.

        Vocals/accompaniment are named by the paper's < 200 Hz occupancy rule
        (:func:`sepkit.cluster.name_clusters_lowfreq`), counted on the non-silent bins (on all bins
        when nothing below 200 Hz is audible).
        """
        if self.dc_naming != "lowfreq":  # the centres are in source order already (:meth:`_dc_kmeans`)
            return list(range(self.n_clusters))
        if self.names_clusters:
            occ = occ_active if bool(occ_active.any()) else occ_all
            vocal, acc = name_clusters_lowfreq(occ.double().view(1, 1, 2), [0.0])  # counts as one bin
            return [vocal if name == "vocals" else acc for name in self.sources]
        logger.warning("DC head: no naming rule for sources %s; clusters are in arbitrary order", self.sources)
        return list(range(self.n_clusters))
