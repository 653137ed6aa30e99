"""Masks on the STFT bins (training key mask_bins: linear) and the phase-sensitive feature dump.

A dump made with ``bins: linear, phase_sensitive: true`` stores linear magnitudes and
``|S_c| cos(theta_c - theta_X)``; a Chimera net with linear-bin heads trains on it (tPSA + whitened
DC), separates through :class:`Separator` in memory and streamed with identical outputs; PSA on an
older dump is refused in one line; mel-mask model files load and separate as before.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_compute_feats import _make_data  # noqa: E402
from test_train_helpers import TINY, make_corpus, train_args  # noqa: E402

from sepkit.audio import resample  # noqa: E402
from sepkit.bin import compute_cmvn, compute_feats  # noqa: E402
from sepkit.bin.train import main as train_main  # noqa: E402
from sepkit.data.dataset import FeatureDump, SegmentDataset  # noqa: E402
from sepkit.frontend import FeatureConfig, Frontend  # noqa: E402

CONF = {"sample_rate": 8000, "n_fft": 128, "hop_length": 64, "n_mels": 20, "bins": "linear",
        "phase_sensitive": True}
CLIPS = {"a1": (8000, 1, 1.0), "b2": (8000, 1, 0.9), "c3": (8000, 1, 0.8), "d4": (8000, 2, 0.8)}


@pytest.fixture(scope="module")
def linear_dump(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lin")
    data = _make_data(root, clips=CLIPS)
    conf = root / "feats.yaml"
    conf.write_text(yaml.safe_dump(CONF))
    dump = root / "dump"
    assert compute_feats.main(["--feat-conf", str(conf), str(data), str(dump)]) == 0
    assert compute_cmvn.main([str(dump)]) == 0
    return root, data, dump


def test_dump_stores_linear_magnitudes_and_phase_projection(linear_dump):
    root, data, dump = linear_dump
    d = FeatureDump(dump)
    fc = FeatureConfig.from_dict(CONF)
    assert fc.n_bins == 65 and fc.input_dim == 40  # log-mel (+ deltas) input, linear targets
    assert (dump / "vocals.psa.scp").is_file()
    fe = Frontend(fc)
    sig = {}
    for name in ("mix", "vocals", "accompaniment"):
        x, sr = sf.read(root / "audio" / f"a1_{name}.wav", dtype="float32", always_2d=True)
        sig[name] = fe.stft(torch.from_numpy(resample(x.T.mean(0, keepdims=True), sr, 8000)))[0].numpy()
    X = sig["mix"]
    mix, src = d.load("a1")
    np.testing.assert_allclose(mix, np.abs(X), rtol=1e-4, atol=1e-6)
    psa = d.load_psa("a1")
    for c, name in enumerate(("vocals", "accompaniment")):
        S = sig[name]
        np.testing.assert_allclose(src[..., c], np.abs(S), rtol=1e-4, atol=1e-6)
        ref = np.abs(S) * np.cos(np.angle(S) - np.angle(X))  # |S_c| cos(theta_c - theta_X)
        np.testing.assert_allclose(psa[..., c], ref, rtol=1e-3, atol=1e-5)
    # mel targets from the linear dump are the mel dump's (mel of linear magnitudes)
    lin = SegmentDataset(d, None, train=False)[0]
    mel = SegmentDataset(d, None, train=False, mask_bins="mel")[0]
    assert lin["mix"].shape[-1] == 65 and mel["mix"].shape[-1] == 20 and mel["psa"].shape[-2:] == (20, 2)
    torch.testing.assert_close(mel["src"], fe.mel(lin["src"].transpose(-1, -2)).transpose(-1, -2))
    torch.testing.assert_close(lin["feats"], mel["feats"])


def test_psa_on_an_old_dump_is_refused_in_one_line(tmp_path, caplog):
    corpus = make_corpus(tmp_path, n_train=2, n_valid=1)  # mel dumps without phase (the old layout)
    caplog.set_level("INFO")
    assert train_main(train_args(corpus, tmp_path / "x", "--epochs", "1", "--mi_loss", "tpsa")) == 1
    assert "re-run stage 2 (compute_feats) with phase_sensitive: true" in caplog.text
    assert train_main(train_args(corpus, tmp_path / "y", "--epochs", "1", "--mask_bins", "linear")) == 1
    assert "with bins: linear in the feature config" in caplog.text


def test_linear_mask_model_trains_and_separates_in_memory_and_streamed(linear_dump, tmp_path):
    from sepkit import Separator
    from sepkit.model_io import load_model_dict

    root, data, dump = linear_dump
    out = tmp_path / "exp"
    args = ["--train-dump", str(dump), "--valid-dump", str(dump), "--outdir", str(out), "--device", "cpu", *TINY,
            "--batch_size", "4", "--epochs", "2", "--mask_bins", "linear", "--alpha", "0.5", "--mi_loss",
            "tpsa_l1", "--dc_loss", "dcw", "--valid_data", str(data)]
    assert train_main(args) == 0
    d = load_model_dict(out)
    assert d["model_conf"]["mask_bins"] == "linear" and d["model_conf"]["n_freq"] == 65
    assert d["train"]["dc_loss"] == "dcw" and d["train"]["mi_loss"] == "tpsa_l1"
    sep = Separator(d, dtype="float32", segment_frames=40, block_frames=16)
    x, sr = sf.read(root / "audio" / "a1_mix.wav", dtype="float32")
    for head in ("mi", "dc"):
        est = sep.separate(x, sr, head=head)
        assert est["vocals"].shape == x.shape and np.isfinite(est["vocals"]).all()
        paths = {s: tmp_path / f"{head}_{s}.wav" for s in sep.sources}
        sep.separate_file(root / "audio" / "a1_mix.wav", paths, head=head, block_seconds=0.3, subtype="FLOAT")
        for s in sep.sources:
            np.testing.assert_allclose(sf.read(paths[s], dtype="float32")[0], est[s], atol=1e-5)
    # MI masks (softmax) on every STFT bin: the estimates sum to the mixture
    est = sep.separate(x, sr, head="mi")
    np.testing.assert_allclose(est["vocals"] + est["accompaniment"], x, atol=1e-4)


def test_mel_mask_model_separates_as_the_paper_path(linear_dump):
    """A model file without mask_bins (every older file) is a mel-mask model: mask -> mel transfer -> iSTFT."""
    from sepkit import Separator
    from sepkit.frontend import CMVN
    from sepkit.model_io import make_model_dict
    from sepkit.nets import build_model

    fc = FeatureConfig(sample_rate=8000, n_fft=128, hop_length=64, n_mels=20)
    conf = {"type": "chimera", "input_dim": 40, "n_freq": 20, "hidden": 8, "layers": 1, "emb_dim": 4,
            "n_sources": 2, "heads": ["mi"]}
    torch.manual_seed(0)
    model = build_model(conf).eval()
    cmvn = CMVN(torch.zeros(40), torch.ones(40))
    d = make_model_dict(model, conf, {k: v for k, v in fc.to_dict().items()
                                      if k in ("sample_rate", "n_fft", "hop_length", "n_mels")},
                        cmvn, ["vocals", "accompaniment"])
    assert "mask_bins" not in d["model_conf"]
    x = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    sep = Separator(d, dtype="float32", segment_frames=1000)
    assert sep.mask_bins == "mel"
    got = sep.separate(x, 8000)
    fe = Frontend(fc)
    with torch.no_grad():
        ana = fe.analyze(torch.from_numpy(x)[None])
        mask = model(ana["feats"])["mask"]  # one segment: the whole signal
        for c, name in enumerate(sep.sources):
            ref = fe.reconstruct(ana["spec"], mask[..., c], len(x))[0].numpy()
            np.testing.assert_allclose(got[name], ref, atol=1e-5)


def test_oracle_linear_bin_rows():
    from sepkit.bin.oracle import oracle_estimates

    rng = np.random.default_rng(1)
    refs = rng.standard_normal((2, 1, 4000)) * 0.1
    mix = refs.sum(0)
    fe = Frontend(FeatureConfig(sample_rate=8000, n_fft=128, hop_length=64, n_mels=20))
    est = oracle_estimates(mix, refs, 8000, fe, ["ibm_lin", "wlm_lin", "ibm"])
    for head in ("ibm_lin", "wlm_lin"):
        np.testing.assert_allclose(est[head].sum(0), mix, atol=1e-4)  # masks sum to one on every bin
    err = {h: np.square(est[h] - refs).sum() for h in est}
    assert err["ibm_lin"] < err["ibm"]  # the linear-bin ceiling is above the mel one on noise


def test_logmag_input_and_bad_feature_settings(tmp_path):
    from sepkit.frontend import LOG_EPS, deltas

    fc = FeatureConfig(sample_rate=8000, n_fft=128, hop_length=64, n_mels=20, bins="linear", input="logmag")
    assert fc.input_dim == 130 and fc.check() is None
    fe = Frontend(fc)
    mag = torch.rand(1, 7, 65)
    ref = torch.log(mag + LOG_EPS)
    torch.testing.assert_close(fe.input_features(mag, "linear"), torch.cat([ref, deltas(ref)], -1))
    with pytest.raises(ValueError, match="logmag needs linear"):
        fe.input_features(mag[..., :20], "mel")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"input": "logmag"}))
    with pytest.raises(SystemExit, match="bad.yaml: input: logmag needs bins: linear"):
        compute_feats.load_feat_conf(bad)
    bad.write_text(yaml.safe_dump({"bins": 3}))
    with pytest.raises(SystemExit, match="bins must be a word"):
        compute_feats.load_feat_conf(bad)
