"""Naming the DC head's k-means clusters (issue 20, item 1): by the MI head of a Chimera model ("mi", best
magnitude-weighted overlap, one source per cluster), by the model file's dc_centers ("centers"), or the paper's
< 200 Hz rule ("lowfreq"); the same naming on every DC path of :class:`Separator`; and the scorers' report of how
often a separation's given order is the best permutation."""
import csv
import itertools
import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from sepkit import Separator
from sepkit.audio import write_audio
from sepkit.bin import score, score_v4, separate as separate_bin, separate_data
from sepkit.cluster import name_clusters_by_anchors, name_clusters_by_masks
from sepkit.data.datadir import DataDir
from sepkit.frontend import CMVN, FeatureConfig
from sepkit.model_io import make_model_dict, save_model_dict
from sepkit.nets import ChimeraNet
from sepkit.separate import SeparationError

N_MELS, EMB = 24, 4


def model_dict(sources=("vocals", "accompaniment"), heads=("dc", "mi"), centers=None, seed=0, **body):
    """A random tiny network (hidden 8, 1 layer, D = 4) of ``len(sources)`` sources as a model-file dict; ``body``:
    more model_conf keys (e.g. a causal body)."""
    torch.manual_seed(seed)
    fc = FeatureConfig(n_mels=N_MELS)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": N_MELS, "hidden": 8, "layers": 1,
            "emb_dim": EMB, "n_sources": len(sources), "heads": list(heads), **body}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"})
    cmvn = CMVN(torch.randn(fc.input_dim) * 0.1 - 3.0, torch.rand(fc.input_dim) + 0.5)
    d = make_model_dict(net, conf, fc.to_dict(), cmvn, sources, {"segment_frames": 20})
    if centers is not None:
        d["dc_centers"] = [list(map(float, c)) for c in centers]
    return d


# ---------------------------------------------------------------------------------------------- the assignment
def _from_overlap(overlap):
    """Labels, masks and weights whose overlap matrix ``O[c, s]`` is ``overlap``: one bin per (c, s)."""
    k = overlap.shape[0]
    labels = torch.arange(k).repeat_interleave(k)
    masks = torch.eye(k).repeat(k, 1)
    return labels, masks, torch.as_tensor(overlap, dtype=torch.float64).reshape(-1)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_masks_naming_is_the_assignment_of_largest_overlap(k):
    """On random overlap matrices the order is the permutation of largest total overlap (brute force)."""
    rng = np.random.default_rng(k)
    for _ in range(20):
        overlap = rng.random((k, k))
        best = max(itertools.permutations(range(k)), key=lambda p: sum(overlap[p[s], s] for s in range(k)))
        assert name_clusters_by_masks(*_from_overlap(overlap)) == list(best)


