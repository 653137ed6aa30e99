"""Full-band stems (sepkit.fullband): masks of a 16 kHz model on the input's own STFT at 44.1 kHz."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sepkit import Separator, fullband
from sepkit.bin import band_energy
from sepkit.frontend import CMVN, FeatureConfig, Frontend
from sepkit.model_io import make_model_dict
from sepkit.nets import ChimeraNet

SR = 44100
STEMS4 = ("vocals", "drums", "bass", "other")


def model_dict(sources=("vocals", "accompaniment"), seed=0, n_mels=24):
    """A random tiny Chimera network of ``len(sources)`` sources (hidden 8, D = 4) as a model file dict."""
    torch.manual_seed(seed)
    fc = FeatureConfig(n_mels=n_mels)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": n_mels, "hidden": 8, "layers": 1, "emb_dim": 4,
            "n_sources": len(sources), "heads": ["dc", "mi"]}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    cmvn = CMVN(torch.randn(fc.input_dim) * 0.1 - 3.0, torch.rand(fc.input_dim) + 0.5)
    return make_model_dict(net, conf, fc.to_dict(), cmvn, list(sources), {"segment_frames": 20})


def white(channels, seconds, sr=SR, seed=0):
    return (np.random.default_rng(seed).standard_normal((channels, int(seconds * sr))) * 0.1).astype(np.float32)


def high_fraction(x, sr=SR, cutoff=8500.0):
    return band_energy.band_energy(np.atleast_2d(x), sr, cutoff)[0] / band_energy.band_energy(np.atleast_2d(x), sr,
                                                                                              cutoff)[1]


def lowpass(x, sr=SR, cutoff=7000.0):
    X = np.fft.rfft(x, axis=-1)
    X[..., np.fft.rfftfreq(x.shape[-1], 1 / sr) > cutoff] = 0
    return np.fft.irfft(X, n=x.shape[-1], axis=-1)


@pytest.mark.parametrize("bins", ["mel", "linear"])
def test_all_ones_masks_give_the_input_back_at_44k(bins):
    """Perfect reconstruction at the input's rate, band above 8 kHz included; every mapped bin is a convex
    combination of the model's bins (columns of the frequency map sum to 1)."""
    fe = Frontend(FeatureConfig(n_mels=24))
    fb = fullband.FullBand(fe, bins, SR, "cpu", block_frames=50)
    g = fb.frontend.config
    assert (g.n_fft, g.hop_length) == (1412, 353)  # the model's 32 ms window and 8 ms hop at 44.1 kHz
    torch.testing.assert_close(fb.freq.sum(0), torch.ones(g.n_fft // 2 + 1))
    assert bool((fb.freq >= 0).all())
    x = white(2, 1.3)
    T = fe.num_frames(-(-x.shape[-1] * 16000 // SR))
    y = fullband.reconstruct(fb, torch.from_numpy(x), torch.ones(T, fb.freq.shape[0], 1))[0].numpy()
    assert high_fraction(x) > 0.4  # white noise: most of its energy is above 8.5 kHz
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-5)


def test_full_band_keeps_the_high_band_and_agrees_below_7k():
    """White noise at 44.1 kHz through a random-weight model: the full band keeps energy above 8.5 kHz in every
    stem, the model band has ~none; below 7 kHz the two paths give nearly the same stems."""
    d, x = model_dict(), white(1, 2.0, seed=3)
    for head in ("mi", "dc"):
        full = Separator(d, dtype="float32").separate(x, SR, head=head)
        model = Separator(d, dtype="float32", band="model").separate(x, SR, head=head)
        for s in full:
            assert high_fraction(full[s]) > 0.05, (head, s)
            assert high_fraction(model[s]) < 1e-4, (head, s)
            a, b = lowpass(full[s][0]), lowpass(model[s][0])
            assert np.corrcoef(a, b)[0, 1] > 0.99, (head, s, np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("sources,channels", [(("vocals", "accompaniment"), 2), (STEMS4, 1), (STEMS4, 2)])
def test_stems_sum_to_the_input_and_stream_equals_memory(tmp_path, sources, channels):
    """Softmax (MI) and one-hot (DC) masks still sum to one after the mapping, for C = 2 and 4: the stems sum
    to the input; the streamed file path gives the in-memory outputs; with residual, the last source is the
    mixture minus the others."""
    d, x = model_dict(sources), white(channels, 3.0, seed=len(sources) + channels)
    sf.write(tmp_path / "in.wav", x.T, SR, subtype="FLOAT")
    for kw in ({}, {"residual": True}):
        sep = Separator(d, dtype="float32", block_frames=90, **kw)
        for head in ("mi", "dc"):
            ref = sep.separate(x, SR, head=head)
            np.testing.assert_allclose(sum(ref.values()), x, rtol=0, atol=2e-6, err_msg=f"{head} {kw}")
            outs = {s: tmp_path / f"{head}_{s}.wav" for s in sources}
            sep.separate_file(tmp_path / "in.wav", outs, head=head, subtype="FLOAT", block_seconds=0.37,
                              overwrite=True)
            for s in sources:
                got = sf.read(outs[s], dtype="float32", always_2d=True)[0].T
                np.testing.assert_allclose(got, ref[s], rtol=0, atol=1e-6, err_msg=f"{head} {s} {kw}")
            assert all(high_fraction(ref[s]) > 1e-3 for s in sources[:-1])  # the high band is in the stems


def test_at_the_model_rate_full_is_the_model_path(tmp_path):
    """At 16 kHz (the model's rate) band="full" is today's path, bit for bit (in memory and streamed)."""
    d, x = model_dict(STEMS4), white(2, 2.0, sr=16000, seed=5)
    sf.write(tmp_path / "in.wav", x.T, 16000, subtype="FLOAT")
    full, model = Separator(d, dtype="float32"), Separator(d, dtype="float32", band="model")
    for head in ("mi", "dc"):
        a, b = full.separate(x, 16000, head=head), model.separate(x, 16000, head=head)
        for s in STEMS4:
            np.testing.assert_array_equal(a[s], b[s])
        outs = {s: tmp_path / f"{s}.wav" for s in STEMS4}
        full.separate_file(tmp_path / "in.wav", outs, head=head, subtype="FLOAT", overwrite=True)
        for s in STEMS4:
            np.testing.assert_allclose(sf.read(outs[s], dtype="float32", always_2d=True)[0].T, b[s], rtol=0, atol=1e-6)


def test_bad_band_is_one_line():
    from sepkit.separate import SeparationError

    with pytest.raises(SeparationError, match="unknown band 'wide'"):
        Separator(model_dict(), band="wide")


def write_dir(root, sources, signals, sr):
    """A data dir (wav.scp and ``<source>.scp``) of one utterance ``u1`` from ``{source: (C, N)}``."""
    from sepkit.data.datadir import DataDir

    root.mkdir(parents=True)
    paths = {}
    for s in sources:
        sf.write(root / f"{s}.wav", signals[s].T, sr, subtype="FLOAT")
        paths[s] = {"u1": str(root / f"{s}.wav")}
    sf.write(root / "mix.wav", sum(signals.values()).T, sr, subtype="FLOAT")
    DataDir.create(root, {"u1": str(root / "mix.wav")}, paths, overwrite=True)


def test_band_energy_known_answer(tmp_path):
    """References: 1 kHz (amplitude 1) + 12 kHz (0.5): 20 % of the energy above 8 kHz; the estimate keeps the
    12 kHz tone at half its amplitude (-6.02 dB above 8 kHz, 1/17 of its energy there)."""
    sr, n = 32000, 32000  # 1 s: whole periods of both tones
    t = np.arange(n) / sr
    low, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 12000 * t)
    refs = {"vocals": np.stack([low + 0.5 * high] * 2), "drums": np.stack([low + 0.5 * high, 0 * low])}
    ests = {"vocals": np.stack([low + 0.25 * high] * 2), "drums": np.stack([low + 0.25 * high, 0 * low])}
    write_dir(tmp_path / "data", ["vocals", "drums"], refs, sr)
    write_dir(tmp_path / "sep", ["vocals", "drums"], ests, sr)
    out = tmp_path / "res" / "band.json"
    assert band_energy.main(["--cutoff", "8000", str(tmp_path / "data"), str(tmp_path / "sep"), str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_tracks"] == 1 and res["cutoff_hz"] == 8000
    for s in ("vocals", "drums"):
        assert res[s]["ref_high_fraction"] == pytest.approx(0.2, abs=1e-6)
        assert res[s]["est_high_fraction"] == pytest.approx(1 / 17, abs=1e-6)
        assert res[s]["high_db"] == pytest.approx(20 * np.log10(0.5), abs=1e-4)
    assert band_energy.main(["--cutoff", "16000", str(tmp_path / "data"), str(tmp_path / "sep"), str(out)]) == 1


def test_oracle_rows_follow_the_full_band():
    """Oracle masks on the full band: a 1 kHz tone and a 12 kHz tone are split by the STFT-bin oracle at the input's
    rate (ibm_stft / wlm_stft); the mel / linear-bin oracles mapped onto the full band keep the mixture's high band
    and still sum to the mixture; the model band has nothing above 8 kHz."""
    from sepkit.bin.oracle import oracle_estimates

    t = np.arange(SR) / SR
    refs = np.stack([np.sin(2 * np.pi * 1000 * t), 0.5 * np.sin(2 * np.pi * 12000 * t)])[:, None]  # (2, 1, N)
    refs[0] += 0.01 * white(1, 1.0, seed=9)  # a broadband floor: the mel masks are not all zeros up there
    mix = refs.sum(0)
    fe = Frontend(FeatureConfig(n_mels=40))
    heads = ["ibm", "wlm", "ibm_lin", "wlm_lin", "ibm_stft", "wlm_stft"]
    full, model = oracle_estimates(mix, refs, SR, fe, heads), oracle_estimates(mix, refs, SR, fe, heads, band="model")
    inner = slice(SR // 10, -SR // 10)  # away from the edges
    for h in ("ibm_stft", "wlm_stft"):
        np.testing.assert_allclose(full[h][1, 0, inner], refs[1, 0, inner], rtol=0, atol=0.02, err_msg=h)
    for h in heads:
        # Wiener-like: |S_c|^2 / (sum + eps) sums to less than 1 in near-silent bins (the resampler's roll-off
        # below 8 kHz, as on the model band); above 8 kHz the masks are renormalised (FullBand.masks renorm)
        np.testing.assert_allclose(full[h].sum(0), mix, rtol=0, atol=1e-5 if h.startswith("ibm") else 2e-3, err_msg=h)
        assert max(high_fraction(e) for e in full[h]) > 0.1, h  # the 12 kHz tone is in a stem
        if not h.endswith("_stft"):  # the model band: resampled to 16 kHz and back
            high = band_energy.band_energy(mix, SR, 8500.0)[0]
            assert max(band_energy.band_energy(e, SR, 8500.0)[0] for e in model[h]) < 1e-4 * high, h


def test_command_lines_choose_the_band(tmp_path):
    """sepkit-separate --band and separate_data --band reach the Separator: full keeps the high band, model not."""
    from sepkit.bin import separate, separate_data
    from sepkit.model_io import save_model_dict

    save_model_dict(tmp_path / "m.pt", model_dict())
    x = white(2, 1.0, seed=4)
    write_dir(tmp_path / "data", ["vocals", "accompaniment"], {"vocals": x, "accompaniment": 0 * x}, SR)
    for band in ("full", "model"):
        assert separate.main(["--model", str(tmp_path / "m.pt"), "--outdir", str(tmp_path / band), "--band", band,
                              "--dtype", "float32", "-q", "--no-progress", str(tmp_path / "data" / "mix.wav")]) == 0
        assert separate_data.main(["--model", str(tmp_path / "m.pt"), "--band", band, "--dtype", "float32",
                                   str(tmp_path / "data"), str(tmp_path / f"sd_{band}")]) == 0
        for path in (tmp_path / band / "mix" / "vocals.wav", tmp_path / f"sd_{band}" / "wav" / "vocals" / "u1.wav"):
            y = sf.read(path, dtype="float32", always_2d=True)[0].T
            assert (high_fraction(y) > 0.05) == (band == "full"), (band, path)
