"""The pipelined streamed path (sepkit.pipeline; Separator.separate_file(pipeline=True), sepkit-separate --pipeline):
the same bits as the serial path, the same one-line errors, no temporary file left when a worker fails, and no
worker thread left running."""
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_separate import tiny_model_dict  # noqa: E402
from test_separate_cli import exp_dir  # noqa: E402,F401  (a module fixture)

from sepkit import Separator  # noqa: E402
from sepkit.audio import AudioError  # noqa: E402
from sepkit.bin import separate as separate_bin  # noqa: E402
from sepkit.errors import SeparationError  # noqa: E402


def song(path, channels, seconds, sr, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    wav = (rng.standard_normal((channels, n)) * 0.1).astype(np.float32)
    wav *= (0.6 + 0.4 * np.sin(np.arange(n) / sr)).astype(np.float32)
    wav[:, :sr // 2] *= 1e-4  # quiet start: silent DC bins
    sf.write(path, wav.T, sr, subtype="FLOAT")
    return path


def run(sep, src, outdir, head, pipeline, **kw):
    outs = {s: outdir / f"{head}_{int(pipeline)}_{s}.wav" for s in sep.sources}
    sep.separate_file(src, outs, head=head, subtype="FLOAT", pipeline=pipeline, **kw)
    return {s: sf.read(p, dtype="float32", always_2d=True)[0] for s, p in outs.items()}


def workers():
    return [t.name for t in threading.enumerate() if t.name.startswith("sepkit-")]


def assert_bitwise(sep, src, tmp_path, head, **kw):
    serial = run(sep, src, tmp_path, head, False, **kw)
    piped = run(sep, src, tmp_path, head, True, **kw)
    for s in sep.sources:
        assert piped[s].dtype == serial[s].dtype and piped[s].shape == serial[s].shape
        assert np.array_equal(piped[s].view(np.uint32), serial[s].view(np.uint32)), s  # bits, not values
    assert workers() == []


@pytest.mark.parametrize("head", ["mi", "dc"])
@pytest.mark.parametrize("channels,sr,seconds,block_seconds,band", [
    (1, 22050, 1.5, 10.0, "model"),  # one block, resampled to the model's 16 kHz and back
    (1, 22050, 1.5, 10.0, "full"),   # one block, the input-rate reconstruction (sepkit.fullband)
    (2, 44100, 12.0, 2.5, "model"),  # stereo, several blocks of samples and of frames
    (2, 44100, 12.0, 2.5, "full"),
    (2, 16000, 9.0, 1.7, "full"),    # the model's rate: no resampling
    (1, 8000, 7.0, 3.0, "full"),     # below the model's rate
])
def test_pipelined_outputs_are_the_serial_bits(tmp_path, head, channels, sr, seconds, block_seconds, band):
    sep = Separator(tiny_model_dict(), dtype="float32", block_frames=200, band=band)
    src = song(tmp_path / "in.wav", channels, seconds, sr)
    assert_bitwise(sep, src, tmp_path, head, block_seconds=block_seconds)


@pytest.mark.parametrize("kw", [{"dc_memory_mb": 0.01},  # DC in three passes (the bounded path)
                                {"dc_memory_mb": 0.01, "band": "model"},
                                {"residual": True},     # the input read again by the writer
                                {"residual": True, "overlap": 0.5, "batch_size": 3, "band": "model"}])
def test_pipelined_equals_serial_other_paths(tmp_path, kw):
    sep = Separator(tiny_model_dict(), dtype="float32", block_frames=150, **kw)
    src = song(tmp_path / "in.wav", 2, 8.0, 48000, seed=1)
    for head in ("mi", "dc"):
        assert_bitwise(sep, src, tmp_path, head, block_seconds=1.9)


def test_pipelined_equals_serial_with_two_torch_threads(tmp_path):
    """The network on 2 threads, the workers' torch on 1 (their own setting only: the caller keeps 2)."""
    was = torch.get_num_threads()
    seen = []
    real = Separator._reconstruct_block

    def recording(self, *a):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return real(self, *a)

    torch.set_num_threads(2)
    try:
        sep = Separator(tiny_model_dict(), dtype="float32", block_frames=300)
        src = song(tmp_path / "in.wav", 2, 10.0, 16000, seed=2)  # the model's rate: the model-rate reconstruction
        Separator._reconstruct_block = recording
        try:
            assert_bitwise(sep, src, tmp_path, "mi", block_seconds=3.0)
        finally:
            Separator._reconstruct_block = real
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(was)
    assert ("MainThread", 2) in seen and ("sepkit-writer", 1) in seen  # serial run, then the writer's blocks
    assert {t for t, _ in seen} == {"MainThread", "sepkit-writer"}


@pytest.mark.parametrize("pipeline", [False, True])
@pytest.mark.parametrize("head", ["mi", "dc"])
def test_failing_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, pipeline, head):
    """The third block's write fails (libsndfile's error): the serial path's one-line OSError, raised in the caller,
    and no output nor temporary file; with the pipeline the write ran in the writer thread."""
    sep = Separator(tiny_model_dict(), dtype="float32", block_frames=100)
    src = song(tmp_path / "in.wav", 2, 6.0, 22050)
    out = tmp_path / "out"
    out.mkdir()
    calls, real = [], sf.SoundFile.write

    def write(self, data):
        calls.append(threading.current_thread().name)
        if len(calls) == 5:
            raise RuntimeError("Error : System error.\nsecond line")
        return real(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", write)
    with pytest.raises(OSError) as e:
        sep.separate_file(src, {s: out / f"{s}.wav" for s in sep.sources}, head=head, pipeline=pipeline)
    assert str(e.value) == "Error : System error."
    assert os.listdir(out) == []
    assert set(calls) == {"sepkit-writer" if pipeline else "MainThread"}
    assert workers() == []


@pytest.mark.parametrize("pipeline", [False, True])
@pytest.mark.parametrize("head", ["mi", "dc"])
def test_bad_block_read_ahead_is_the_same_error(tmp_path, monkeypatch, pipeline, head):
    """NaN samples in the input's third block: AudioError with the serial path's message (read in the reader
    thread with the pipeline), no output or temporary file."""
    sr = 22050
    wav = (np.random.default_rng(3).standard_normal((2, 8 * sr)) * 0.1).astype(np.float32)
    wav[1, 5 * sr] = np.nan
    src = tmp_path / "nan.wav"
    sf.write(src, wav.T, sr, subtype="FLOAT")
    readers, real = [], sf.SoundFile.read

    def read(self, *a, **k):
        readers.append(threading.current_thread().name)
        return real(self, *a, **k)

    monkeypatch.setattr(sf.SoundFile, "read", read)
    sep = Separator(tiny_model_dict(), dtype="float32", block_frames=100)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AudioError) as e:
        sep.separate_file(src, {s: out / f"{s}.wav" for s in sep.sources}, head=head, block_seconds=2.0,
                          pipeline=pipeline)
    assert str(e.value) == f"{src}: audio contains NaN or infinite samples"
    assert os.listdir(out) == []
    assert set(readers) == {"sepkit-reader" if pipeline else "MainThread"}
    assert workers() == []


@pytest.mark.parametrize("nan", [False, True])
def test_failure_mid_file_stops_the_workers(tmp_path, monkeypatch, nan):
    """The 30th network call fails in the calling thread (or returns NaN masks: the writer thread meets NaN samples)
    while blocks are queued for the writer: the one-line SeparationError, the writer stopped before the temporary
    files are removed, none left, no thread left."""
    sep = Separator(tiny_model_dict(), dtype="float32", block_frames=50, batch_size=2)
    src = song(tmp_path / "in.wav", 2, 12.0, 22050)
    n, real = [], Separator._forward

    def forward(self, x, head):
        out = real(self, x, head)
        n.append(1)
        if len(n) == 30:
            if not nan:
                raise SeparationError("network failed")
            return out * float("nan")
        return out

    monkeypatch.setattr(Separator, "_forward", forward)
    out = tmp_path / "out"
    out.mkdir()
    msg = "the model produced NaN or infinite samples" if nan else "network failed"
    with pytest.raises(SeparationError, match=f"^{msg}$"):
        sep.separate_file(src, {s: out / f"{s}.wav" for s in sep.sources}, head="mi")
    assert len(n) >= 30
    assert os.listdir(out) == []
    assert workers() == []


def test_cli_pipeline_and_no_pipeline_write_the_same_bits(tmp_path, capsys, exp_dir):  # noqa: F811
    src = song(tmp_path / "song.wav", 2, 4.0, 44100)
    outs = {}
    for flag in ("--pipeline", "--no-pipeline"):
        rc = separate_bin.main(["--no-progress", "--quiet", "--model", str(exp_dir), "--outdir",
                                str(tmp_path / flag), flag, str(src)])
        assert rc == 0, capsys.readouterr().err
        # the samples' bits (a float WAV's PEAK chunk holds the time it was written)
        outs[flag] = {p.name: sf.read(p, dtype="float32")[0].tobytes() for p in (tmp_path / flag / "song").glob("*.wav")}
    assert sorted(outs["--pipeline"]) == ["accompaniment.wav", "vocals.wav"]
    assert outs["--pipeline"] == outs["--no-pipeline"]


@pytest.mark.parametrize("band", ["model", "full"])
def test_reconstruction_runs_in_the_writer_thread(tmp_path, monkeypatch, band):
    """Every block's inverse STFT (and with it the masking) runs in the writer thread, on both bands (MI); DC from
    held embeddings: every other block in the caller."""
    from sepkit.frontend import Frontend

    seen, real = [], Frontend.istft

    def istft(self, *a, **k):
        seen.append(threading.current_thread().name)
        return real(self, *a, **k)

    monkeypatch.setattr(Frontend, "istft", istft)
    sep = Separator(tiny_model_dict(), dtype="float32", block_frames=150, band=band)
    src = song(tmp_path / "in.wav", 2, 6.0, 22050)
    run(sep, src, tmp_path, "mi", True, block_seconds=2.0)
    assert len(seen) > 3 and set(seen) == {"sepkit-writer"}
    seen.clear()  # DC with its embeddings held: the network has run, the caller takes every other block
    run(sep, src, tmp_path, "dc", True, block_seconds=2.0)
    assert len(seen) > 3 and sorted(seen) == sorted(["sepkit-writer", "MainThread"] * (len(seen) // 2)
                                                    + ["sepkit-writer"] * (len(seen) % 2))


@pytest.mark.parametrize("cores,expect", [({0, 1, 2, 3}, "sepkit-writer"), ({0}, "MainThread")])
def test_default_uses_the_pipeline_only_with_a_free_core(tmp_path, monkeypatch, cores, expect):
    """pipeline=None (the default): worker threads while torch's threads (1 here) leave a core free, else none."""
    from sepkit import pipeline

    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: cores)
    assert pipeline.auto() == (len(cores) > torch.get_num_threads())
    src = song(tmp_path / "in.wav", 1, 2.0, 16000)
    calls, real = [], sf.SoundFile.write

    def write(self, data):
        calls.append(threading.current_thread().name)
        return real(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", write)
    sep = Separator(tiny_model_dict(), dtype="float32")
    sep.separate_file(src, {s: tmp_path / f"{s}.wav" for s in sep.sources})
    assert calls and set(calls) == {expect}
