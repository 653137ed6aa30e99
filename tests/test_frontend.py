import numpy as np
import pytest
import torch

from sepkit.frontend import CMVN, FeatureConfig, Frontend, deltas, ibm, wiener_like_mask
from sepkit.metrics import si_sdr


def _two_sources(sr=16000, seconds=2.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = 220 * 2 ** (np.floor(t * 4) % 5 / 12)  # a stepped melody
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(h * phase) / h for h in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    bass = np.sin(2 * np.pi * 55 * t) + 0.5 * np.sin(2 * np.pi * 110 * t)
    hats = rng.standard_normal(t.size) * (np.mod(t, 0.25) < 0.03)
    acc = bass + np.convolve(hats, [1, -1], mode="same")
    voice, acc = voice / np.std(voice), acc / np.std(acc)
    return np.stack([voice, acc]).astype(np.float32) * 0.1


@pytest.mark.parametrize("conf", [FeatureConfig(), FeatureConfig(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=300),
                                  FeatureConfig(n_fft=1024, hop_length=256, n_mels=200, use_delta=False)])
def test_all_ones_mask_gives_back_input(conf):
    fe = Frontend(conf)
    wav = torch.from_numpy(_two_sources(conf.sample_rate).sum(0, keepdims=True))
    a = fe.analyze(wav)
    T = a["spec"].shape[1]
    assert T == fe.num_frames(wav.shape[-1]) == 1 + wav.shape[-1] // conf.hop_length
    assert a["mel"].shape == (1, T, conf.n_mels) and a["feats"].shape == (1, T, conf.input_dim)
    lin = fe.mask_to_linear(torch.ones(1, T, conf.n_mels))
    torch.testing.assert_close(lin, torch.ones_like(lin), atol=1e-5, rtol=0)
    out = fe.reconstruct(a["spec"], torch.ones(1, T, conf.n_mels), wav.shape[-1])
    assert out.shape == wav.shape
    edge = conf.n_fft
    err = (out - wav)[:, edge:-edge]
    snr = 10 * torch.log10(wav[:, edge:-edge].square().sum() / err.square().sum())
    assert snr > 60


def test_transfer_columns_are_convex_weights():
    fe = Frontend()
    tr = fe.transfer
    assert tr.shape == (150, 257) and (tr >= 0).all()
    torch.testing.assert_close(tr.sum(0), torch.ones(257), atol=1e-5, rtol=0)


def test_short_input_works():
    fe = Frontend()
    wav = torch.randn(1, 300)
    a = fe.analyze(wav)
    assert fe.reconstruct(a["spec"], torch.ones(1, a["spec"].shape[1], 150), 300).shape == (1, 300)


def test_oracle_mel_ibm_improves_si_sdr_by_8db():
    src = _two_sources(seconds=3.0)
    fe = Frontend()
    wav_src = torch.from_numpy(src)
    mix = wav_src.sum(0, keepdim=True)
    a = fe.analyze(mix)
    src_mel = fe.mel(fe.stft(wav_src).abs())  # (C, T, F)
    masks = ibm(src_mel.permute(1, 2, 0))  # (T, F, C)
    for c in range(2):
        est = fe.reconstruct(a["spec"], masks[None, ..., c], mix.shape[-1])[0].numpy()
        imp = si_sdr(est, src[c]) - si_sdr(mix[0].numpy(), src[c])
        assert imp > 8, f"source {c}: IBM improvement {imp:.1f} dB"
    wl = wiener_like_mask(src_mel.permute(1, 2, 0))
    assert torch.all((wl >= 0) & (wl <= 1))


def test_deltas_match_regression_formula():
    x = torch.randn(1, 7, 3)
    d = deltas(x, width=2)
    xp = torch.cat([x[:, :1], x[:, :1], x, x[:, -1:], x[:, -1:]], 1)
    t = 3
    expect = (1 * (xp[:, t + 3] - xp[:, t + 1]) + 2 * (xp[:, t + 4] - xp[:, t])) / 10
    torch.testing.assert_close(d[:, t], expect)
    assert torch.allclose(deltas(torch.ones(1, 5, 2)), torch.zeros(1, 5, 2))


def test_cmvn_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 2, (100, 4)), rng.normal(3, 2, (50, 4))
    stats = CMVN.accumulate(CMVN.accumulate(None, a), b)
    CMVN.save(tmp_path / "cmvn.ark", stats)
    cm = CMVN.load(tmp_path / "cmvn.ark")
    allx = np.concatenate([a, b])
    np.testing.assert_allclose(cm.mean.numpy(), allx.mean(0), rtol=1e-5)
    np.testing.assert_allclose(cm.std.numpy(), allx.std(0), rtol=1e-4)
    normed = cm(torch.from_numpy(allx).float())
    np.testing.assert_allclose(normed.mean(0).numpy(), 0, atol=1e-4)
    cm2 = CMVN.from_dict(cm.to_dict())
    torch.testing.assert_close(cm2.mean, cm.mean)


def test_feature_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown feature settings"):
        FeatureConfig.from_dict({"n_mel": 100})
