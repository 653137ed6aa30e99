"""MISI phase reconstruction (sepkit.phase, Separator(misi_iters=...)): zero iterations are the paper's
mixture-phase path, iterations with the true magnitudes approach the true sources, the blockwise
reconstruction with its grown margin equals MISI over the whole signal, and the streamed path equals
the in-memory one."""
import numpy as np
import pytest
import torch

from sepkit import Separator
from sepkit.frontend import FeatureConfig, Frontend
from sepkit.phase import misi
from sepkit.separate import SeparationError
from test_separate import tiny_model_dict
from test_separate_cli import exp_dir  # noqa: F401  (a module fixture)
from test_separate_stream import assert_same, streamed, write_noise


def _sources(n=8000 * 3, sr=8000, seed=0):
    """Two sources that overlap in time and frequency (a gliding tone with harmonics, and noise bursts)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 300 + 100 * np.sin(2 * np.pi * 0.5 * t)
    ph = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * ph) / k for k in range(1, 6)) * 0.3
    noise = rng.standard_normal(n) * (0.5 + 0.5 * (np.sin(2 * np.pi * 1.3 * t) > 0)) * 0.2
    return torch.tensor(np.stack([voice, noise]), dtype=torch.float64)


def _sdr(est, ref):
    return 10 * torch.log10((ref ** 2).sum() / ((ref - est) ** 2).sum())


def test_zero_iterations_is_the_mixture_phase_and_true_magnitudes_improve():
    fe = Frontend(FeatureConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=20))
    fe.window = fe.window.double()
    src = _sources()
    x = src.sum(0, keepdim=True)  # (1, N)
    X = fe.stft(x)  # (1, T, K)
    S = fe.stft(src)  # (2, T, K)
    masks = S.abs() / X.abs().clamp_min(1e-12)  # the true magnitudes as masks on the mixture
    n = x.shape[-1]
    y0 = misi(X, masks, fe, n, 0)
    ref0 = fe.istft(X * masks, n)
    assert torch.allclose(y0[:, 0], ref0, atol=1e-12)
    # the iterations against a direct transcription of the algorithm with librosa's STFT pair (float64)
    import librosa

    kw = dict(n_fft=256, hop_length=64, window="hann", center=True)
    xs, A = x[0].numpy(), (X[0] * masks).abs().numpy().transpose(0, 2, 1)  # (2, K, T)
    Y = (X[0] * masks).numpy().transpose(0, 2, 1)
    for _ in range(3):
        y = np.stack([librosa.istft(Yc, length=n, **kw) for Yc in Y])
        y += (xs - y.sum(0)) / 2
        Y = A * np.exp(1j * np.angle(np.stack([librosa.stft(yc, pad_mode="constant", **kw) for yc in y])))
    want = np.stack([librosa.istft(Yc, length=n, **kw) for Yc in Y])
    np.testing.assert_allclose(misi(X, masks, fe, n, 3)[:, 0].numpy(), want, rtol=0, atol=1e-6)  # FFT rounding
    sdr = [sum(_sdr(misi(X, masks, fe, n, k)[c, 0], src[c]) for c in range(2)) / 2 for k in (0, 5, 30)]
    # with the true magnitudes only the phase is wrong: the iterations must recover much of it
    assert sdr[0] < sdr[1] < sdr[2] and sdr[2] - sdr[0] > 3.0, sdr


@pytest.mark.parametrize("head", ["mi", "dc"])
def test_blockwise_misi_equals_whole_signal_and_streamed(tmp_path, head):
    sr = 8000
    src = tmp_path / "in.wav"
    wav = write_noise(src, 2, 20, sr)
    whole = Separator(tiny_model_dict(), dtype="float32", block_frames=100000, misi_iters=4).separate(wav, sr, head)
    small = Separator(tiny_model_dict(), dtype="float32", block_frames=250, misi_iters=4)
    blocks = small.separate(wav, sr, head)
    for s in whole:  # the grown margin makes the blocks' MISI that of the whole signal (float rounding)
        np.testing.assert_allclose(blocks[s], whole[s], rtol=0, atol=2e-5, err_msg=s)
    plain = Separator(tiny_model_dict(), dtype="float32", block_frames=250).separate(wav, sr, head)
    assert max(np.abs(plain[s] - whole[s]).max() for s in plain) > 1e-3  # MISI changed the outputs
    assert_same(streamed(small, src, tmp_path, head), blocks)


def test_misi_refused_with_residual():
    with pytest.raises(SeparationError, match="misi_iters"):
        Separator(tiny_model_dict(), dtype="float32", residual=True, misi_iters=2)


def test_cli_misi_option(tmp_path, capsys, exp_dir):  # noqa: F811
    import soundfile as sf

    from test_separate_cli_errors import run_cli

    write_noise(tmp_path / "a.wav", 1, 2, 16000)
    src = tmp_path / "a.wav"
    rc, lines = run_cli(capsys, "--misi", "3", "--residual", "--model", exp_dir, "--outdir", tmp_path / "bad", src)
    assert rc == 1 and len(lines) == 1 and "misi_iters" in lines[0] and not (tmp_path / "bad").exists(), lines
    outs = {}
    for k in ("0", "3"):
        rc, lines = run_cli(capsys, "--misi", k, "--model", exp_dir, "--outdir", tmp_path / k, src)
        assert rc == 0 and lines == [], lines
        outs[k] = sf.read(tmp_path / k / "a" / "vocals.wav")[0]
    assert outs["0"].shape == outs["3"].shape and np.abs(outs["0"] - outs["3"]).max() > 1e-4
