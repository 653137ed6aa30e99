"""Speed paths of separation: bfloat16 quality parity on real MIR-1K clips, and no host round trips.

bf16 parity: a small Chimera network (2 x 64 BLSTM, paper features) is trained briefly on MIR-1K
clips of abjones/amy, then a few annar/yifen clips are separated with the float32 network and with
a bfloat16 network; SI-SDRi and NSDR (BSS eval v3) of both heads must agree within 0.05 dB.
The bf16 network is the real autocast path (``Separator(dtype="bfloat16")``) where the hardware
runs a bf16 LSTM (CUDA, or a CPU whose oneDNN has bf16: AMX / avx512_bf16), and on every machine a
bit-level emulation of it: every matmul operand (input, weights, recurrent state) rounded to bf16
with float32 accumulation, every layer's output rounded to bf16 -- what oneDNN / cuDNN do under
autocast. Masks, k-means and reconstruction stay float32 in both, as in the library.

Device path: inside the per-segment loop the Separator must not wait for the device: no
``.cpu()``, ``.numpy()``, ``.item()``, ``.tolist()``, ``bool()/int()/float()`` of tensors, and no
transfer to another device; every op's tensors are on the model's device (checked with a
TorchFunctionMode that records them; run on CUDA too where one exists).
"""
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from sepkit import Separator
from sepkit.bf16 import emulate_bf16
from sepkit.frontend import CMVN, FeatureConfig, Frontend
from sepkit.losses import chimera_loss
from sepkit.metrics import score_file
from sepkit.model_io import make_model_dict
from sepkit.nets import ChimeraNet
from sepkit.separate import SeparationError, resolve_dtype

WAVS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "MIR-1K" / "Wavfile"
TOL_DB = 0.05
# The real-clip parity tests train a model and run a per-time-step bf16 emulation: minutes of CPU.
# They run with SEPKIT_SLOW_TESTS=1 (and wherever a native bf16 device exists); the device and
# round-trip tests below always run.
SLOW = os.environ.get("SEPKIT_SLOW_TESTS") == "1"


def _clips(singers, n):
    import soundfile as sf

    paths = sorted(p for p in WAVS.glob("*.wav") if p.name.split("_")[0] in singers)[:n]
    for p in paths:
        wav, sr = sf.read(p, dtype="float32")  # (N, 2): left = accompaniment, right = singing voice
        assert sr == 16000
        yield wav[:, 1].copy(), wav[:, 0].copy()


@pytest.fixture(scope="module")
def trained():
    """A 2 x 64 Chimera model dict trained for 120 steps (batches of 8 x 100 frames) on 12 abjones/amy clips."""
    if not WAVS.is_dir():
        pytest.skip(f"{WAVS} not present (real MIR-1K clips)")
    if not SLOW and _native_bf16_device() is None:
        pytest.skip("slow real-clip bf16 parity test: set SEPKIT_SLOW_TESTS=1 to run it")
    torch.manual_seed(0)
    fc = FeatureConfig()
    fe = Frontend(fc)
    mix, src, stats = [], [], None
    with torch.no_grad():
        for voc, acc in _clips({"abjones", "amy"}, 12):
            mels = fe.mel(fe.stft(torch.from_numpy(np.stack([voc + acc, voc, acc]))).abs())  # (3, T, F)
            mix.append(mels[0])
            src.append(mels[1:].permute(1, 2, 0))  # (T, F, 2): vocals, accompaniment
            stats = CMVN.accumulate(stats, fe.features(mels[:1])[0].numpy())
    cmvn = CMVN.from_stats(stats)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "hidden": 64, "layers": 2}
    net = ChimeraNet(fc.input_dim, hidden=64, layers=2)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    rng, L, B = np.random.default_rng(0), 100, 8
    for _ in range(120):
        picks = rng.integers(0, len(mix), B)
        starts = [int(rng.integers(0, mix[i].shape[0] - L + 1)) for i in picks]
        m = torch.stack([mix[i][s:s + L] for i, s in zip(picks, starts)])
        r = torch.stack([src[i][s:s + L] for i, s in zip(picks, starts)])
        loss = chimera_loss(net(cmvn(fe.features(m))), m, r, alpha=0.5, mi_loss="mmsa")["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return make_model_dict(net, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"], {"segment_frames": L})


def _scores(sep, clips):
    """Length-weighted SI-SDRi and NSDR (dB) per head: ``{head: (si_sdri (2,), nsdr (2,))}``."""
    out = {}
    for head in ("mi", "dc"):
        acc, n = np.zeros((2, 2)), 0
        for voc, accomp in clips:
            mix = voc + accomp
            est = sep.separate(mix, 16000, head=head)
            s = score_file(np.stack([est["vocals"], est["accompaniment"]]), np.stack([voc, accomp]), mix,
                           permute=False)
            acc += np.stack([s["si_sdri"], s["nsdr"]]) * len(mix)
            n += len(mix)
        out[head] = acc / n
    return out


def _native_bf16_device():
    if torch.cuda.is_available():
        return "cuda"
    try:
        resolve_dtype("bfloat16", "cpu")
        return "cpu"
    except SeparationError:
        return None


@pytest.fixture(scope="module")
def test_clips(trained):
    return list(_clips({"annar", "yifen"}, 3))


