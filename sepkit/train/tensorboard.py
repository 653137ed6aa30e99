"""TensorBoard output of training: scalars, and a fixed validation example drawn and played.

Everything goes under ``exp/<tag>/tensorboard/`` and is written by rank 0 only. At each
validation the example (the first ``tb_example_frames`` frames of the validation set's first
utterance) is run through the network and logged as

* ``example/masks``: one image, panels top to bottom: mixture log-mel spectrogram (80 dB range),
  then the MI head's mask for each source, then the DC head's k-means mask for each source
  (low frequencies at the bottom of each panel, time to the right, viridis-like colours);
* ``example/mixture`` and ``example/<head>_<source>``: the audio each head separates (mixture
  phase, :meth:`Frontend.reconstruct`), when the validation data dir (``valid_data``) gives the
  mixture waveform.

Images are rendered with numpy (no matplotlib).
"""
import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["TBWriter", "ValidationExample", "colorize", "stack_panels"]

# Anchors of a viridis-like perceptual colour map (dark violet -> blue -> teal -> green -> yellow).
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def colorize(x):
    """Values in [0, 1], shape ``(H, W)`` -> ``(H, W, 3)`` uint8 colours (linear between anchors)."""
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float64)), 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.minimum(np.floor(x).astype(int), len(_ANCHORS) - 2)
    frac = (x - lo)[..., None]
    return np.round(_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac).astype(np.uint8)


