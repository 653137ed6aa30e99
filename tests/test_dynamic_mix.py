"""Dynamic mixing (sepkit.data.dynamic_mix): examples drawn on the fly from stems of different tracks.

Tiny synthetic tracks (3 stereo stems at 8 kHz, written with soundfile); the mixture's definition is
checked on the waveforms against the files read independently, the features against Frontend's.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import FEAT_CONF, make_corpus, train_args  # noqa: E402

from sepkit.data.dataset import collate  # noqa: E402
from sepkit.data.datadir import DataDir  # noqa: E402
from sepkit.data.dynamic_mix import DynamicMixDataset, DynamicMixError  # noqa: E402
from sepkit.frontend import CMVN, FeatureConfig, Frontend  # noqa: E402
from sepkit.train.distributed import GlobalBatchSampler  # noqa: E402

SOURCES = ["vocals", "drums", "bass"]
RATE = 8000
S = 12


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_tracks(root, n_tracks=5, rate=RATE, silent=None, odd=None):
    """A data dir ``root/data`` of ``n_tracks`` tracks with stereo stems ``SOURCES``; ``silent``: (track,
    source) whose stem is all zeros; ``odd``: (track, source, rate, n_samples) of one stem written otherwise."""
    rng = np.random.default_rng(7)
    wavs, srcs = {}, {s: {} for s in SOURCES}
    for t in range(n_tracks):
        n = int(rate * rng.uniform(0.5, 0.8))
        folder = root / "audio" / f"track{t}"
        folder.mkdir(parents=True)
        total = np.zeros((n, 2), dtype=np.float32)
        for c, s in enumerate(SOURCES):
            x = (rng.normal(0, 0.1 * (c + 1), (n, 2)) * np.array([1.0, 0.3 + 0.2 * c])).astype(np.float32)
            if silent == (t, s):
                x[:] = 0
            sr, m = rate, n
            if odd is not None and odd[:2] == (t, s):
                sr, m = odd[2], odd[3]
                x = rng.normal(0, 0.1, (m, 2)).astype(np.float32)
            sf.write(folder / f"{s}.wav", x, sr, subtype="FLOAT")
            if sr == rate and m == n:
                total += x
            srcs[s][f"track{t}"] = str(folder / f"{s}.wav")
        sf.write(folder / "mixture.wav", total, rate, subtype="FLOAT")
        wavs[f"track{t}"] = str(folder / "mixture.wav")
    return DataDir.create(root / "data", wavs, srcs).path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tracks(tmp_path_factory.mktemp("dm"), silent=(2, "vocals"))


@pytest.fixture(scope="module")
def conf():
    return FeatureConfig.from_dict(FEAT_CONF)


@pytest.fixture(scope="module")
def cmvn(conf):
    g = torch.Generator().manual_seed(0)
    return CMVN(torch.randn(conf.input_dim, generator=g), 1 + torch.rand(conf.input_dim, generator=g))


def dataset(data, conf, cmvn=None, **kw):
    kw = {"examples": 16, "seed": 3, **kw}
    ds = DynamicMixDataset(data, kw.pop("sources", SOURCES), conf, kw.pop("segment_frames", S), kw.pop("examples"),
                           cmvn, **kw)
    ds.set_epoch(1)
    return ds


def read_stem(spec, start, n):
    x, _ = sf.read(spec, dtype="float32", always_2d=True)
    out = np.zeros((n, x.shape[1]), dtype=np.float32)
    part = x[start:start + n]
    out[:len(part)] = part
    return out.T


def test_mixture_is_the_sum_of_the_drawn_scaled_stems(data, conf):
    ds = dataset(data, conf, gain_min=0.3, gain_max=0.9, swap_prob=0.5)
    dd = DataDir(data)
    gains, swaps = [], []
    for i in range(8):
        w = ds.waveforms(i)
        n = ds.num_samples
        assert n == (S - 1 + 2 * ds.margin) * conf.hop_length and w["mix"].shape == (n,)
        expect = []
        for s, (utt, start, gain, swap) in zip(SOURCES, w["plan"]):
            x = read_stem(dd.source(s)[utt], start, n)
            x = x[::-1] if swap else x
            expect.append((x * gain).mean(axis=0))
            gains.append(gain)
            swaps.append(swap)
        np.testing.assert_allclose(w["src"], np.stack(expect), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(w["mix"], np.sum(expect, axis=0), rtol=1e-5, atol=1e-6)
        assert len({p[0] for p in w["plan"]}) == 3  # 5 tracks >= 3 sources: different tracks
        for x, (utt, start, gain, swap), s in zip(w["stems"], w["plan"], SOURCES):  # the swap, before the downmix
            raw = read_stem(dd.source(s)[utt], start, n) * np.float32(gain)
            np.testing.assert_allclose(x, raw[::-1] if swap else raw, rtol=1e-6)
    assert 0.3 <= min(gains) and max(gains) <= 0.9 and max(gains) - min(gains) > 0.2
    assert any(swaps) and not all(swaps)


def test_features_and_targets_are_frontends_on_the_waveform(data, conf, cmvn, tmp_path):
    for phase in (False, True):
        c = FeatureConfig.from_dict({**FEAT_CONF, "phase_sensitive": phase})
        ds = dataset(data, c, cmvn)
        fe, m = Frontend(c), ds.margin
        for i in (0, 5):
            w, item = ds.waveforms(i), ds[i]
            assert set(item) == {"feats", "mix", "src", "length"} | ({"psa"} if phase else set())
            spec = fe.stft(torch.from_numpy(np.concatenate([w["mix"][None], w["src"]])))
            mel = fe.mel(spec.abs())
            torch.testing.assert_close(item["feats"], cmvn(fe.features(mel[:1]))[0, m:m + S], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(item["mix"], mel[0, m:m + S])
            torch.testing.assert_close(item["src"], mel[1:, m:m + S].permute(1, 2, 0))
            if phase:
                x = spec[:1]
                psa = fe.mel(((spec[1:] * x.conj()).real / x.abs().clamp_min(1e-30))[:, m:m + S])
                torch.testing.assert_close(item["psa"], psa.permute(1, 2, 0))
            assert item["length"] == S and item["feats"].shape == (S, c.input_dim)
        batch = collate([ds[0], ds[1]])  # the keys and shapes a dump batch has
        assert batch["src"].shape == (2, S, c.n_mels, 3) and batch["lengths"].tolist() == [S, S]


def test_linear_targets(data, cmvn):
    c = FeatureConfig.from_dict({**FEAT_CONF, "bins": "linear"})
    ds, fe = dataset(data, c, cmvn, mask_bins="linear"), Frontend(c)
    w, item = ds.waveforms(2), ds[2]
    spec = fe.stft(torch.from_numpy(w["src"]))
    torch.testing.assert_close(item["src"], spec.abs()[:, ds.margin:ds.margin + S].permute(1, 2, 0))
    assert item["feats"].shape == (S, c.input_dim)  # logmel input through the mel filters


def test_reproducible_from_seed_and_epoch(data, conf, cmvn):
    a, b = dataset(data, conf, cmvn), dataset(data, conf, cmvn)
    for i in (0, 3):
        assert a.waveforms(i)["plan"] == b.waveforms(i)["plan"]
        torch.testing.assert_close(a[i], b[i], rtol=0, atol=0)
    plan = a.waveforms(0)["plan"]
    b.set_epoch(2)
    assert b.waveforms(0)["plan"] != plan
    assert dataset(data, conf, cmvn, seed=4).waveforms(0)["plan"] != plan
    assert a.waveforms(1)["plan"] != plan


def test_disk_reads_equal_the_cache(data, conf, cmvn):
    cached, disk = dataset(data, conf, cmvn), dataset(data, conf, cmvn, cache_mb=0)
    assert cached.cache is not None and disk.cache is None
    for i in (0, 7):
        torch.testing.assert_close(cached[i], disk[i], rtol=0, atol=0)
    assert dataset(data, conf, cmvn, cache_mb=1e-6).cache is None  # over the bound: no cache


def test_resampled_disk_reads_match_the_resampled_cache(tmp_path, conf):
    data = write_tracks(tmp_path, n_tracks=3, rate=16000)  # files at 16 kHz, model at 8 kHz
    cached, disk = dataset(data, conf), dataset(data, conf, cache_mb=0)
    for i in range(3):
        a, b = cached.waveforms(i), disk.waveforms(i)
        assert a["plan"] == b["plan"]
        err = np.abs(a["src"] - b["src"])[:, 20:-20].max()  # away from the segment's own ends
        assert err < 1e-3 * np.abs(a["src"]).max(), err


def test_independent_of_workers_and_ranks(data, conf, cmvn):
    ds = dataset(data, conf, cmvn, examples=16)

    def batches(rank, world, workers):
        sampler = GlobalBatchSampler(ds, 4, rank, world, seed=5)
        sampler.set_epoch(1)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
        return list(loader)

    one = batches(0, 1, 0)
    assert len(one) == 4
    for a, b in zip(one, batches(0, 1, 2)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, r0, r1 in zip(one, batches(0, 2, 0), batches(1, 2, 2)):
        for k in a:
            torch.testing.assert_close(a[k], torch.cat([r0[k], r1[k]]), rtol=0, atol=0)


def test_silence_rule_and_same_track_draws(data, conf):
    ds = dataset(data, conf, examples=40)  # track2's vocals are all zeros
    vocal_tracks = {ds.waveforms(i)["plan"][0][0] for i in range(40)}
    assert "track2" not in vocal_tracks and len(vocal_tracks) == 4
    for i in range(40):
        assert all(np.sqrt(np.mean(x ** 2)) > 1e-3 for x in ds.waveforms(i)["src"])
    same = dataset(data, conf, same_track_prob=1.0)
    for i in range(6):
        plan = same.waveforms(i)["plan"]
        assert len({(p[0], p[1]) for p in plan}) == 1 and plan[0][0] != "track2"


def test_two_of_three_sources_and_length_follows_segment_frames(data, conf):
    ds = dataset(data, conf, sources=["bass", "vocals"], examples=lambda s: 100 // s)
    assert ds[0]["src"].shape == (S, conf.n_mels, 2) and len(ds) == 100 // S
    ds.set_segment_frames(25)
    assert len(ds) == 4 and ds[0]["mix"].shape == (25, conf.n_mels)


def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path, conf):
    data = write_tracks(tmp_path / "a", n_tracks=2)
    (data / "drums.scp").unlink()
    with pytest.raises(DynamicMixError, match=r"drums\.scp: no such file"):
        dataset(data, conf)
    data = write_tracks(tmp_path / "b", n_tracks=2)
    with pytest.raises(DynamicMixError, match=r"data/sources: no source 'piano'"):
        dataset(data, conf, sources=["vocals", "piano"])
    data = write_tracks(tmp_path / "c", n_tracks=2, odd=(1, "bass", 16000, 9000))
    with pytest.raises(DynamicMixError, match=r"bass\.scp: utterance track1: .*track1/bass\.wav is 16000 Hz") as e:
        dataset(data, conf)
    assert "\n" not in str(e.value)
    data = write_tracks(tmp_path / "d", n_tracks=2, odd=(0, "drums", RATE, 100))
    with pytest.raises(DynamicMixError, match=r"drums\.scp: utterance track0: .*track0/drums\.wav has 100 samples"):
        dataset(data, conf)
    data = write_tracks(tmp_path / "f", n_tracks=2)
    mono = tmp_path / "f" / "mono.wav"
    sf.write(mono, np.zeros(int(RATE * 0.9), dtype=np.float32), RATE)
    table = (data / "drums.scp").read_text().splitlines()
    utt, path = table[0].split(" ", 1)
    table[0] = f'{utt} {{"sum": ["{path}", "{mono}"]}}'
    (data / "drums.scp").write_text("\n".join(table) + "\n")
    with pytest.raises(DynamicMixError, match=r"drums\.scp: utterance track0: cannot sum .*drums\.wav 2 ch, .*mono\.wav 1 ch"):
        dataset(data, conf, cache_mb=0)
    with pytest.raises(DynamicMixError, match="gain_min"):
        dataset(write_tracks(tmp_path / "e", n_tracks=2), conf, gain_min=1.5, gain_max=1.0)


# ------------------------------------------------------------------------------------------------ training

def test_training_epoch_with_dynamic_mix(tmp_path, caplog, capsys):
    from sepkit.bin.compute_feats import write_record
    from sepkit.bin.train import main

    corpus = make_corpus(tmp_path, n_train=4, n_valid=2, seconds=1.0)
    wav = tmp_path / "wav"
    utts = [f"train_{i:03d}" for i in range(4)]
    train = DataDir.create(tmp_path / "data" / "train", {u: str(wav / f"{u}_mix.wav") for u in utts},
                           {s: {u: str(wav / f"{u}_{s}.wav") for u in utts} for s in ("vocals", "accompaniment")}).path
    out = tmp_path / "exp"
    caplog.set_level("INFO")
    assert main(train_args(corpus, out, "--epochs", "1", "--dynamic_mix", "true")) == 1
    assert "no .sepkit_dump); give --dm_data data/<training set>" in caplog.text
    with pytest.raises(SystemExit, match="2"):
        main(train_args(corpus, out, "--dynamic_mix", "true", "--dm_gain_min", "2", "--dm_gain_max", "1"))
    assert "dm_gain_min 2.0 is above dm_gain_max 1.0" in capsys.readouterr().err
    caplog.clear()
    assert main(train_args(corpus, out, "--epochs", "1", "--dynamic_mix", "true", "--dm_data", str(train),
                           "--steps_per_epoch", "3", "--tensorboard", "false")) == 0
    assert (out / "model.pt").is_file()
    text = caplog.text
    assert "dynamic mixing: 4 tracks of" in text and "epoch 1 step 3 (3/3)" in text
    assert "dynamic_mix: true" in (out / "config.yaml").read_text()
    shutil.rmtree(out)
    # without dm_data: the data dir the dump records; epochs of steps_per_epoch x batch_size, else dump segments
    from sepkit.data.dataset import FeatureDump, SegmentDataset
    from sepkit.data.dynamic_mix import from_config
    from sepkit.train.config import parse_config

    write_record(corpus["train_dump"], train, "test")
    dump = FeatureDump(corpus["train_dump"])
    conf = vars(parse_config(train_args(corpus, out, "--dynamic_mix", "true")))
    ds = from_config(conf, dump, 20, None)
    assert ds.data.path == train and len(ds) == len(SegmentDataset(dump, 20)) and ds.dump is dump
    ds.set_segment_frames(10)
    assert len(ds) == len(SegmentDataset(dump, 10))
    assert len(from_config({**conf, "steps_per_epoch": 5}, dump, 20, None)) == 5 * 8
    assert len(from_config({**conf, "dm_examples_per_epoch": 7}, dump, 20, None)) == 7
