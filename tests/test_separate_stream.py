"""Streamed file-to-file separation (Separator.separate_file, sepkit.stream) equals the in-memory path."""
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from sepkit import Separator
from sepkit.audio import AudioError
from sepkit.blockwise import AudioReader, BinSubsample, Window, subsample_bins
from test_separate import tiny_model_dict


def write_noise(path, channels, seconds, sr, seed=0):
    """Noise with a quiet first second (silent DC bins) and a slowly varying level; float WAV."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    wav = (rng.standard_normal((channels, n)) * 0.1).astype(np.float32)
    wav *= (0.6 + 0.4 * np.sin(np.arange(n) / sr)).astype(np.float32)
    wav[:, :sr] *= 1e-4
    sf.write(path, wav.T, sr, subtype="FLOAT")
    return wav


def streamed(sep, src, tmp_path, head, **kw):
    outs = {s: tmp_path / f"{head}_{s}.wav" for s in sep.sources}
    sep.separate_file(src, outs, head=head, subtype="FLOAT", **kw)
    return {s: sf.read(p, dtype="float32", always_2d=True)[0].T for s, p in outs.items()}


def assert_same(got, ref):
    assert list(got) == list(ref)
    for s in ref:
        assert got[s].shape == ref[s].shape
        np.testing.assert_allclose(got[s], ref[s], rtol=0, atol=1e-6, err_msg=s)  # float32 rounding


@pytest.mark.parametrize("head", ["mi", "dc"])
def test_two_minute_stereo_file_streamed_equals_in_memory(tmp_path, head):
    """2 min of 22.05 kHz stereo (resampled to 16 kHz and back), blocks of 1234 frames (segments of 20:
    every block boundary falls mid-segment) read 7.3 s at a time; DC: k-means on a subsample."""
    sep = Separator(tiny_model_dict(), dtype="float32", block_frames=1234)
    wav = write_noise(tmp_path / "song.wav", 2, 120, 22050)
    assert sep.frontend.num_frames(120 * 16000) * sep.model.n_freq > 1.5 * sep.kmeans_points  # subsampled
    ref = sep.separate(wav, 22050, head=head)
    assert_same(streamed(sep, tmp_path / "song.wav", tmp_path, head, block_seconds=7.3), ref)
    assert sorted(os.listdir(tmp_path)) == sorted(["song.wav", f"{head}_vocals.wav", f"{head}_accompaniment.wav"])


@pytest.mark.parametrize("kw,sources", [({"residual": True}, ("vocals", "accompaniment")),
                                        ({"residual": True, "overlap": 0.5}, ("accompaniment", "vocals")),
                                        ({"overlap": 0.5, "batch_size": 3}, ("bass", "other")),
                                        ({"residual": True}, ("bass", "other"))])
def test_options_and_source_orders(tmp_path, kw, sources):
    """Residual outputs, overlap cross-fade, odd batches, DC clusters named (both orders) or not, mono 48 kHz."""
    sep = Separator(tiny_model_dict(sources=sources), dtype="float32", block_frames=700, **kw)
    wav = write_noise(tmp_path / "a.wav", 1, 20, 48000, seed=1)
    for head in ("mi", "dc"):
        assert_same(streamed(sep, tmp_path / "a.wav", tmp_path, head, block_seconds=3.1),
                    {s: y[None] for s, y in sep.separate(wav[0], 48000, head=head).items()})


def test_dc_one_pass_when_embeddings_fit_else_three(tmp_path, monkeypatch):
    """DC reads the file (and runs the network) once when its embeddings, magnitudes and samples fit in
    dc_memory_mb, else three times with a bounded memory; both equal the in-memory path."""
    reads = []
    real_blocks = AudioReader.blocks

    def blocks(self, n):  # counts the reads that start
        for i, block in enumerate(real_blocks(self, n)):
            if i == 0:
                reads.append(n)
            yield block

    monkeypatch.setattr(AudioReader, "blocks", blocks)
    wav = write_noise(tmp_path / "a.wav", 2, 8, 22050, seed=2)
    for memory_mb, n_reads, band in ((64, 1, "model"), (0.1, 3, "model"), (64, 2, "full"), (0.1, 4, "full")):
        # the full band (sepkit.fullband) reads the input once more: its own samples for the reconstruction
        sep = Separator(tiny_model_dict(), dtype="float32", block_frames=700, dc_memory_mb=memory_mb, band=band)
        reads.clear()
        got = streamed(sep, tmp_path / "a.wav", tmp_path, "dc", block_seconds=3.1, overwrite=True)
        assert len(reads) == n_reads, (memory_mb, reads)
        assert_same(got, sep.separate(wav, 22050, head="dc"))


def test_held_windows_do_not_grow_with_length(tmp_path, monkeypatch):
    """Every sliding window (samples, mel, features, masks) stays within a few blocks, whatever the length."""
    sep = Separator(tiny_model_dict(), dtype="float32", block_frames=300, batch_size=4)
    write_noise(tmp_path / "long.wav", 2, 60, 16000)  # 7501 frames: 25 blocks
    longest = {}
    real_append = Window.append

    def append(self, t):
        real_append(self, t)
        unit = sep.frontend.config.hop_length if self.dim == 1 else 1  # samples -> frames
        longest[self.dim] = max(longest.get(self.dim, 0), self.data.shape[self.dim] / unit)

    monkeypatch.setattr(Window, "append", append)
    for head in ("mi", "dc"):
        streamed(sep, tmp_path / "long.wav", tmp_path, head, block_seconds=1.0)
    bound = 3 * 300 + 4 * 20 + 2 * sep.margin + 200  # blocks of mel + a batch + the iSTFT margins + a read
    assert 0 < longest[0] <= bound and 0 < longest[1] <= bound, (longest, bound)


def test_bin_subsample_streamed_equals_whole():
    rng = np.random.default_rng(0)
    idx = torch.from_numpy(np.sort(rng.choice(10**7, 50_000, replace=False)))
    rows = torch.randn(idx.numel(), 3)
    whole = subsample_bins(idx, 4000, seed=5)
    assert whole.numel() == 4000 and bool((whole[1:] > whole[:-1]).all())
    sub = BinSubsample(4000, seed=5)
    cuts = np.sort(rng.choice(idx.numel(), 30, replace=False))
    for a, b in zip([0, *cuts], [*cuts, idx.numel()]):
        sub.add(idx[a:b], rows[a:b])
    got_idx, got_rows = sub.result()
    torch.testing.assert_close(got_idx, idx[whole])
    torch.testing.assert_close(got_rows, rows[whole])
    other = subsample_bins(idx, 4000, seed=6)  # another seed, another subset, spread over the whole range
    assert len(set(whole.tolist()) & set(other.tolist())) < 1000
    assert abs(float(idx[whole].float().mean()) / 10**7 - 0.5) < 0.02


def test_bad_input_and_existing_outputs_leave_nothing(tmp_path):
    sep = Separator(tiny_model_dict(), dtype="float32", block_frames=300)
    wav = write_noise(tmp_path / "in.wav", 2, 6, 16000)
    wav[1, 80000] = np.nan  # late in the file: found while streaming
    sf.write(tmp_path / "nan.wav", wav.T, 16000, subtype="FLOAT")
    outs = {s: tmp_path / "out" / f"{s}.wav" for s in sep.sources}
    (tmp_path / "out").mkdir()
    for head in ("mi", "dc"):
        with pytest.raises(AudioError, match="nan.wav: audio contains NaN"):
            sep.separate_file(tmp_path / "nan.wav", outs, head=head, block_seconds=0.5)
        assert os.listdir(tmp_path / "out") == []  # no output, no temporary file
    outs["vocals"].write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="vocals.wav"):
        sep.separate_file(tmp_path / "in.wav", outs, head="mi")
    assert outs["vocals"].read_bytes() == b"mine" and not outs["accompaniment"].exists()
    assert sep.separate_file(tmp_path / "in.wav", outs, head="mi", overwrite=True) == (16000, 2, 96000)
    assert sf.info(outs["vocals"]).frames == 96000 and sorted(os.listdir(tmp_path / "out")) == [
        "accompaniment.wav", "vocals.wav"]
