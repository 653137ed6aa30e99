"""Tests of sepkit.separate: segment planning, block-wise signal path, MI/DC masks, the Separator API.

Tests that compare against float32 references or require bit-equal outputs say ``dtype="float32"``:
the default (auto) is bfloat16 autocast on CPUs with native bf16 (AMX / avx512_bf16). The auto path
itself is covered on every CPU by faking the native-bf16 probe (``test_auto_dtype_*``).
"""
import numpy as np
import pytest
import torch

from sepkit import Separator
from sepkit.frontend import CMVN, FeatureConfig
from sepkit.model_io import make_model_dict, save_model_dict
from sepkit.nets import ChimeraNet
from sepkit.separate import SeparationError, plan_segments, resolve_dtype

N_MELS = 24


def tiny_model_dict(seed=0, heads=("dc", "mi"), sources=("vocals", "accompaniment"), segment=20):
    """A random tiny Chimera network (hidden 8, 1 layer, D = 4) wrapped as a model file dict."""
    torch.manual_seed(seed)
    fc = FeatureConfig(n_mels=N_MELS)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": N_MELS, "hidden": 8, "layers": 1, "emb_dim": 4,
            "heads": list(heads)}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    cmvn = CMVN(torch.randn(fc.input_dim) * 0.1 - 3.0, torch.rand(fc.input_dim) + 0.5)
    return make_model_dict(net, conf, fc.to_dict(), cmvn, sources, {"segment_frames": segment})


@pytest.fixture(scope="module")
def sep():
    return Separator(tiny_model_dict(), dtype="float32")


def noise(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.1).astype(np.float32)


@pytest.mark.parametrize("T,L,overlap", [(1, 100, 0.0), (99, 100, 0.5), (100, 100, 0.0), (101, 100, 0.0),
                                         (250, 100, 0.0), (250, 100, 0.5), (1000, 37, 0.25), (64, 8, 0.9)])
def test_plan_segments_covers_and_partitions(T, L, overlap):
    starts, owned, length = plan_segments(T, L, overlap)
    assert length == min(L, T)
    assert starts == sorted(starts) and starts[0] == 0 and starts[-1] + length == T
    assert all(0 <= s and s + length <= T for s in starts)
    assert owned[0][0] == 0 and owned[-1][1] == T
    assert all(a1 == b0 for (_, b0), (a1, _) in zip(owned, owned[1:]))  # a partition of [0, T)
    assert all(s <= a < b <= s + length for s, (a, b) in zip(starts, owned))
    if overlap == 0.0 and T % L == 0:
        assert starts == list(range(0, T, L))


