"""Chimera++ objectives (Wang, Le Roux, Hershey, ICASSP 2018) against their definitions, and learning checks.

* whitened k-means DC: ``L_DC,W = D - tr((V^T V)^-1 V^T Y (Y^T Y)^-1 Y^T V)``, with silence weights
  and a source absent from an utterance;
* PSA / tPSA (L2, L1) with the target ``|S_c| cos(theta_c - theta_X)`` (truncated to ``[0, |X|]``).
"""
import numpy as np
import pytest
import torch

from sepkit.losses import (DC_LOSSES, MI_LOSSES, PHASE_MI_LOSSES, chimera_loss, dcw_loss, psa_loss,
                           silence_weights)
from sepkit.nets import ChimeraNet
from sepkit.train.config import CHOICES


def _case(B=3, N=40, D=5, C=3, seed=0):
    """Embeddings, one-hot assignments and 0/1 weights: utterance 1 lacks source 2, utterance 2 has
    source 0 only in silent bins (absent once weighted)."""
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    V = V / V.norm(dim=-1, keepdim=True)
    lab = torch.randint(0, C, (B, N), generator=g)
    lab[1][lab[1] == 2] = 0
    w = (torch.rand(B, N, generator=g) > 0.3).double()
    w[2][lab[2] == 0] = 0.0
    Y = torch.nn.functional.one_hot(lab, C).double()
    return V, Y, w


def _naive_dcw(V, Y, w):
    """Explicit matrices, float64: weighted rows, empty sources dropped, D - tr(...)."""
    out = []
    for b in range(V.shape[0]):
        s = np.sqrt(w[b].numpy())[:, None]
        Vb, Yb = V[b].numpy() * s, Y[b].numpy() * s
        Yb = Yb[:, Yb.any(0)]
        tr = np.trace(np.linalg.inv(Vb.T @ Vb) @ Vb.T @ Yb @ np.linalg.inv(Yb.T @ Yb) @ Yb.T @ Vb)
        out.append(V.shape[-1] - tr)
    return torch.tensor(out, dtype=torch.float64)


def _naive_dcw_nxn(V, Y, w):
    """The N x N form: D - <P_V, P_Y>_F with the projections P_A = A (A^T A)^+ A^T (N x N)."""
    out = []
    for b in range(V.shape[0]):
        s = np.sqrt(w[b].numpy())[:, None]
        Vb, Yb = V[b].numpy() * s, Y[b].numpy() * s
        PV = Vb @ np.linalg.pinv(Vb.T @ Vb) @ Vb.T
        PY = Yb @ np.linalg.pinv(Yb.T @ Yb) @ Yb.T
        assert PV.shape == (V.shape[1],) * 2
        out.append(V.shape[-1] - (PV * PY).sum())
    return torch.tensor(out, dtype=torch.float64)


def test_dcw_equals_definition_with_silence_and_absent_sources():
    V, Y, w = _case()
    got = dcw_loss(V, Y, w, ridge=0.0)
    torch.testing.assert_close(got, _naive_dcw(V, Y, w), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, _naive_dcw_nxn(V, Y, w), rtol=1e-10, atol=1e-10)
    assert torch.isfinite(dcw_loss(V, Y, w)).all()
    torch.testing.assert_close(dcw_loss(V, Y, w), got, rtol=1e-4, atol=1e-4)  # the default ridge is tiny
    torch.testing.assert_close(dcw_loss(V, Y, ridge=0.0), _naive_dcw(V, Y, torch.ones_like(w)), rtol=1e-10, atol=1e-10)
    soft = w * torch.linspace(0.2, 1.0, w.shape[1], dtype=torch.float64)  # weights scale rows by sqrt(w)
    torch.testing.assert_close(dcw_loss(V, Y, soft, ridge=0.0), _naive_dcw(V, Y, soft), rtol=1e-10, atol=1e-10)
    # bounds: D - min(D, C present) <= L <= D, and V = Y (D = C) is perfect
    assert dcw_loss(Y[:1], Y[:1], ridge=0.0).abs().max() < 1e-9
    assert float32_ok(V, Y, w)


def float32_ok(V, Y, w):
    ref = _naive_dcw(V, Y, w)
    return bool(((dcw_loss(V.float(), Y.float(), w.float()).double() - ref).abs() < 1e-3).all())


def test_dcw_all_silent_utterance_is_finite():
    V, Y, w = _case()
    out = dcw_loss(V[:1], Y[:1], torch.zeros_like(w[:1]))
    torch.testing.assert_close(out, torch.tensor([5.0], dtype=torch.float64))  # D - 0: nothing to cluster


def _naive_psa(M, X, Tc, truncate, p):
    M, X, Tc = (a.numpy() for a in (M, X, Tc))
    B, T, F, C = M.shape
    out = np.zeros(B)
    for b in range(B):
        for t in range(T):
            for f in range(F):
                for c in range(C):
                    target = min(X[b, t, f], max(0.0, Tc[b, t, f, c])) if truncate else Tc[b, t, f, c]
                    out[b] += abs(M[b, t, f, c] * X[b, t, f] - target) ** p
    return torch.from_numpy(out)


