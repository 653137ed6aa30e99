import pytest
import torch

from sepkit.nets import ChimeraNet, build_model


def test_paper_network_shapes_and_size():
    net = ChimeraNet(300)  # paper default: 4 x 500, D=20, F=150, C=2
    n_params = sum(p.numel() for p in net.parameters())
    assert 24.0e6 < n_params < 24.5e6
    out = net(torch.randn(2, 7, 300))
    assert out["embedding"].shape == (2, 7 * 150, 20)
    assert out["mask"].shape == (2, 7, 150, 2)
    torch.testing.assert_close(out["embedding"].norm(dim=-1), torch.ones(2, 1050))
    torch.testing.assert_close(out["mask"].sum(-1), torch.ones(2, 7, 150))


def test_mi_head_is_per_frequency_linear():
    torch.manual_seed(0)
    net = ChimeraNet(10, n_freq=4, hidden=5, layers=2, emb_dim=3, n_sources=2, mask_activation="sigmoid")
    x = torch.randn(1, 6, 10)
    z = net.linear(net.encoder(x)).reshape(1, 6, 4, 3)
    expect = torch.stack([torch.sigmoid(z[:, :, f] @ net.mi_head.weight[f] + net.mi_head.bias[f]) for f in range(4)], 2)
    torch.testing.assert_close(net(x)["mask"], expect)


def test_single_head_models_and_registry():
    dc = build_model({"type": "chimera", "input_dim": 8, "n_freq": 4, "hidden": 3, "layers": 1, "heads": ["dc"]})
    assert set(dc(torch.randn(1, 2, 8))) == {"embedding"} and dc.mi_head is None
    mi = build_model({"input_dim": 8, "n_freq": 4, "hidden": 3, "layers": 1, "heads": ["mi"]})
    assert set(mi(torch.randn(1, 2, 8))) == {"mask"}
    with pytest.raises(ValueError):
        build_model({"type": "unet", "input_dim": 8})
    with pytest.raises(ValueError):
        ChimeraNet(8, heads=())


@pytest.mark.parametrize("batch_norm", [False, True])
def test_padding_does_not_change_valid_outputs(batch_norm):
    torch.manual_seed(0)
    net = ChimeraNet(6, n_freq=3, hidden=4, layers=2, emb_dim=2, dropout=0.2, batch_norm=batch_norm).eval()
    x = torch.randn(1, 5, 6)
    ref = net(x)["mask"]
    padded = torch.cat([x, torch.randn(1, 4, 6)], 1)
    got = net(padded, lengths=torch.tensor([5]))["mask"][:, :5]
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_batchnorm_encoder_trains_and_normalises():
    torch.manual_seed(0)
    net = ChimeraNet(6, n_freq=3, hidden=4, layers=2, emb_dim=2, batch_norm=True)
    out = net(torch.randn(4, 10, 6) * 50 + 7)
    out["mask"].sum().backward()
    blk = net.encoder.blocks[0]
    assert blk.proj.weight.grad.abs().sum() > 0 and blk.bn.weight.grad is not None
    assert blk.lstm.weight_ih_l0.grad is None  # fixed selection matrix, not trained
    g = blk.bn(blk.proj(torch.randn(64, 6) * 50 + 7))
    assert g.mean(0).abs().max() < 1e-4
