"""Online separation (sepkit.online) with a causal model equals the offline path, whatever the blocks.

A tiny random-weight Chimera network with the causal body (``body: lstm``), a real CMVN (statistics of
the features of synthetic songs) and DC anchors computed on synthetic sources; blocks of random sizes
from 1 sample to seconds, mono and stereo, at the model's rate and at others, both heads.
"""
import numpy as np
import pytest
import soxr
import torch

from sepkit import Separator
from sepkit.cluster import anchors_from_sums, source_anchor_sums
from sepkit.errors import SeparationError
from sepkit.frontend import CMVN, FeatureConfig, Frontend
from sepkit.model_io import make_model_dict
from sepkit.nets import ChimeraNet
from sepkit.online import resampler_lag

SR, N_MELS = 16000, 20


def synthetic_sources(seconds, seed=0, sr=SR):
    """A 'vocal' (a gliding harmonic tone that comes and goes) and an 'accompaniment' (bass + noise bursts)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 330 * 2 ** (0.5 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voc = sum(np.sin(k * phase) / k for k in range(1, 6)) * (np.sin(2 * np.pi * 0.7 * t) > -0.3)
    acc = 0.6 * np.sin(2 * np.pi * 55 * t) + rng.standard_normal(t.size) * (np.sin(2 * np.pi * 2 * t) > 0.5)
    return (0.1 * voc).astype(np.float32), (0.1 * acc).astype(np.float32)


def causal_model_dict(lookahead=2, use_delta=False, heads=("dc", "mi"), seed=0):
    """A causal tiny Chimera (2 x 8 LSTM, D = 4) with a real CMVN and dc_centers from synthetic songs."""
    torch.manual_seed(seed)
    fc = FeatureConfig(n_mels=N_MELS, use_delta=use_delta)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": N_MELS, "hidden": 8, "layers": 2, "emb_dim": 4,
            "heads": list(heads), "body": "lstm", "lookahead": lookahead}
    net = ChimeraNet(**{k: v for k, v in conf.items() if k != "type"}).eval()
    fe = Frontend(fc)
    stats, sums = None, None
    for song in range(3):
        voc, acc = synthetic_sources(4, seed=10 + song)
        src = fe.stft(torch.from_numpy(np.stack([voc, acc]))).abs()  # (2, T, K)
        mix = fe.stft(torch.from_numpy(voc + acc)[None]).abs()
        feats = fe.features(fe.mel(mix))[0]
        stats = CMVN.accumulate(stats, feats.numpy())
        if "dc" in heads:
            cmvn = CMVN.from_stats(stats)
            with torch.no_grad():
                emb = net(cmvn(feats)[None], heads=("dc",))["embedding"]
            part = source_anchor_sums(emb, fe.mel(mix), fe.mel(src).permute(1, 2, 0)[None])
            sums = part if sums is None else sums + part
    d = make_model_dict(net, conf, fc.to_dict(), CMVN.from_stats(stats), ("vocals", "accompaniment"),
                        {"segment_frames": 20})
    if sums is not None:
        d["dc_centers"] = anchors_from_sums(sums)
    return d


@pytest.fixture(scope="module")
def model():
    return causal_model_dict()


def song(seconds, channels, sr, seed=0):
    """A synthetic mix whose first 0.3 s are 50 dB quieter (the DC rule's running peak grows)."""
    voc, acc = synthetic_sources(seconds, seed, sr)
    mix = np.stack([voc + acc, 0.5 * voc + acc][:channels])
    mix[:, :int(0.3 * sr)] *= 10 ** (-50 / 20)
    return mix if channels > 1 else mix[0]


def random_blocks(n, sr, rng):
    """Sizes covering 1 sample to 2 s: a run of tiny blocks, then sizes log-uniform in [1, 2 s]."""
    sizes = list(rng.integers(1, 40, 150))
    while sum(sizes) < n:
        sizes.append(int(np.exp(rng.uniform(0, np.log(2 * sr)))))
    return sizes


def run_online(live, wav, sizes):
    """Feed ``wav`` in blocks of ``sizes``; the outputs of every call concatenated, per source."""
    outs, i = [], 0
    for n in sizes:
        if i >= wav.shape[-1]:
            break
        out = live.process(wav[..., i:i + n])
        assert all(v.shape == wav[..., i:i + n].shape for v in out.values())  # as many samples out as in
        outs.append(out)
        i += n
    outs.append(live.flush())
    return {s: np.concatenate([o[s] for o in outs], -1) for s in outs[0]}


def assert_delayed_offline(got, ref, delay):
    for s in ref:
        assert got[s].shape[-1] == ref[s].shape[-1] + delay
        assert not got[s][..., :delay].any()
        np.testing.assert_allclose(got[s][..., delay:], ref[s], rtol=0, atol=1e-5, err_msg=s)


@pytest.mark.parametrize("sr,channels,head,kw", [
    (SR, 1, "mi", {}),
    (SR, 2, "dc", {"dc_time_constant": 0.05}),  # fast-moving centres: every frame's update shows
    (22050, 2, "mi", {"residual": True}),
    (44100, 1, "dc", {"dc_time_constant": 0.2}),
    (8000, 2, "mi", {"block_frames": 7}),  # engine blocks of 7 frames: every step cut mid-way
])
def test_random_blocks_equal_offline(model, sr, channels, head, kw):
    sep = Separator(model, dtype="float32", band="model", **kw)
    wav = song(3.0, channels, sr, seed=sr)
    ref = sep.separate(wav, sr, head=head)
    rng = np.random.default_rng(sr + channels)
    live = sep.online(sr, channels, head)
    got = run_online(live, wav, random_blocks(wav.shape[-1], sr, rng))
    assert_delayed_offline(got, ref, live.latency_samples)
    assert len(live.block_seconds) > 150 and live.rtf > 0
    if head == "dc":  # both clusters used, and the centres moved away from the anchors
        assert all(0.02 < np.abs(ref[s]).mean() / np.abs(wav).mean() for s in ref)
        assert float((live.masker.centers.centers - sep.dc_centers).abs().max()) > 1e-3


@pytest.mark.parametrize("use_delta,lookahead", [(True, 0), (False, 3)])
def test_latency_is_tight_and_counts_lookahead(use_delta, lookahead):
    """At the model's rate the delay is n_fft - 1 + (lookahead + 2 if deltas) * hop: one sample less and some
    output sample is not ready when due (single-sample blocks visit every sample)."""
    sep = Separator(causal_model_dict(lookahead, use_delta, heads=("mi",)), dtype="float32")
    live = sep.online(SR, 1)
    assert live.latency_samples == 512 - 1 + (lookahead + 2 * use_delta) * 128
    assert live.latency_seconds == live.latency_samples / SR
    wav = song(0.2, 1, SR)
    ref = sep.separate(wav, SR)
    assert_delayed_offline(run_online(live, wav, [1] * wav.size), ref, live.latency_samples)
    short = sep.online(SR, 1)
    short.latency_samples -= 1
    with pytest.raises(RuntimeError, match="latency .* too small"):
        run_online(short, wav, [1] * wav.size)


def test_state_carry_is_what_makes_it_equal(model, monkeypatch):
    """The comparison can fail: an LSTM state reset at every block breaks the equality."""
    from sepkit.engine import CausalMasks

    sep = Separator(model, dtype="float32", band="model")
    wav = song(1.0, 1, SR)
    ref = sep.separate(wav, SR)
    real = CausalMasks._run

    def forgetful(self, feats):
        self.state = self.sep.model.encoder.init_state(1, self.sep.device)
        return real(self, feats)

    monkeypatch.setattr(CausalMasks, "_run", forgetful)
    live = sep.online(SR, 1)
    got = run_online(live, wav, [4000] * 5)
    D = live.latency_samples
    assert max(np.abs(got[s][D:] - ref[s]).max() for s in ref) > 1e-3


def test_soxr_output_count_depends_only_on_input_count():
    """What resampler_lag relies on: the streamed output count after n inputs, however they were cut."""
    rng = np.random.default_rng(0)
    for orig, target in [(44100, 16000), (16000, 22050)]:
        counts = []
        for cut in range(3):
            s = soxr.ResampleStream(orig, target, 1, dtype="float32", quality="soxr_hq")
            n, out, seen = 0, 0, {}
            while n < orig:
                k = int(rng.integers(1, 3000)) if cut else 997
                out += s.resample_chunk(rng.standard_normal(k).astype(np.float32)).shape[0]
                n += k
                seen[n] = out
            counts.append(seen)
        common = set(counts[0]) & set(counts[1]) | set(counts[0]) & set(counts[2]) | set(counts[1]) & set(counts[2])
        for n in common:
            assert len({c[n] for c in counts if n in c}) == 1
        assert 0 < resampler_lag(orig, target) < 0.1 * target


@pytest.mark.parametrize("head", ["mi", "dc"])
def test_streamed_file_of_a_causal_model_equals_in_memory(model, tmp_path, head):
    """sepkit-separate's streamed path runs a causal model over the whole sequence too (engine blocks of 37 frames)."""
    import soundfile as sf

    sep = Separator(model, dtype="float32", band="model", block_frames=37)
    wav = song(2.0, 2, 22050)
    sf.write(tmp_path / "in.wav", wav.T, 22050, subtype="FLOAT")
    outs = {s: tmp_path / f"{s}.wav" for s in sep.sources}
    sep.separate_file(tmp_path / "in.wav", outs, head=head, block_seconds=0.3, subtype="FLOAT")
    ref = sep.separate(wav, 22050, head=head)
    for s, p in outs.items():
        np.testing.assert_allclose(sf.read(p, dtype="float32", always_2d=True)[0].T, ref[s], rtol=0, atol=1e-5)


def test_bad_blocks_are_refused_and_leave_the_state_alone(model):
    sep = Separator(model, dtype="float32", band="model")
    wav = song(1.0, 2, 22050)
    sizes = [300, 1, 4000, 77, 9000, 2000, 6671]
    clean = run_online(sep.online(22050, 2, "dc"), wav, sizes)
    live = sep.online(22050, 2, "dc")
    bad = [(wav[:1, :100], r"shape \(1, 100\) in a stream of 2 channel"),
           (wav[0, :100], r"shape \(100,\) in a stream of 2 channel"),
           (np.full((2, 50), np.nan, np.float32), "NaN or infinite"),
           (np.where(np.arange(64) == 63, np.inf, 0.0).astype(np.float32)[None].repeat(2, 0), "NaN or infinite"),
           ((wav[:, :100] * 32767).astype(np.int16), "must hold floats.*int16"),
           (torch.ones(2, 100, dtype=torch.int32), "must hold floats.*torch.int32"),
           (wav[None, :, :100], r"shape \(1, 2, 100\)"),
           (wav[:, :100].tolist(), "numpy array or torch tensor, got list")]
    outs, i = [], 0
    for k, n in enumerate(sizes):
        block, match = bad[k % len(bad)]
        with pytest.raises(SeparationError, match=match) as exc:
            live.process(block)
        assert "\n" not in str(exc.value)
        with pytest.raises(SeparationError, match="block at 44100 Hz in a stream at 22050 Hz"):
            live.process(wav[:, i:i + n], sample_rate=44100)
        block = torch.from_numpy(wav[:, i:i + n]) if k == 2 else wav[:, i:i + n]  # a tensor is a block too
        outs.append(live.process(block, sample_rate=22050))
        i += n
    outs.append(live.flush())
    for s in clean:
        np.testing.assert_array_equal(np.concatenate([o[s] for o in outs], -1), clean[s])
    # An audio callback's way: one buffer refilled for every block (and overwritten after), at the model's
    # rate (no resampler copies the samples) with residual outputs (the input is held until its estimates).
    sep = Separator(model, dtype="float32", band="model", residual=True)
    wav = song(1.0, 2, SR)
    clean = run_online(sep.online(SR, 2, "mi"), wav, sizes)
    live, buf, outs, i = sep.online(SR, 2, "mi"), np.empty((2, 20000), np.float32), [], 0
    for n in sizes:
        m = wav[:, i:i + n].shape[1]
        buf[:, :m] = wav[:, i:i + n]
        outs.append(live.process(buf[:, :m]))
        buf[:] = 0.5
        i += m
        with pytest.raises(SeparationError, match="NaN or infinite samples \\(beyond float32"):
            live.process(np.full((2, 4), 1e300))  # finite as float64
    outs.append(live.flush())
    for s in clean:
        np.testing.assert_array_equal(np.concatenate([o[s] for o in outs], -1), clean[s])
    with pytest.raises(SeparationError, match="flushed"):
        live.process(wav[:, :10])
    with pytest.raises(SeparationError, match="already flushed"):
        live.flush()


def test_models_and_options_that_cannot_run_online(model):
    from test_separate import tiny_model_dict

    with pytest.raises(SeparationError, match="not causal .*body: lstm"):
        Separator(tiny_model_dict(), dtype="float32").online(SR, 1)
    no_centres = {k: v for k, v in model.items() if k != "dc_centers"}
    with pytest.raises(SeparationError, match="dc_centers"):
        Separator(no_centres, dtype="float32").online(SR, 1, "dc")
    Separator(no_centres, dtype="float32").online(SR, 1, "mi")  # the MI head needs none
    with pytest.raises(SeparationError, match="dc_centers"):  # offline too: no k-means fallback
        Separator(no_centres, dtype="float32").separate(song(0.5, 1, SR), SR, head="dc")
    with pytest.raises(SeparationError, match="MISI"):
        Separator(model, dtype="float32", band="model", misi_iters=2).online(SR, 1)
    for rate, chans in [(0, 1), (16000.5, 1), (SR, 0), (SR, True)]:
        with pytest.raises(SeparationError, match="invalid"):
            Separator(model, dtype="float32", band="model").online(rate, chans)
    with pytest.raises(SeparationError, match="causal model \\(body lstm\\) runs with the torch backend"):
        Separator(model, backend="onnxruntime", onnx_path="causal.onnx")
    with pytest.raises(SeparationError, match="dc_centers must be 2 x 4"):
        Separator({**model, "dc_centers": [[1.0, 0.0], [0.0, 1.0]]}, dtype="float32")


def test_offline_causal_masks_are_the_whole_sequence_forward(model):
    """The offline path of a causal model (chunks of 7 frames, state carried) is the body's whole-sequence
    forward (lookahead zero frames at the end), not segments."""
    from sepkit.engine import causal_masks

    sep = Separator(model, dtype="float32", band="model", block_frames=7)
    x = torch.from_numpy(song(1.0, 1, SR))[None]
    mel = sep._mel(x)[0]
    feats = sep._features(mel)
    with torch.no_grad():
        whole = sep.model(feats[None], heads=("mi",))["mask"][0]
    assert sep.model.encoder.lookahead == 2 and feats.shape[0] > 100
    torch.testing.assert_close(causal_masks(sep, feats, mel, "mi"), whole, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- sepkit-stream
@pytest.fixture
def cli(capsys, monkeypatch):
    """sepkit-stream's main in this process (--num-threads 0: torch's threads left alone): (status, stdout, stderr)."""
    import io
    import sys

    from sepkit.bin.stream import main

    def run(*args, stdin=b""):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        rc = main(["--num-threads", "0", *map(str, args)])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    from sepkit.model_io import save_model_dict

    path = tmp_path_factory.mktemp("model") / "causal.pt"
    save_model_dict(path, model)
    return path


def test_cli_file_and_raw_stdin_equal_offline(model_file, tmp_path, cli):
    import json
    import os
    import subprocess
    import sys

    import soundfile as sf

    sep = Separator.from_pretrained(model_file, dtype="float32", band="model")  # online keeps the model band
    wav = song(1.5, 2, 22050)
    sf.write(tmp_path / "song.wav", wav.T, 22050, subtype="FLOAT")
    rc, out, err = cli("--model", model_file, "--outdir", tmp_path / "out", "--block-ms", 7, "--head", "dc",
                       "--report", "json", tmp_path / "song.wav")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["samples"] == wav.shape[1] and rep["blocks"] == len(rep["per_block_ms"]) == -(-wav.shape[1] // 154)
    assert rep["latency_samples"] == sep.online(22050, 2, "dc").latency_samples and 0 < rep["rtf"] < 10
    ref = sep.separate(wav, 22050, head="dc")
    for s in sep.sources:
        got = sf.read(tmp_path / "out" / "song" / f"{s}.wav", dtype="float32", always_2d=True)
        assert got[1] == 22050
        np.testing.assert_allclose(got[0].T, ref[s], rtol=0, atol=1e-5)

    pcm = np.round(wav * 32767).astype("<i2")  # raw s16le through a pipe to the console script, written as s16le
    r = subprocess.run(["sepkit-stream", "--model", model_file, "--outdir", tmp_path / "out", "--raw-rate", "22050",
                        "--raw-channels", "2", "--raw-format", "s16le", "--raw-out", "--name", "live", "-"],
                       input=pcm.T.tobytes(), capture_output=True,
                       env={**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert "real-time factor" in r.stderr.decode() and "algorithmic latency" in r.stderr.decode()
    ref = sep.separate(pcm.astype(np.float32) / 32768, 22050)
    for s in sep.sources:
        got = np.frombuffer((tmp_path / "out" / "live" / f"{s}.raw").read_bytes(), "<i2").reshape(-1, 2).T
        assert got.shape == pcm.shape
        assert np.abs(got.astype(np.float32) - np.round(ref[s] * 32768)).max() <= 1


def test_cli_errors_are_one_line_and_leave_nothing(model_file, tmp_path, cli):
    from test_separate import tiny_model_dict

    from sepkit.model_io import save_model_dict

    save_model_dict(tmp_path / "blstm.pt", tiny_model_dict())
    pcm = (np.random.default_rng(0).standard_normal(3001) * 0.1).astype("<f4")
    nan = pcm.copy()
    nan[2000] = np.nan
    out = tmp_path / "out"
    raw = ["--raw-rate", 16000, "--raw-channels", 1, "--raw-format", "f32le"]
    cases = [([*raw, "--model", tmp_path / "blstm.pt", "-"], pcm.tobytes(), "blstm.pt: the model's body is not causal"),
             ([*raw, "--model", model_file, "-"], nan.tobytes(), "stdin: the block contains NaN"),
             ([*raw, "--model", model_file, "-"], pcm.tobytes()[:-3], "stdin: the raw stream ends with 1 bytes"),
             (["--model", model_file, "--raw-format", "s16le", "-"], b"", "needs --raw-rate, --raw-channels"),
             (["--model", model_file, tmp_path / "missing.wav"], b"", "missing.wav")]
    for args, stdin, match in cases:
        rc, _, err = cli("--outdir", out, *args, stdin=stdin)
        assert rc == 1 and match in err and err.count("\n") == 1, err
        assert not out.exists()  # no output folder, no temporary file
    raw += ["--model", model_file, "--outdir", out, "-q"]
    assert cli(*raw, "-", stdin=pcm.tobytes())[0] == 0
    rc, _, err = cli(*raw, "-", stdin=pcm.tobytes())
    assert rc == 1 and "stdin: output" in err and "exists (use --overwrite" in err
    (out / "mine").mkdir()
    (out / "mine" / "notes.txt").write_text("mine")
    rc, _, err = cli(*raw, "--name", "mine", "--overwrite", "-", stdin=pcm.tobytes())
    assert rc == 1 and "was not made by" in err
    assert (out / "mine" / "notes.txt").read_text() == "mine"
    assert cli(*raw, "--overwrite", "-", stdin=pcm.tobytes())[0] == 0  # its own output: replaced
    assert sorted(p.name for p in out.iterdir()) == ["mine", "stdin"]
    assert sorted(p.name for p in (out / "stdin").iterdir()) == [".sepkit-separate.json", "accompaniment.wav",
                                                                  "vocals.wav"]


def test_cli_interrupted_leaves_nothing(model_file, tmp_path, cli, monkeypatch):
    """Ctrl-C mid-stream: one line, status 130, no output folder and no temporary one."""
    from sepkit.online import OnlineSeparator

    real, calls = OnlineSeparator.process, []

    def process(self, block, sample_rate=None):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, block, sample_rate)

    monkeypatch.setattr(OnlineSeparator, "process", process)
    pcm = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype("<f4")
    rc, _, err = cli("--raw-rate", SR, "--raw-channels", 1, "--raw-format", "f32le", "--model", model_file,
                     "--outdir", tmp_path / "out", "-", stdin=pcm.tobytes())
    assert rc == 130 and "stdin: stopped by signal 2; no output was left" in err and err.count("\n") == 1
    assert len(calls) == 5 and not (tmp_path / "out").exists()  # made for this output, removed with it


def test_held_state_does_not_grow_with_the_stream(model):
    """What the separator holds between blocks stays bounded (engine windows, lookahead, output queue)."""
    sep = Separator(model, dtype="float32", band="model")
    live = sep.online(22050, 2, "dc")
    wav = song(2.0, 2, 22050)
    held = []
    for rep in range(4):  # 8 s of stream
        for i in range(0, wav.shape[1], 1000):
            live.process(wav[:, i:i + 1000])
        eng = live.engine
        held.append((eng.x.end - eng.x.start, eng.mel.end - eng.mel.start, eng.feats.end - eng.feats.start,
                     eng.masks.end - eng.masks.start, live.masker.bins.end - live.masker.bins.start, live.out.size))
    hop, margin = sep.frontend.config.hop_length, sep.margin
    assert max(h[0] for h in held) <= (2 * margin + 4) * hop + 1000  # samples: the iSTFT margin and a block
    assert max(max(h[1:5]) for h in held) <= 2 * margin + 4  # frames
    assert max(h[5] for h in held) <= live.latency_samples + 1000


@pytest.mark.parametrize("head,what", [("mi", "samples"), ("dc", "embeddings")])
def test_an_error_of_the_model_stops_the_stream(model, head, what):
    """NaN out of the network: one line, and the half-advanced stream refuses further blocks."""
    sep = Separator(model, dtype="float32", band="model")
    live = sep.online(SR, 1, head)
    live.process(song(0.5, 1, SR))
    with torch.no_grad():  # this separator's own copy of the weights
        sep.model.linear.bias.fill_(float("nan"))
    with pytest.raises(SeparationError, match=f"NaN or infinite {what}"):
        live.process(song(0.5, 1, SR))
    for call in (lambda: live.process(np.zeros(10, np.float32)), live.flush):
        with pytest.raises(SeparationError, match="stopped at an earlier error \\(the model produced NaN"):
            call()
    if head == "dc":  # offline the persistent centres check too (k-means does for other models)
        with pytest.raises(SeparationError, match="NaN or infinite embeddings"):
            sep.separate(song(0.5, 1, SR), SR, head=head)


@pytest.mark.parametrize("kw", [{}, {"overlap": 0.5, "batch_size": 3}])
def test_engine_without_delta_context_streams_a_blstm_model_as_in_memory(tmp_path, kw):
    """The block engine needs no delta context for features without deltas (the causal recipes' features):
    a BLSTM model on them, streamed file to file in engine blocks of 60 frames, equals the in-memory path."""
    from test_separate_stream import assert_same, streamed, write_noise

    torch.manual_seed(0)
    fc = FeatureConfig(n_mels=N_MELS, use_delta=False)
    conf = {"type": "chimera", "input_dim": fc.input_dim, "n_freq": N_MELS, "hidden": 8, "layers": 1, "emb_dim": 4}
    d = make_model_dict(ChimeraNet(**{k: v for k, v in conf.items() if k != "type"}), conf, fc.to_dict(),
                        CMVN(torch.randn(fc.input_dim) * 0.1 - 3.0, torch.rand(fc.input_dim) + 0.5),
                        ("vocals", "accompaniment"), {"segment_frames": 20})
    sep = Separator(d, dtype="float32", block_frames=60, **kw)
    assert sep.frontend.config.use_delta is False and not sep.causal
    wav = write_noise(tmp_path / "a.wav", 2, 6, 22050)
    for head in ("mi", "dc"):
        assert_same(streamed(sep, tmp_path / "a.wav", tmp_path, head, block_seconds=0.7),
                    sep.separate(wav, 22050, head=head))


def test_dc_time_constant_reaches_the_separation_from_every_cli(model_file, tmp_path, cli, capsys):
    """--dc-time-constant of sepkit-stream, sepkit-separate and separate_data is the Separator's dc_time_constant:
    the DC outputs change with it and equal the API's; a non-positive value is one line and no output."""
    import soundfile as sf

    from sepkit.bin import separate as separate_bin
    from sepkit.bin.separate_data import _load_separator

    wav = song(1.5, 1, SR)
    sf.write(tmp_path / "song.wav", wav, SR, subtype="FLOAT")
    fast = Separator.from_pretrained(model_file, dtype="float32", dc_time_constant=0.05).separate(wav, SR, head="dc")
    slow = Separator.from_pretrained(model_file, dtype="float32").separate(wav, SR, head="dc")
    assert max(np.abs(fast[s] - slow[s]).max() for s in fast) > 1e-3  # the constant matters on this song
    rc, _, err = cli("--model", model_file, "--outdir", tmp_path / "s", "--head", "dc", "--dc-time-constant", 0.05,
                     tmp_path / "song.wav")
    assert rc == 0, err
    assert separate_bin.main(["--no-progress", "--model", str(model_file), "--outdir", str(tmp_path / "o"), "--head",
                              "dc", "--dtype", "float32", "--dc-time-constant", "0.05", str(tmp_path / "song.wav")]) == 0
    for s in fast:
        live = sf.read(tmp_path / "s" / "song" / f"{s}.wav", dtype="float32")[0]
        np.testing.assert_allclose(live, fast[s], atol=1e-4)
        np.testing.assert_allclose(sf.read(tmp_path / "o" / "song" / f"{s}.wav", dtype="float32")[0], fast[s], atol=1e-5)
    assert _load_separator(model_file, "cpu", "float32", dc_time_constant=0.05).dc_time_constant == 0.05
    capsys.readouterr()
    rc, _, err = cli("--model", model_file, "--outdir", tmp_path / "bad", "--head", "dc", "--dc-time-constant", 0,
                     tmp_path / "song.wav")
    assert rc != 0 and "dc_time_constant must be a positive number" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad" / "song").exists()