def test_blockwise_stft_and_reconstruction_match_whole_signal(sep):
    x = torch.from_numpy(noise((2, 16000 + 77)))
    fe = sep.frontend
    spec = fe.stft(x)
    torch.testing.assert_close(sep._mel(x, block=50), fe.mel(spec.abs()))
    masks = torch.rand(spec.shape[1], N_MELS, 2)
    out = sep._reconstruct(x, masks, block=37)  # (S, C, N)
    for s in range(2):
        ref = fe.reconstruct(spec, masks[..., s].expand(2, -1, -1), x.shape[-1])
        torch.testing.assert_close(out[s], ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rates", [(44100, 16000), (16000, 48000), (22050, 16000), (16000, 16000)])
def test_rowwise_resampling_matches_library_resample(rates):
    from sepkit.audio import resample
    from sepkit.separate import _resample_row

    x = noise((2, 12345))
    ref = resample(x, *rates)
    np.testing.assert_array_equal(np.stack([_resample_row(r, *rates) for r in x]), ref)


def test_mi_masks_are_per_segment_network_outputs(sep):
    feats = torch.randn(130, 2 * N_MELS)
    masks = sep._mi_masks(feats)  # segment 20, overlap 0: segments 0, 20, ..., 100, then 110 (end-aligned)
    with torch.no_grad():
        for s in range(0, 100, 20):
            ref = sep.model(feats[None, s:s + 20])["mask"][0]
            torch.testing.assert_close(masks[s:s + 20], ref)
        last = sep.model(feats[None, 110:130])["mask"][0]
    torch.testing.assert_close(masks[120:130], last[10:])  # frames only the last segment sees
    torch.testing.assert_close(masks.sum(-1), torch.ones(130, N_MELS))


def test_overlap_crossfade_is_a_weighted_average():
    s = Separator(tiny_model_dict(), overlap=0.5, dtype="float32")
    feats = torch.randn(40, 2 * N_MELS)
    masks = s._mi_masks(feats)  # segments at 0, 10, 20
    win = torch.sin(torch.pi * (torch.arange(20) + 0.5) / 20).square()
    with torch.no_grad():
        m0, m1 = s.model(feats[None, 0:20])["mask"][0], s.model(feats[None, 10:30])["mask"][0]
    t = 15  # in segments 0 (position 15) and 1 (position 5)
    ref = (win[15] * m0[15] + win[5] * m1[5]) / (win[15] + win[5])
    torch.testing.assert_close(masks[t], ref)


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
def test_output_shape_equals_input_shape(sep, sr):
    for shape in [(sr // 2,), (1, sr // 2 + 1), (2, sr // 2 + 3)]:
        wav = noise(shape, seed=sr)
        for head in ("mi", "dc"):
            est = sep.separate(wav, sr, head=head)
            assert list(est) == ["vocals", "accompaniment"]
            for y in est.values():
                assert y.shape == wav.shape and y.dtype == np.float32 and np.isfinite(y).all()


@pytest.mark.parametrize("head", ["mi", "dc"])
def test_estimates_sum_to_the_mixture_at_the_model_rate(sep, head):
    """Masks (softmax or one-hot) sum to one and the mel->linear transfer keeps that: S_v + S_a = X."""
    wav = noise((2, 16000))
    est = sep.separate(wav, 16000, head=head)
    np.testing.assert_allclose(est["vocals"] + est["accompaniment"], wav, atol=1e-5)
    assert np.abs(est["vocals"]).max() > 1e-3 and np.abs(est["accompaniment"]).max() > 1e-3


def test_residual_keeps_the_high_band_in_the_last_source():
    """On the model band (band="model": resampled to 16 kHz and back) the residual source keeps the input's band
    above 8 kHz; the full band (the default) is tests/test_fullband.py."""
    d, wav = tiny_model_dict(), noise((2, 22050))
    plain = Separator(d, dtype="float32", band="model").separate(wav, 44100)
    res = Separator(d, residual=True, dtype="float32", band="model").separate(wav, 44100)
    np.testing.assert_array_equal(res["vocals"], plain["vocals"])
    np.testing.assert_allclose(res["vocals"] + res["accompaniment"], wav, atol=1e-6)  # sums to the input
    spec = np.abs(np.fft.rfft(res["accompaniment"] - plain["accompaniment"]))  # = input above ~8 kHz
    freqs = np.fft.rfftfreq(wav.shape[-1], 1 / 44100)
    assert spec[:, freqs < 7000].mean() < 0.02 * spec[:, freqs > 9000].mean()


def test_stereo_uses_one_mask_for_both_channels(sep):
    wav = noise((1, 16000))
    mono = sep.separate(wav, 16000)
    both = sep.separate(np.concatenate([wav, wav]), 16000)  # identical channels: same downmix, same masks
    for name in mono:
        np.testing.assert_allclose(both[name], np.concatenate([mono[name]] * 2), atol=1e-6)
    half = sep.separate(np.concatenate([wav, 0.5 * wav]), 16000)  # downmix 0.75 wav: masks are scale-dependent,
    np.testing.assert_allclose(half["vocals"][1], 0.5 * half["vocals"][0], atol=1e-6)  # but shared by channels


@pytest.mark.parametrize("n", [1, 3, 100, 2205])
def test_very_short_inputs(sep, n):
    for head in ("mi", "dc"):
        est = sep.separate(noise((2, n)), 44100, head=head)
        assert est["vocals"].shape == (2, n) and np.isfinite(est["vocals"]).all()
    silent = sep.separate(np.zeros(n, np.float32), 16000, head="dc")
    assert not np.abs(silent["vocals"]).any()


def test_batching_does_not_change_the_output():
    d, wav = tiny_model_dict(), noise((2, 16000))
    for head in ("mi", "dc"):
        a = Separator(d, batch_size=1, overlap=0.5, dtype="float32").separate(wav, 16000, head=head)
        b = Separator(d, batch_size=64, overlap=0.5, dtype="float32").separate(wav, 16000, head=head)
        np.testing.assert_allclose(a["vocals"], b["vocals"], atol=1e-6)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_dc_two_pass_equals_one_pass(overlap):
    """Above dc_memory_mb the network runs twice instead of storing all embeddings: same masks."""
    d, wav = tiny_model_dict(), noise((2, 24000), seed=3)
    one = Separator(d, overlap=overlap, dtype="float32").separate(wav, 16000, head="dc")
    two = Separator(d, overlap=overlap, dc_memory_mb=0.01, dtype="float32").separate(wav, 16000, head="dc")
    np.testing.assert_array_equal(one["vocals"], two["vocals"])
    sub = Separator(d, overlap=overlap, kmeans_points=300, dtype="float32")  # k-means on 500 bins
    sub = sub.separate(wav, 16000, head="dc")
    np.testing.assert_allclose(sub["vocals"] + sub["accompaniment"], wav, atol=1e-5)


class _FreqStub(torch.nn.Module):
    """A 'network' whose DC embedding depends on frequency only: bands below 1 kHz vs above."""

    def __init__(self, low_band, emb_dim=4):
        super().__init__()
        self.heads, self.n_freq, self.emb_dim, self.n_sources = ("dc",), len(low_band), emb_dim, 2
        e = torch.zeros(len(low_band), emb_dim)
        e[low_band, 0], e[~low_band, 1] = 1.0, 1.0
        self.register_buffer("e", e)

    def forward(self, feats, lengths=None, heads=None):
        B, T, _ = feats.shape
        return {"embedding": self.e.expand(B, T, -1, -1).reshape(B, T * self.n_freq, self.emb_dim)}


@pytest.mark.parametrize("sources", [("vocals", "accompaniment"), ("accompaniment", "vocals")])
def test_dc_clusters_named_by_low_frequency_rule(sources):
    """Low-frequency tones land in the cluster holding the < 200 Hz bins: accompaniment (§3.3)."""
    s = Separator(tiny_model_dict(sources=sources), dc_naming="lowfreq")  # the stub has no MI head
    s.model = _FreqStub(torch.as_tensor(s.mel_freqs < 1000.0))
    t = np.arange(32000) / 16000
    low = 0.3 * np.sin(2 * np.pi * 110 * t) + 0.3 * np.sin(2 * np.pi * 330 * t)
    high = 0.3 * np.sin(2 * np.pi * 3000 * t)
    est = s.separate((low + high).astype(np.float32), 16000, head="dc")
    assert list(est) == list(sources)
    core = slice(2000, -2000)
    assert np.sum((est["accompaniment"] - low)[core] ** 2) < 0.01 * np.sum(low[core] ** 2)
    assert np.sum((est["vocals"] - high)[core] ** 2) < 0.01 * np.sum(high[core] ** 2)


@pytest.mark.parametrize("bad,msg", [(np.zeros((0, 100)), "zero channels"), (np.zeros((2, 0)), "no samples"),
                                     (np.array([0.0, np.nan, 0.0]), "NaN or infinite"),
                                     (np.array([[0.0, np.inf]]), "NaN or infinite"),
                                     (np.zeros((1, 2, 3)), "shape")])
def test_bad_waveforms_raise_one_line(sep, bad, msg):
    with pytest.raises(SeparationError, match=msg) as info:
        sep.separate(bad, 16000)
    assert "\n" not in str(info.value)


def test_from_pretrained_dir_and_file(tmp_path):
    d = tiny_model_dict(heads=("mi",), segment=[100, 30])  # a curriculum: the final length is used
    save_model_dict(tmp_path / "exp" / "model.pt", d)
    a = Separator.from_pretrained(tmp_path / "exp")
    b = Separator.from_pretrained(tmp_path / "exp" / "model.pt", dtype="float32", segment_frames=7)
    assert a.heads == ["mi"] and a.sources == ["vocals", "accompaniment"] and a.sample_rate == 16000
    assert a.segment_frames == 30 and b.segment_frames == 7
    with pytest.raises(SeparationError, match="no dc head"):
        a.separate(noise(1000), 16000, head="dc")
    with pytest.raises(SeparationError, match="overlap"):
        Separator(d, overlap=1.0)


def test_dtype_resolution():
    assert resolve_dtype("float32", "cpu") is None
    with pytest.raises(SeparationError, match="unknown dtype"):
        resolve_dtype("float16", "cpu")
    auto = resolve_dtype(None, "cpu")
    assert auto in (None, torch.bfloat16)
    try:
        bf = resolve_dtype("bfloat16", "cpu")
    except SeparationError as exc:  # this CPU's oneDNN has no bf16 LSTM
        assert auto is None and "not supported" in str(exc)
        return
    assert bf is torch.bfloat16
    est = Separator(tiny_model_dict(), dtype="bfloat16").separate(noise(8000), 16000)
    ref = Separator(tiny_model_dict(), dtype="float32").separate(noise(8000), 16000)
    assert est["vocals"].dtype == np.float32
    np.testing.assert_allclose(est["vocals"], ref["vocals"], atol=0.05)


def _autocast_seen(separator):
    """Record ``(autocast enabled, dtype)`` on the CPU at every network call of ``separator``."""
    seen = []
    separator.model.register_forward_pre_hook(
        lambda module, args: seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
    return seen


def test_auto_dtype_is_bf16_autocast_where_the_cpu_has_native_bf16(monkeypatch):
    """Faked native bf16: auto resolves to bfloat16 and the network runs under bf16 autocast, on any CPU.

    Where this CPU's oneDNN has no bf16 LSTM, the network runs with oneDNN off (aten LSTM in float32,
    linear layers in bf16): the Separator's autocast path is exercised either way.
    """
    import contextlib

    import sepkit.separate as sepmod

    monkeypatch.setattr(sepmod, "_cpu_bf16_native", lambda: True)
    assert resolve_dtype(None, "cpu") is torch.bfloat16 and resolve_dtype("auto", "cpu") is torch.bfloat16
    assert resolve_dtype("float32", "cpu") is None
    d, wav = tiny_model_dict(), noise((2, 8000))
    auto = Separator(d)
    assert auto.autocast_dtype is torch.bfloat16
    seen = _autocast_seen(auto)
    native = sepmod._bf16_lstm_runs(torch.device("cpu"))
    with contextlib.nullcontext() if native else torch.backends.mkldnn.flags(enabled=False):
        est = {head: auto.separate(wav, 16000, head=head) for head in ("mi", "dc")}
        ref = Separator(d, dtype="float32").separate(wav, 16000, head="mi")
    assert seen and set(seen) == {(True, torch.bfloat16)}, seen
    for head, out in est.items():
        assert out["vocals"].dtype == np.float32 and out["vocals"].shape == wav.shape
        np.testing.assert_allclose(out["vocals"] + out["accompaniment"], wav, atol=1e-5)  # float32 masks sum to 1
    for name, y in est["mi"].items():  # bf16 network, float32 reconstruction: close to float32, not equal
        err = np.linalg.norm(y - ref[name]) / np.linalg.norm(ref[name])
        assert 0 < err < 1e-2, (name, err)  # measured 4.5e-4 (AMD EPYC, oneDNN bf16)


def test_auto_dtype_is_float32_where_the_cpu_has_no_native_bf16(monkeypatch):
    import sepkit.separate as sepmod

    monkeypatch.setattr(sepmod, "_cpu_bf16_native", lambda: False)
    assert resolve_dtype(None, "cpu") is None and resolve_dtype("auto", "cpu") is None
    d, wav = tiny_model_dict(), noise((2, 8000))
    auto = Separator(d)
    assert auto.autocast_dtype is None
    seen = _autocast_seen(auto)
    est = auto.separate(wav, 16000, head="mi")
    assert seen and not any(enabled for enabled, _ in seen), seen
    ref = Separator(d, dtype="float32").separate(wav, 16000, head="mi")
    for name in ref:
        np.testing.assert_array_equal(est[name], ref[name])


def test_sepkit_cpu_bf16_overrides_the_probe(monkeypatch):
    """SEPKIT_CPU_BF16=0 makes auto float32 whatever oneDNN says (how the suite runs as on a CPU without
    bf16); =1 makes it bf16 wherever a bf16 LSTM runs; unset or other values leave oneDNN's answer."""
    import sepkit.separate as sepmod

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(sepmod, "_bf16_lstm_runs", lambda device: True)
    monkeypatch.setenv("SEPKIT_CPU_BF16", "0")
    assert resolve_dtype(None, "cpu") is None
    monkeypatch.setenv("SEPKIT_CPU_BF16", "")
    assert resolve_dtype(None, "cpu") is torch.bfloat16
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert resolve_dtype(None, "cpu") is None
    monkeypatch.setenv("SEPKIT_CPU_BF16", "1")
    assert resolve_dtype(None, "cpu") is torch.bfloat16


def test_real_clip_keeps_format(sep, shared_data):
    import soundfile as sf

    clip = sorted((shared_data / "iKala-sample" / "Wavfile").glob("*.wav"))
    if not clip:
        pytest.skip("no iKala sample clip")
    wav, sr = sf.read(clip[0], dtype="float32", always_2d=True)
    est = sep.separate(wav.T, sr, head="dc")
    assert est["vocals"].shape == wav.T.shape and sr == 44100
    assert np.isfinite(est["accompaniment"]).all()