def _psa_case(seed=1):
    g = torch.Generator().manual_seed(seed)
    B, T, F, C = 2, 5, 4, 2
    X = torch.rand(B, T, F, generator=g, dtype=torch.float64) * 2
    X[0, 0] = 0.0  # silent bins
    S = torch.rand(B, T, F, C, generator=g, dtype=torch.float64) * 2
    dtheta = torch.rand(B, T, F, C, generator=g, dtype=torch.float64) * 2 * np.pi
    Tc = S * torch.cos(dtheta)  # |S_c| cos(theta_c - theta_X): negative and above |X| both occur
    Tc[1, :, :, 1] = 0.0  # an absent source
    M = torch.rand(B, T, F, C, generator=g, dtype=torch.float64)
    assert (Tc < 0).any() and (Tc > X[..., None]).any()
    return M, X, S, Tc


@pytest.mark.parametrize("name,truncate,p", [("psa", False, 2), ("tpsa", True, 2), ("tpsa_l1", True, 1)])
def test_psa_losses_equal_definition(name, truncate, p):
    M, X, S, Tc = _psa_case()
    ref = _naive_psa(M, X, Tc, truncate, p)
    torch.testing.assert_close(psa_loss(M, X, Tc, truncate=truncate, p=p), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(MI_LOSSES[name](M, X, S, Tc, None), ref, rtol=1e-12, atol=1e-12)
    out = chimera_loss({"mask": M}, X, S, alpha=0.0, mi_loss=name, psa_target=Tc)
    torch.testing.assert_close(out["mi"], ref / (5 * 4), rtol=1e-12, atol=1e-12)  # divided by TF
    lengths = torch.tensor([5, 3])
    out = chimera_loss({"mask": M}, X, S, alpha=0.0, mi_loss=name, psa_target=Tc, lengths=lengths)
    ref3 = torch.stack([ref[0], _naive_psa(M[1:, :3], X[1:, :3], Tc[1:, :3], truncate, p)[0]])
    torch.testing.assert_close(out["mi"], ref3 / (lengths * 4), rtol=1e-12, atol=1e-12)


def test_registries_config_and_refusals():
    assert set(CHOICES["mi_loss"]) == set(MI_LOSSES) and set(CHOICES["dc_loss"]) == set(DC_LOSSES)
    M, X, S, Tc = _psa_case()
    for name in PHASE_MI_LOSSES:
        with pytest.raises(ValueError, match="needs psa_target"):
            chimera_loss({"mask": M}, X, S, alpha=0.5, mi_loss=name)
    with pytest.raises(ValueError, match="unknown dc_loss"):
        chimera_loss({"mask": M}, X, S, alpha=0.5, dc_kind="dcx")


def test_chimera_with_dcw_is_alpha_mix_of_raw_dcw_and_mi():
    M, X, S, Tc = _psa_case()
    B, T, F, C = M.shape
    g = torch.Generator().manual_seed(5)
    V = torch.randn(B, T * F, 3, generator=g, dtype=torch.float64)
    out = chimera_loss({"mask": M, "embedding": V}, X, S, alpha=0.3, mi_loss="tpsa", dc_kind="dcw",
                       psa_target=Tc, silence_db=6.0)
    from sepkit.frontend import ibm

    w = silence_weights(X, 6.0).reshape(B, -1)
    dc = _naive_dcw(V, ibm(S).reshape(B, T * F, C), w)
    torch.testing.assert_close(out["dc"], dc, rtol=1e-4, atol=1e-4)  # ridge 1e-6
    torch.testing.assert_close(out["loss"], 0.3 * out["dc"] + 0.7 * out["mi"])


def _toy_batch(seed=0, B=4, T=30, F=12, C=2):
    """A tiny synthetic batch: two 'sources' with complex spectra, the mixture their sum."""
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(B, T, F, C, generator=g) + 1j * torch.randn(B, T, F, C, generator=g)
    S = S * (torch.rand(B, T, F, C, generator=g) < 0.5).float()  # sparse: bins dominated by one source
    X = S.sum(-1)
    mix = X.abs().float()
    psa = (S * X.conj()[..., None]).real.float() / mix.clamp_min(1e-30)[..., None]
    return torch.log(mix + 1e-3), mix, S.abs().float(), psa


@pytest.mark.parametrize("alpha,mi,dc", [(1.0, "msa", "dcw"), (0.0, "psa", "dc"), (0.0, "tpsa", "dc"),
                                         (0.0, "tpsa_l1", "dc")])
def test_each_new_objective_learns(alpha, mi, dc):
    torch.manual_seed(0)
    feats, mix, src, psa = _toy_batch()
    heads = ("dc",) if alpha == 1 else ("mi",)
    net = ChimeraNet(feats.shape[-1], n_freq=mix.shape[-1], hidden=16, layers=1, emb_dim=4, heads=heads)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)

    def loss():
        return chimera_loss(net(feats), mix, src, alpha, mi, silence_db=None, dc_kind=dc, psa_target=psa)["loss"].mean()

    with torch.no_grad():
        first = float(loss())
    for _ in range(40):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    with torch.no_grad():
        last = float(loss())
    assert last < 0.8 * first, (first, last)