@pytest.fixture(scope="module")
def float32_scores(trained, test_clips):
    return _scores(Separator(trained, dtype="float32"), test_clips)


def test_trained_model_separates(float32_scores):
    # the parity test means something only if the model actually separates
    assert float32_scores["mi"][0].mean() > 1.0, float32_scores


def test_bf16_emulated_parity(trained, test_clips, float32_scores):
    bf = _scores(emulate_bf16(Separator(trained, dtype="float32")), test_clips)
    for head in ("mi", "dc"):
        diff = np.abs(bf[head] - float32_scores[head])
        assert diff.max() < TOL_DB, (head, bf[head], float32_scores[head])


def test_bf16_native_parity(trained, test_clips):
    device = _native_bf16_device()
    if device is None:
        pytest.skip("no native bf16 LSTM here (CPU without AMX/avx512_bf16 and no CUDA); emulation tested")
    f32 = _scores(Separator(trained, device=device, dtype="float32"), test_clips)
    bf = _scores(Separator(trained, device=device, dtype="bfloat16"), test_clips)
    for head in ("mi", "dc"):
        assert np.abs(bf[head] - f32[head]).max() < TOL_DB, (head, bf[head], f32[head])


def test_auto_dtype_matches_hardware():
    auto = resolve_dtype("auto", "cpu")
    assert auto in (None, torch.bfloat16)
    if _native_bf16_device() != "cpu":
        assert auto is None  # no native bf16 on this CPU: float32, not a slow emulation


# ---------------------------------------------------------------------------------- device path
SYNC_METHODS = {torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.item, torch.Tensor.tolist,
                torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__}


class DeviceRecorder(TorchFunctionMode):
    """Counts host round trips and records the devices of every tensor an op touches."""

    def __init__(self):
        super().__init__()
        self.syncs, self.devices = [], set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_METHODS:
            self.syncs.append(getattr(func, "__name__", str(func)))
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, torch.Tensor):
                self.devices.add(a.device.type)
        out = func(*args, **kwargs)
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.devices.add(o.device.type)
        return out


def _recorded_segment_loop(sep, recorder):
    """Wrap ``sep._segment_batches`` so that ``recorder`` is active for the whole per-segment loop."""
    orig = sep._segment_batches

    def wrapped(*args, **kwargs):
        with recorder:
            yield from orig(*args, **kwargs)

    sep._segment_batches = wrapped


def _small_dict():
    torch.manual_seed(0)
    fc = FeatureConfig(n_mels=24)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": 24, "hidden": 8, "layers": 1, "emb_dim": 4}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    cmvn = CMVN(torch.full((fc.input_dim,), -3.0), torch.ones(fc.input_dim))
    return make_model_dict(net, conf, fc.to_dict(), cmvn, ["vocals", "accompaniment"], {"segment_frames": 20})


def test_recorder_catches_round_trips():
    # the recorder must see the calls the real test forbids, or the test below proves nothing
    rec = DeviceRecorder()
    x = torch.ones(3)
    with rec:
        x.sum().item()
        bool(x.any())
        x.cpu()
        x.tolist()
        int(x[0])
    assert len(rec.syncs) == 5, rec.syncs


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("head,dc_memory_mb", [("mi", 512), ("dc", 512), ("dc", 0.01)])
def test_segment_loop_has_no_host_round_trips(device, head, dc_memory_mb):
    sep = Separator(_small_dict(), device=device, batch_size=4, dc_memory_mb=dc_memory_mb)
    rec = DeviceRecorder()
    _recorded_segment_loop(sep, rec)
    wav = np.random.default_rng(0).standard_normal((2, 16000 * 3)).astype(np.float32) * 0.1  # 15+ segments
    out = sep.separate(wav, 16000, head=head)
    assert out["vocals"].shape == wav.shape
    assert rec.devices, "the segment loop ran no torch op"
    assert rec.syncs == [], f"host round trips inside the segment loop: {rec.syncs}"
    assert rec.devices == {torch.device(device).type}, rec.devices


@pytest.mark.parametrize("device", DEVICES)
def test_kmeans_stft_masking_on_model_device(device, monkeypatch):
    """k-means, STFT, mel->linear masks and iSTFT receive tensors on the model's device."""
    import sepkit.separate as sepmod

    sep = Separator(_small_dict(), device=device, batch_size=4)
    seen = {}

    def spy(name, fn):
        def inner(*args, **kwargs):
            seen.setdefault(name, set()).update(a.device.type for a in args if isinstance(a, torch.Tensor))
            return fn(*args, **kwargs)
        return inner

    monkeypatch.setattr(sepmod, "kmeans", spy("kmeans", sepmod.kmeans))
    monkeypatch.setattr(torch, "stft", spy("stft", torch.stft))
    for name in ("istft", "mask_to_linear", "mel"):
        monkeypatch.setattr(sep.frontend, name, spy(name, getattr(sep.frontend, name)))
    wav = np.random.default_rng(1).standard_normal(16000 * 2).astype(np.float32) * 0.1
    for head in ("mi", "dc"):
        sep.separate(wav, 16000, head=head)
    assert set(seen) == {"kmeans", "stft", "istft", "mask_to_linear", "mel"}, seen
    assert all(v == {torch.device(device).type} for v in seen.values()), seen