def stack_panels(panels, gap=2, min_height=64):
    """``[(T, F) arrays in [0, 1]]`` -> one ``(3, H, T)`` uint8 image, frequency upwards, white gaps.

    Each frequency row is repeated so that a panel is at least ``min_height`` pixels tall.
    """
    rows = []
    for i, p in enumerate(panels):
        if i:
            rows.append(np.full((gap, p.shape[0], 3), 255, dtype=np.uint8))
        scale = max(1, -(-min_height // p.shape[1]))
        img = colorize(np.asarray(p).T[::-1])  # (T, F) -> (F, T), low frequency at the bottom
        rows.append(np.repeat(img, scale, axis=0))
    return np.concatenate(rows, axis=0).transpose(2, 0, 1).copy()


def _db_panel(mel, range_db=80.0):
    db = 20 * np.log10(np.maximum(mel, 1e-10))
    top = db.max()
    return (db - (top - range_db)) / range_db


class TBWriter:
    """A ``SummaryWriter`` that does nothing when disabled (other ranks, ``tensorboard: false``)."""

    def __init__(self, logdir, enabled=True):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(logdir))

    def scalars(self, prefix, values, step):
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", float(value), step)

    def image(self, tag, img_chw, step):
        if self.writer is not None:
            self.writer.add_image(tag, img_chw, step, dataformats="CHW")

    def audio(self, tag, wav, step, sample_rate):
        if self.writer is not None:
            wav = torch.as_tensor(wav, dtype=torch.float32).reshape(1, -1).clamp(-1, 1)
            self.writer.add_audio(tag, wav, step, sample_rate=sample_rate)

    def text(self, tag, text, step=0):
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def flush(self):
        if self.writer is not None:
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ValidationExample:
    """The fixed validation example: network input, mixture mel and (optionally) waveform.

    Args:
        dataset: the validation :class:`sepkit.data.dataset.SegmentDataset` (its CMVN and frontend).
        frames: number of frames to keep (from the start of the first utterance).
        valid_data: optional data dir whose ``wav.scp`` has the same utterance (for audio).
    """

    def __init__(self, dataset, frames, valid_data=None):
        dump = dataset.dump
        self.utt = dump.utts[0]
        self.sources = list(dump.sources)
        self.frontend = dataset.frontend
        self.cmvn = dataset.cmvn
        conf = dump.feat_conf
        self.sample_rate = conf.sample_rate
        self.wav = self.spec = None
        if valid_data is not None:
            self.wav = self._load_wav(valid_data, frames, conf)
        self.bins = bins = dataset.mask_bins  # self.mel: the mixture magnitude on the mask bins (mel or linear)
        with torch.no_grad():
            if self.wav is not None:
                self.spec = self.frontend.stft(self.wav[None])
                raw, raw_bins = self.spec.abs()[0], "linear"
            else:
                n = min(frames, dump.num_frames[self.utt])
                raw, raw_bins = torch.from_numpy(dump.read(self.utt, 0, 0, n)), dataset.dump_bins
            self.mel = raw if bins == raw_bins else self.frontend.mel(raw)
            feats = self.frontend.input_features(raw[None], raw_bins)[0]
            self.feats = self.cmvn(feats) if self.cmvn is not None else feats
        fmax = conf.fmax or conf.sample_rate / 2
        import librosa

        self.mel_freqs = librosa.mel_frequencies(conf.n_mels + 2, fmin=conf.fmin, fmax=fmax)[1:-1] \
            if bins == "mel" else np.linspace(0, conf.sample_rate / 2, conf.n_fft // 2 + 1)

    def _load_wav(self, valid_data, frames, conf):
        from sepkit.audio import AudioError
        from sepkit.data.datadir import DataDir, DataDirError, load_audio

        try:
            spec = DataDir(valid_data).wav.get(self.utt)
            if spec is None:
                logger.info("TensorBoard audio skipped: %s has no utterance %s", valid_data, self.utt)
                return None
            wav, _ = load_audio(spec, sample_rate=conf.sample_rate)
        except (DataDirError, AudioError, OSError) as exc:
            logger.warning("TensorBoard audio skipped: %s", exc)
            return None
        wav = np.asarray(wav, dtype=np.float32).mean(axis=0)  # mono = mean of channels (data contract)
        n = (frames - 1) * conf.hop_length + 1  # 1 + n // hop == frames
        return torch.from_numpy(wav[:n].copy())

    @torch.no_grad()
    def render(self, model, device, autocast_dtype=None):
        """Run ``model`` (eval mode, no DDP wrapper) on the example.

        Returns ``(image (3, H, W) uint8, {tag: waveform (N,)})``; the dict is empty without audio.
        """
        from sepkit.cluster import kmeans, labels_to_masks, name_clusters_lowfreq
        from sepkit.losses import silence_weights

        feats = self.feats[None].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = model(feats)
        masks = {}
        mel = self.mel.float()
        T, F = mel.shape
        C = len(self.sources)
        if "mask" in out:
            masks["mi"] = out["mask"][0].float().cpu()  # (T, F, C)
        if "embedding" in out:
            emb = out["embedding"][0].float()  # (T*F, D)
            active = silence_weights(mel[None].to(emb.device))[0].reshape(-1)
            labels = kmeans(emb, C, n_init=2, seed=0, weights=active).labels
            dc = labels_to_masks(labels, C, (T, F)).cpu()  # (T, F, C)
            if C == 2:  # order as [vocals-like, accompaniment] with the paper's low-frequency rule
                dc = dc[..., name_clusters_lowfreq(dc, self.mel_freqs, active=active.reshape(T, F).cpu())]
            masks["dc"] = dc
        panels = [_db_panel(mel.numpy())]
        for head in ("mi", "dc"):
            if head in masks:
                panels += [masks[head][..., c].numpy() for c in range(C)]
        audio = {}
        if self.wav is not None:
            audio["mixture"] = self.wav
            for head, m in masks.items():
                for c, name in enumerate(self.sources):
                    wav = self.frontend.istft(self.spec * m[None, ..., c], self.wav.shape[0]) if self.bins == "linear" \
                        else self.frontend.reconstruct(self.spec, m[None, ..., c], self.wav.shape[0])
                    audio[f"{head}_{name}"] = wav[0]
        return stack_panels(panels), audio

    def legend(self, heads):
        rows = ["mixture log-mel (80 dB)"]
        for head in ("mi", "dc"):
            if head in heads:
                rows += [f"{head.upper()} mask: {name}" for name in self.sources]
        return f"utterance {self.utt}; panels top to bottom: " + "; ".join(rows)

    def log(self, tb, model, device, step, autocast_dtype=None):
        """Render and write the image and audio for this validation step."""
        img, audio = self.render(model, device, autocast_dtype)
        tb.image("example/masks", img, step)
        for tag, wav in audio.items():
            tb.audio(f"example/{tag}", wav, step, self.sample_rate)
