"""sepkit.data.dataset: FeatureDump reading, SegmentDataset segments/features, collate."""
import math
import pickle

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from sepkit.data.dataset import DumpError, FeatureDump, SegmentDataset, collate
from sepkit.frontend import CMVN, FeatureConfig, Frontend

F = 16
CONF = FeatureConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=F)
LENGTHS = {"u1": 250, "u2": 100, "u3": 40, "u4": 10, "u5": 301}
SOURCES = ["vocals", "accompaniment"]


def make_dump(root, lengths=LENGTHS, conf=CONF, seed=0):
    """A dump in the layout of sepkit.bin.compute_feats, with random positive mel magnitudes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    mats = {}
    for utt, T in lengths.items():
        src = np.exp(rng.standard_normal((len(SOURCES), T, conf.n_mels))).astype(np.float32)
        mats[utt] = np.concatenate([src.sum(0, keepdims=True), src])
    for c, name in enumerate(["mix"] + SOURCES):
        with kaldiio.WriteHelper(f"ark,scp:{root}/{name}.feats.ark,{root}/{name}.scp") as w:
            for utt in sorted(lengths):
                w(utt, mats[utt][c])
    (root / "utt2num_frames").write_text("".join(f"{u} {lengths[u]}\n" for u in sorted(lengths)))
    (root / "sources").write_text("".join(f"{s}\n" for s in SOURCES))
    (root / "feat_conf.yaml").write_text(yaml.safe_dump(conf.to_dict()))
    return root, mats


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    root, mats = make_dump(tmp_path_factory.mktemp("dump") / "train")
    fe = Frontend(CONF)
    whole = {u: fe.features(torch.from_numpy(m[0])[None])[0] for u, m in mats.items()}
    stats = None
    for f in whole.values():
        stats = CMVN.accumulate(stats, f.numpy())
    return FeatureDump(root), mats, whole, CMVN.from_stats(stats)


def test_dump_reading_equals_kaldiio(dump):
    d, mats, _, _ = dump
    assert d.utts == sorted(LENGTHS) and d.sources == SOURCES and d.feat_conf == CONF
    assert d.num_frames == LENGTHS
    for c, name in enumerate(["mix"] + SOURCES):
        ref = kaldiio.load_scp(str(d.path / f"{name}.scp"))
        for utt in d.utts:
            np.testing.assert_array_equal(d.read(utt, c), ref[utt])
            np.testing.assert_array_equal(d.read(utt, c, 5, 9), ref[utt][5:9])
    mix, src = d.load("u1")
    assert mix.shape == (250, F) and src.shape == (250, F, 2) and src.dtype == np.float32
    np.testing.assert_array_equal(src, np.moveaxis(mats["u1"][1:], 0, -1))
    assert isinstance(d.matrix("u1"), np.ndarray) and not d.matrix("u1").flags.owndata  # a view of the map
    clone = pickle.loads(pickle.dumps(d))  # as sent to spawned workers: re-maps lazily
    assert clone._maps == {} and np.array_equal(clone.read("u5", 2), mats["u5"][2])


def test_dump_errors(tmp_path):
    with pytest.raises(DumpError, match="no mix.scp"):
        FeatureDump(tmp_path)
    root, _ = make_dump(tmp_path / "d", lengths={"a": 20, "b": 30})
    (root / "utt2num_frames").write_text("a 20\nb 31\n")
    with pytest.raises(DumpError, match=r"mix\.feats\.ark: utterance b is 30 x 16, expected 31 frames"):
        FeatureDump(root).read("b")
    (root / "vocals.scp").write_text((root / "vocals.scp").read_text().splitlines()[0] + "\n")
    with pytest.raises(DumpError, match=r"vocals\.scp: utterances differ from mix\.scp \(e\.g\. b\)"):
        FeatureDump(root)


def test_train_segments(dump):
    d = dump[0]
    ds = SegmentDataset(d, segment_frames=100, train=True, seed=0)
    # u4 (10 < 100 // 4 frames) is dropped; the others give ceil(T / 100) segments
    assert len(ds) == 3 + 1 + 1 + 4
    seg = [ds.segment(i) for i in range(len(ds))]
    assert [s[0] for s in seg] == ["u1"] * 3 + ["u2", "u3"] + ["u5"] * 4
    for utt, start, n in seg:
        T = LENGTHS[utt]
        assert n == min(T, 100) and 0 <= start <= max(T - 100, 0)
    starts = [s[1] for s in seg if s[0] == "u5"]  # stratified: k-th start in the k-th quarter of [0, 201]
    assert all(k * 202 / 4 <= st < (k + 1) * 202 / 4 for k, st in enumerate(starts))
    assert len(SegmentDataset(d, 100, train=True, min_frames=1)) == 10


def test_valid_and_whole_segments(dump):
    d = dump[0]
    ds = SegmentDataset(d, segment_frames=100, train=False)
    seg = [ds.segment(i) for i in range(len(ds))]
    assert len(ds) == sum(math.ceil(T / 100) for T in LENGTHS.values())
    assert [s for s in seg if s[0] == "u1"] == [("u1", 0, 100), ("u1", 100, 100), ("u1", 200, 50)]
    assert ("u4", 0, 10) in seg and sum(s[2] for s in seg) == sum(LENGTHS.values())
    ds.set_epoch(5)
    assert [ds.segment(i) for i in range(len(ds))] == seg  # no randomness in validation
    whole = SegmentDataset(d, segment_frames=None, train=True)
    assert [whole.segment(i) for i in range(len(whole))] == [(u, 0, LENGTHS[u]) for u in sorted(LENGTHS)]
    ds.set_segment_frames(None)  # curriculum: lengths may change between epochs
    assert len(ds) == 5 and ds.segment_frames is None
    ds.set_segment_frames(300)
    assert len(ds) == 6
    with pytest.raises(ValueError, match="CMVN has 3 dimensions, the network input of feat_conf.yaml has 32"):
        SegmentDataset(d, 100, cmvn=CMVN(np.zeros(3), np.ones(3)))


def test_determinism_per_epoch(dump):
    d = dump[0]
    a, b = SegmentDataset(d, 64, seed=1), SegmentDataset(d, 64, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert np.array_equal(a.segments, b.segments)
    for i in range(len(a)):
        ia, ib = a[i], b[i]
        assert all(torch.equal(ia[k], ib[k]) for k in ("feats", "mix", "src")) and ia["length"] == ib["length"]
    e3 = a.segments.copy()
    a.set_epoch(4)
    assert len(a) == len(e3) and not np.array_equal(a.segments, e3)
    a.set_epoch(3)
    assert np.array_equal(a.segments, e3)
    assert not np.array_equal(SegmentDataset(d, 64, seed=2).segments, SegmentDataset(d, 64, seed=1).segments)


def test_segment_features_equal_whole_utterance(dump):
    d, mats, whole, cmvn = dump
    fe = Frontend(CONF)
    for train, S in ((True, 37), (False, 37), (True, 100), (False, None)):
        ds = SegmentDataset(d, S, cmvn=cmvn, train=train, seed=4)
        for i in range(len(ds)):
            utt, start, n = ds.segment(i)
            item = ds[i]
            assert item["feats"].shape == (n, 2 * F) and item["feats"].dtype == torch.float32
            torch.testing.assert_close(item["feats"], cmvn(whole[utt][start:start + n]), rtol=0, atol=1e-6)
            assert np.array_equal(item["mix"].numpy(), mats[utt][0, start:start + n])
            assert np.array_equal(item["src"].numpy(), np.moveaxis(mats[utt][1:, start:start + n], 0, -1))
    # without the context frames, deltas at inner segment edges would differ: the check above is not vacuous
    bare = fe.features(torch.from_numpy(mats["u1"][0, 100:137])[None])[0]
    assert not torch.allclose(bare[:2], whole["u1"][100:102], atol=1e-3)


def test_collate_pads(dump):
    d = dump[0]
    ds = SegmentDataset(d, segment_frames=100, train=False)
    items = [ds[i] for i in range(len(ds)) if ds.segment(i)[0] in ("u1", "u4")]  # lengths 100, 100, 50, 10
    batch = collate(items)
    assert batch["lengths"].tolist() == [100, 100, 50, 10] and batch["lengths"].dtype == torch.long
    assert batch["feats"].shape == (4, 100, 2 * F) and batch["mix"].shape == (4, 100, F)
    assert batch["src"].shape == (4, 100, F, 2)
    for b, it in enumerate(items):
        n = it["length"]
        for k in ("feats", "mix", "src"):
            assert torch.equal(batch[k][b, :n], it[k]) and not batch[k][b, n:].any()


def test_dataloader_workers_follow_epoch(dump):
    d = dump[0]
    ds = SegmentDataset(d, 50, train=True, seed=0)
    ref = SegmentDataset(d, 50, train=True, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate,
                                         persistent_workers=True)
    for epoch, S in ((0, 50), (1, 50), (2, 80)):
        ds.set_epoch(epoch)
        ds.set_segment_frames(S)
        ref.set_epoch(epoch)
        ref.set_segment_frames(S)
        got = torch.cat([b["mix"].flatten(1)[:, :F] for b in loader])  # first frame of each item
        want = torch.stack([ref[i]["mix"][0] for i in range(len(ref))])
        assert torch.equal(got, want)
    # DistributedSampler over len(dataset): ranks partition the indexes
    seen = []
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(1)
        seen += list(sampler)
    assert set(seen) == set(range(len(ds))) and len(seen) == 2 * math.ceil(len(ds) / 2)