def test_masks_naming_one_source_per_cluster_not_greedy():
    """Cluster 0 overlaps source 0 most (10) but the best assignment gives it source 1 (9 + 8 > 10 + 0)."""
    overlap = np.array([[10.0, 9.0, 0.0, 0.0], [8.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    assert name_clusters_by_masks(*_from_overlap(overlap)) == [1, 0, 2, 3]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_masks_naming_recovers_a_permutation(k):
    """Bins of source s in cluster perm[s], soft MI masks peaked at s: the order is perm."""
    rng = np.random.default_rng(10 + k)
    for perm in itertools.islice(itertools.permutations(range(k)), 6):
        src = torch.as_tensor(rng.integers(0, k, 500))
        labels = torch.as_tensor(perm)[src]
        masks = torch.softmax(torch.nn.functional.one_hot(src, k) * 2.0 + torch.randn(500, k) * 0.5, -1)
        assert name_clusters_by_masks(labels, masks, torch.rand(500) + 0.1) == list(perm)


def test_masks_naming_weights_bins_by_magnitude():
    """Many quiet bins say swap, few loud ones say keep: the magnitude weighting keeps."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    masks = torch.tensor([[1.0, 0.0], [0, 1], [0, 1], [0, 1], [0, 1], [1, 0], [1, 0], [1, 0]])
    loud = torch.tensor([1.0, 0.01, 0.01, 0.01, 1.0, 0.01, 0.01, 0.01])
    assert name_clusters_by_masks(labels, masks, loud) == [0, 1]
    assert name_clusters_by_masks(labels, masks) == [1, 0]  # counted, not weighted: the other answer


@pytest.mark.parametrize("k", [2, 3, 4])
def test_anchors_naming_recovers_a_permutation(k):
    anchors = torch.nn.functional.normalize(torch.randn(k, 6, generator=torch.Generator().manual_seed(k)), dim=-1)
    for perm in itertools.islice(itertools.permutations(range(k)), 6):
        centers = torch.empty(k, 6)
        centers[list(perm)] = anchors * 0.6 + 0.05 * torch.randn(k, 6)  # centre perm[s] is near anchor s
        assert name_clusters_by_anchors(centers, anchors) == list(perm)


# ---------------------------------------------------------------------------------------------- through Separator
class _BandStub(torch.nn.Module):
    """A 'Chimera network' of known outputs: mel bin f is in band ``band[f]``; its embedding is the unit vector
    ``emb_axis[band]`` and its MI mask favours source ``mi_source[band]`` (``mi_value[band]``, default 0.9, the rest
    shared)."""

    def __init__(self, band, emb_axis, mi_source, n_sources, mi_value=None):
        super().__init__()
        self.heads, self.n_freq, self.emb_dim, self.n_sources = ("mi", "dc"), len(band), EMB, n_sources
        self.register_buffer("e", torch.nn.functional.one_hot(torch.as_tensor(emb_axis)[band], EMB).float())
        value = torch.as_tensor(mi_value or [0.9] * len(emb_axis))[band]
        m = (1 - value[:, None]) / max(1, n_sources - 1) * torch.ones(len(band), n_sources)
        m[torch.arange(len(band)), torch.as_tensor(mi_source)[band]] = value
        self.register_buffer("m", m)

    def forward(self, feats, lengths=None, heads=None):
        B, T, _ = feats.shape
        heads = self.heads if heads is None else heads
        out = {}
        if "dc" in heads:
            out["embedding"] = self.e.expand(B, T, -1, -1).reshape(B, T * self.n_freq, EMB)
        if "mi" in heads:
            out["mask"] = self.m.expand(B, T, -1, -1)
        return out


TONES = (110.0, 1000.0, 5000.0)  # one per band of CUTS
CUTS = (400.0, 2500.0)


def _stub_separator(sources, emb_axis, mi_source, centers=None, cuts=CUTS, mi_value=None, **kw):
    s = Separator(model_dict(sources, centers=centers), dtype="float32", **kw)
    band = torch.as_tensor(np.searchsorted(cuts, s.mel_freqs))
    s.model = _BandStub(band, emb_axis, mi_source, len(sources), mi_value)
    return s


def _tones(n=32000, sr=16000):
    t = np.arange(n) / sr
    return [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in TONES]


def _assert_named(est, expect):
    """``expect``: {source: the tone it must hold}; every estimate within 5 % of its tone's energy."""
    core = slice(2000, -2000)
    for name, tone in expect.items():
        err = np.sum((np.asarray(est[name]) - tone)[core] ** 2)
        assert err < 0.05 * np.sum(tone[core] ** 2), name


def _through_file(sep, wav, tmp_path, tag):
    """:meth:`Separator.separate_file` of ``wav`` -> ``{source: samples}``."""
    inp = tmp_path / f"{tag}_in.wav"
    sf.write(inp, wav, 16000, subtype="FLOAT")
    outs = {s: tmp_path / f"{tag}_{s}.wav" for s in sep.sources}
    sep.separate_file(inp, outs, head="dc", overwrite=True)
    return {s: sf.read(p, dtype="float32")[0] for s, p in outs.items()}


def test_mi_naming_right_where_centers_naming_is_wrong(tmp_path):
    """Low band (110 Hz) in the embedding axis 0, high band (1 and 5 kHz) in axis 1; the MI head says low =
    accompaniment; the model file's dc_centers are stale (vocals' anchor on axis 0). "mi" (the default) names the
    clusters right on every path, "centers" names them the other way."""
    sources = ("vocals", "accompaniment")
    centers = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]  # vocals' anchor = the low band's embedding: wrong
    low, mid, high = _tones()
    wav = low + mid + high
    right = {"accompaniment": low, "vocals": mid + high}
    for kw in ({}, {"dc_memory_mb": 0.01}):  # embeddings held (one pass) / the network twice
        mi = _stub_separator(sources, [0, 1, 1], [1, 0, 0], centers, **kw)
        assert mi.dc_naming == "mi"
        _assert_named(mi.separate(wav, 16000, head="dc"), right)
        _assert_named(_through_file(mi, wav, tmp_path, "mi"), right)
        by_centers = _stub_separator(sources, [0, 1, 1], [1, 0, 0], centers, dc_naming="centers", **kw)
        _assert_named(by_centers.separate(wav, 16000, head="dc"), {"vocals": low, "accompaniment": mid + high})
        _assert_named(_through_file(by_centers, wav, tmp_path, "c"), {"vocals": low, "accompaniment": mid + high})


@pytest.mark.parametrize("perm", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_three_sources_named_by_mi_on_every_path(tmp_path, perm):
    """3 sources, clusters in k-means' arbitrary order: band b's tone goes to source perm[b] on the in-memory,
    streamed one-pass and streamed three-pass paths (dc_centers right too: "centers" agrees)."""
    sources = ("bass", "keys", "hats")
    axes = [2, 0, 3]
    centers = np.zeros((3, EMB))
    for b in range(3):
        centers[perm[b], axes[b]] = 1.0
    tones = _tones()
    wav = sum(tones)
    expect = {sources[perm[b]]: tones[b] for b in range(3)}
    for naming in ("mi", "centers"):
        for kw in ({}, {"dc_memory_mb": 0.01}):
            s = _stub_separator(sources, axes, list(perm), centers, dc_naming=naming, **kw)
            _assert_named(s.separate(wav, 16000, head="dc"), expect)
            _assert_named(_through_file(s, wav, tmp_path, f"{naming}{len(kw)}"), expect)


def test_mi_naming_weighs_bins_by_magnitude_on_every_path(tmp_path):
    """A loud 110 Hz tone in the few mel bins below 300 Hz (cluster A), quiet noise in the many above (cluster B);
    the MI head says A: 0.9 lead, B: 0.6 lead. Weighted by magnitude, A is the lead (0.9 wA + 0.4 wB > 0.1 wA + 0.6 wB);
    counted bin by bin (B has > 4x A's bins) the noise would be. Every path weighs."""
    n = 32000
    tone = (0.5 * np.sin(2 * np.pi * 110.0 * np.arange(n) / 16000)).astype(np.float32)
    hiss = (0.1 * np.random.default_rng(1).standard_normal(n)).astype(np.float32)  # ~33 dB below the tone: not silent
    for kw in ({}, {"dc_memory_mb": 0.01}):
        s = _stub_separator(("lead", "rest"), [0, 1], [0, 0], cuts=(300.0,), mi_value=[0.9, 0.6], **kw)
        assert int((s.mel_freqs < 300).sum()) * 4 < int((s.mel_freqs >= 300).sum())
        _assert_named(s.separate(tone + hiss, 16000, head="dc"), {"lead": tone})
        _assert_named(_through_file(s, tone + hiss, tmp_path, f"w{len(kw)}"), {"lead": tone})


def test_tiny_chimera_same_naming_on_every_path(tmp_path):
    """A random tiny Chimera model: the MI naming gives the same outputs in memory and streamed (held / 3 passes)."""
    d = model_dict()
    wav = (np.random.default_rng(3).standard_normal((24000, 2)) * 0.1).astype(np.float32)
    ref = Separator(d, dtype="float32").separate(wav.T, 16000, head="dc")
    for kw in ({}, {"dc_memory_mb": 0.01}):
        s = Separator(d, dtype="float32", **kw)
        assert s.dc_naming == "mi" and s.dc_fit_head == "dc+mi"
        np.testing.assert_array_equal(s.separate(wav.T, 16000, head="dc")["vocals"], ref["vocals"])
        got = _through_file(s, wav, tmp_path, f"t{len(kw)}")
        for name in s.sources:
            np.testing.assert_allclose(got[name].T, ref[name], atol=2e-4)


# ---------------------------------------------------------------------------------------------- the option
def test_defaults_and_one_line_errors():
    anchors = [[1.0, 0, 0, 0], [0, 1.0, 0, 0]]
    assert Separator(model_dict()).dc_naming == "mi"
    assert Separator(model_dict(heads=("dc",), centers=anchors)).dc_naming == "centers"
    assert Separator(model_dict(heads=("dc",))).dc_naming == "lowfreq"
    assert Separator(model_dict(heads=("mi",))).dc_naming is None
    bad = [({"heads": ("dc",), "centers": anchors}, "mi", "has none (heads: dc)"),
           ({}, "centers", "has none; use 'lowfreq'"),
           ({}, "kmeans", "unknown dc_naming 'kmeans'"),
           ({"sources": ("bass", "keys")}, "lowfreq", "vocals and accompaniment only")]
    for kw, naming, words in bad:
        with pytest.raises(SeparationError, match=re.escape(words)) as info:
            Separator(model_dict(**kw), dc_naming=naming)
        assert "\n" not in str(info.value)


def test_causal_models_keep_their_persistent_centres():
    """A causal model's DC clusters are its persistent centres (cluster i = source i): no naming rule, and an
    explicit one is refused in one line."""
    d = model_dict(centers=[[1.0, 0, 0, 0], [0, 1.0, 0, 0]], body="lstm", lookahead=0)
    s = Separator(d, dtype="float32")
    assert s.causal and s.dc_naming is None
    est = s.separate((np.random.default_rng(0).standard_normal(8000) * 0.1).astype(np.float32), 16000, head="dc")
    assert set(est) == {"vocals", "accompaniment"}
    with pytest.raises(SeparationError, match="causal model's DC clusters are its persistent centres") as info:
        Separator(d, dc_naming="mi")
    assert "\n" not in str(info.value)


def test_cli_dc_only_model_asked_for_mi(tmp_path, capsys):
    save_model_dict(tmp_path / "exp" / "model.pt", model_dict(heads=("dc",)))
    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros(8000, np.float32), 16000)
    rc = separate_bin.main(["--no-progress", "--quiet", "--model", str(tmp_path / "exp"), "--outdir",
                            str(tmp_path / "out"), "--head", "dc", "--dc-naming", "mi", str(wav)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "dc_naming 'mi'" in err[0] and not (tmp_path / "out").exists()
    data = tmp_path / "data"
    DataDir.create(data, {"u": str(wav)}, {"vocals": {"u": str(wav)}, "accompaniment": {"u": str(wav)}})
    with pytest.raises(SystemExit, match=r"dc_naming 'mi'.*has none \(heads: dc\)"):
        separate_data.main(["--model", str(tmp_path / "exp"), "--head", "dc", "--dc-naming", "mi", str(data),
                            str(tmp_path / "sep")])


# ---------------------------------------------------------------------------------------------- the scorers
def test_scorers_report_how_often_the_given_order_is_best(tmp_path):
    """3 files, estimates = references + noise; file b's estimates swapped: the fraction is 2/3 in result.json
    and result_v4.json, and the per-file flag says which."""
    sr, n = 8000, 16000
    rng = np.random.default_rng(0)
    wav, refs, ests = {}, {"lead": {}, "rest": {}}, {"lead": {}, "rest": {}}
    for utt in ("a", "b", "c"):
        sig = {s: (0.2 * rng.standard_normal((2, n))).astype(np.float32) for s in refs}
        est = {s: sig[s] + (0.02 * rng.standard_normal((2, n))).astype(np.float32) for s in refs}
        if utt == "b":
            est = {"lead": est["rest"], "rest": est["lead"]}
        wav[utt] = str(tmp_path / "wav" / f"{utt}.wav")
        write_audio(wav[utt], sig["lead"] + sig["rest"], sr)
        for s in refs:
            refs[s][utt] = str(tmp_path / "wav" / f"{utt}_{s}.wav")
            write_audio(refs[s][utt], sig[s], sr)
            ests[s][utt] = str(tmp_path / "est" / f"{utt}_{s}.wav")
            write_audio(ests[s][utt], est[s], sr)
    DataDir.create(tmp_path / "data", wav, refs)
    DataDir.create(tmp_path / "sep", wav, ests)
    out = tmp_path / "score"
    assert score.main(["--bss", "false", str(tmp_path / "data"), str(tmp_path / "sep"), str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["order_is_best_fraction"] == pytest.approx(2 / 3, abs=1e-4)
    assert {"lead", "rest", "n_files", "seconds"} <= set(result)  # the old keys stay
    rows = list(csv.DictReader((out / "per_utt.csv").open()))
    assert [r["order_is_best"] for r in rows] == ["1", "0", "1"] and rows[1]["perm"] == "1 0"
    assert score_v4.main([str(tmp_path / "data"), str(tmp_path / "sep"), str(out)]) == 0
    v4 = json.loads((out / "result_v4.json").read_text())
    assert v4["order_is_best_fraction"] == pytest.approx(2 / 3, abs=1e-4) and v4["n_tracks"] == 3
    assert [r["order_is_best"] for r in csv.DictReader((out / "per_track_v4.csv").open())] == ["1", "0", "1"]
