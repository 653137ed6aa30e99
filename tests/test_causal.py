"""The causal body ``lstm`` (live separation): causality with a lookahead of L frames, block-by-block steps that
give the whole-sequence output, configuration checks, and the per-source DC anchors (``dc_centers``) that
training stores for the online DC head."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import make_corpus, one_thread, train_args  # noqa: E402,F401

from sepkit.cluster import anchors_from_sums, source_anchor_sums  # noqa: E402
from sepkit.nets import BODIES, build_model  # noqa: E402


def _net(L, heads=("dc", "mi"), seed=0):
    torch.manual_seed(seed)
    return build_model({"type": "chimera", "input_dim": 8, "n_freq": 5, "hidden": 6, "layers": 2, "emb_dim": 3,
                        "body": "lstm", "lookahead": L, "heads": list(heads)}).eval()


@pytest.mark.parametrize("L", [0, 1, 3])
def test_output_frame_t_sees_inputs_up_to_t_plus_lookahead_only(L):
    net = _net(L)
    x = torch.randn(2, 30, 8)
    y = net(x)["mask"]
    for k in (0, 11, 29):  # change one input frame: outputs before k - L are untouched, output k - L is not
        x2 = x.clone()
        x2[:, k] += 1.0
        diff = (net(x2)["mask"] - y).abs().amax((0, 2, 3))
        assert (diff[:max(k - L, 0)] == 0).all()
        assert diff[max(k - L, 0)] > 0
    assert BODIES.setting("lstm", "causal") and not BODIES.setting("blstm", "causal")


@pytest.mark.parametrize("L", [0, 2])
def test_steps_with_carried_state_give_the_whole_sequence_output(L):
    enc = _net(L).encoder
    x = torch.randn(2, 40, 8)
    with torch.no_grad():
        whole = enc(x)
        state, outs = enc.init_state(2), []
        for a, b in [(0, 1), (1, 1), (1, 9), (9, 33), (33, 40)]:  # chunks of 1, 0, 8, 24, 7 frames
            h, state = enc.step(x[:, a:b], state)
            outs.append(h)
        h, state = enc.step(torch.zeros(2, L, 8), state)  # the end of the stream: L zero frames
        outs.append(h)
    torch.testing.assert_close(torch.cat(outs, 1)[:, L:], whole, rtol=0, atol=1e-6)


def test_padded_batch_gives_each_sequence_its_own_end():
    enc = _net(2).encoder
    x = torch.randn(2, 20, 8)
    x[1, 12:] = 5.0  # padding of the shorter sequence: must not be read as its lookahead
    with torch.no_grad():
        out = enc(x, torch.tensor([20, 12]))
        alone = enc(x[1:, :12])
    torch.testing.assert_close(out[1, :12], alone[0], rtol=0, atol=1e-6)


def test_lookahead_and_batch_norm_need_a_causal_body():
    from sepkit.nets import ChimeraNet
    from sepkit.train.config import ConfigError, check_config, get_parser, parse_config

    with pytest.raises(ValueError, match="lookahead is for a causal body"):
        ChimeraNet(8, n_freq=5, hidden=4, layers=1, emb_dim=2, lookahead=2)
    with pytest.raises(ValueError, match="no batch_norm"):
        ChimeraNet(8, n_freq=5, hidden=4, layers=1, emb_dim=2, body="lstm", batch_norm=True)
    args = ["--train-dump", "t", "--valid-dump", "v", "--outdir", "o"]
    parser = get_parser()
    for extra, msg in ((["--lookahead", "3"], "lookahead 3 is for a causal body"),
                       (["--body", "lstm", "--batch_norm", "true"], "batch_norm is not causal")):
        with pytest.raises(SystemExit):
            parse_config(args + extra, parser)
        with pytest.raises(ConfigError, match="^" + msg):
            check_config(vars(parser.parse_args(args + extra)))
    assert parse_config(args + ["--body", "lstm", "--lookahead", "3"]).lookahead == 3


def test_anchor_sums_follow_their_definition():
    torch.manual_seed(1)
    B, T, F, C, D = 2, 6, 4, 3, 5
    emb = torch.randn(B, T * F, D)
    src = torch.rand(B, T, F, C)
    mix = src.sum(-1)
    mix[0, 0, 0] = 1e-9  # a silent bin: left out
    lengths = torch.tensor([6, 4])  # frames 4, 5 of item 1: padding, left out
    sums = source_anchor_sums(emb, mix, src, silence_db=40.0, lengths=lengths)
    want, count = torch.zeros(C, D, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    for b in range(B):
        for t in range(lengths[b]):
            for f in range(F):
                if b == 0 and t == 0 and f == 0:
                    continue
                c = int(src[b, t, f].argmax())
                want[c] += torch.nn.functional.normalize(emb[b, t * F + f].double(), dim=0)
                count[c] += 1
    torch.testing.assert_close(sums[:, :D], want)
    torch.testing.assert_close(sums[:, D], count)
    centers = torch.tensor(anchors_from_sums(sums))
    torch.testing.assert_close(centers, torch.nn.functional.normalize(want / count[:, None], dim=-1).float())


def test_training_a_causal_chimera_stores_dc_centers_and_loading_checks_them(tmp_path, one_thread):
    from sepkit.bin.train import main
    from sepkit.model_io import ModelFileError, load_model_dict, save_model_dict

    corpus = make_corpus(tmp_path / "c", n_train=3, n_valid=2)
    out = tmp_path / "exp"
    assert main(train_args(corpus, out, "--epochs", "1", "--tensorboard", "false", "--body", "lstm",
                           "--lookahead", "2", "--batch_size", "2")) == 0
    d = load_model_dict(out / "model.pt")
    assert d["model_conf"]["body"] == "lstm" and d["model_conf"]["lookahead"] == 2
    cent = torch.tensor(d["dc_centers"])
    assert cent.shape == (2, d["model_conf"]["emb_dim"])
    torch.testing.assert_close(cent.norm(dim=1), torch.ones(2))
    for bad in ([[0.0] * cent.shape[1]], [[float("nan")] * cent.shape[1]] * 2, "x"):
        save_model_dict(tmp_path / "bad.pt", {**d, "dc_centers": bad})
        with pytest.raises(ModelFileError, match=r"bad\.pt: .*dc_centers"):
            load_model_dict(tmp_path / "bad.pt")
    save_model_dict(tmp_path / "bad.pt", {**d, "model_conf": {**d["model_conf"], "lookahead": -1}})
    with pytest.raises(ModelFileError, match=r"bad\.pt: .*lookahead"):
        load_model_dict(tmp_path / "bad.pt")


def test_average_of_checkpoints_averages_the_anchors():
    from sepkit.bin.average_checkpoints import average

    a = {"model_conf": {}, "feat_conf": {}, "sources": ["a", "b"], "cmvn": {}, "train": {},
         "model_state": {"w": torch.ones(2)}, "dc_centers": [[1.0, 0.0], [0.0, 1.0]]}
    b = {**a, "model_state": {"w": torch.zeros(2)}, "dc_centers": [[0.0, 1.0], [0.0, 1.0]]}
    out = average([a, b])
    torch.testing.assert_close(torch.tensor(out["dc_centers"]), torch.tensor([[0.7071068, 0.7071068], [0.0, 1.0]]))
    assert "dc_centers" not in average([a, {**b, "dc_centers": None}])
