"""Core benchmarks of issue 2, each against a plain reference written here and run side by side.

(a) torch k-means vs scikit-learn KMeans on 500k x 20 points (target ratio <= 1.0)
(b) one training step of the paper network (B=8, T=100) vs a plain nn.LSTM + linear reference (<= 1.05)
(c) dc_loss forward+backward at B=8, T=500, F=150 vs the three Gram products in plain torch (<= 1.0)

Run: tools/venv/bin/python bench/bench_core.py [--only kmeans,step,dc]
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import report, setup_threads, timeit  # noqa: E402


def bench_kmeans():
    from sklearn.cluster import KMeans

    from sepkit.cluster import kmeans

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (2, 20))
    x = (centers[rng.integers(0, 2, 500_000)] + rng.normal(0, 0.6, (500_000, 20))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # unit-norm, like DC embeddings
    xt = torch.from_numpy(x)
    ours = timeit(lambda: kmeans(xt, 2, n_init=1, seed=0), repeat=5)
    base = timeit(lambda: KMeans(2, n_init=1, random_state=0).fit(x), repeat=5)
    inert_ours = kmeans(xt, 2, n_init=1, seed=0).inertia
    inert_sk = KMeans(2, n_init=1, random_state=0).fit(x).inertia_
    print(f"  inertia: sepkit {inert_ours:.2f}  sklearn {inert_sk:.2f}")
    return report("(a) k-means 500k x 20, k=2 (vs sklearn)", ours, base, target=1.0)


class PlainRef(torch.nn.Module):
    """The reference: one nn.LSTM stack + linear + tanh/normalise + per-frequency MI layer, inline."""

    def __init__(self, din=300, hidden=500, layers=4, F=150, D=20, C=2):
        super().__init__()
        self.F, self.D = F, D
        self.lstm = torch.nn.LSTM(din, hidden, layers, batch_first=True, bidirectional=True)
        self.lin = torch.nn.Linear(2 * hidden, F * D)
        self.w = torch.nn.Parameter(torch.randn(F, D, C) * 0.1)

    def forward(self, x):
        B, T, _ = x.shape
        z = self.lin(self.lstm(x)[0]).view(B, T, self.F, self.D)
        v = torch.nn.functional.normalize(torch.tanh(z), dim=-1).view(B, T * self.F, self.D)
        m = torch.einsum("btfd,fdc->btfc", z, self.w).softmax(-1)
        return v, m


def step_fns(B=8, T=100, device="cpu", autocast=None, hidden=500, layers=4, F=150, D=20):
    """``(ours, base)``: one optimiser step of sepkit (ChimeraNet + chimera_loss, as the trainer takes
    it) and of :class:`PlainRef` with the same loss terms inline, on ``device``, the networks under
    ``autocast`` (e.g. ``torch.bfloat16``; None = float32) and the losses in float32.
    Also used by tools/gpu_check.py."""
    from sepkit.losses import chimera_loss
    from sepkit.nets import ChimeraNet

    torch.manual_seed(0)
    dev = torch.device(device)
    x = torch.randn(B, T, 2 * F, device=dev)
    src = torch.rand(B, T, F, 2, device=dev)
    mix = src.sum(-1)
    net = ChimeraNet(2 * F, F, hidden, layers, D).to(dev)
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-5)

    def amp():
        return torch.autocast(dev.type, dtype=autocast or torch.float32, enabled=autocast is not None)

    def ours():
        opt.zero_grad(set_to_none=True)
        with amp():
            out = net(x)
        out = {k: v.float() for k, v in out.items()}
        chimera_loss(out, mix, src, alpha=0.1)["loss"].mean().backward()
        opt.step()

    ref = PlainRef(2 * F, hidden, layers, F, D).to(dev)
    ropt = torch.optim.RMSprop(ref.parameters(), lr=1e-5)
    Y = torch.nn.functional.one_hot(src.argmax(-1), 2).float().view(B, T * F, 2)

    def base():
        ropt.zero_grad(set_to_none=True)
        with amp():
            v, m = ref(x)
        v, m = v.float(), m.float()
        dc = (v.transpose(1, 2) @ v).square().sum() - 2 * (v.transpose(1, 2) @ Y).square().sum() \
            + (Y.transpose(1, 2) @ Y).square().sum()
        mi = (src - m * mix[..., None]).square().sum()
        (0.1 * dc / (T * F) ** 2 + 0.9 * mi / (T * F)).backward()
        ropt.step()

    return ours, base


def bench_step():
    ours, base = step_fns(B=8, T=100)
    o, b = [], []
    for _ in range(3):  # interleave to share thermal / contention conditions
        o.append(timeit(ours, repeat=3))
        b.append(timeit(base, repeat=3))
    return report("(b) paper net train step B=8 T=100 (vs nn.LSTM ref)", float(np.median(o)), float(np.median(b)), target=1.05)


def bench_dc():
    from sepkit.losses import dc_loss

    torch.manual_seed(0)
    B, N, D = 8, 500 * 150, 20
    V0 = torch.nn.functional.normalize(torch.randn(B, N, D), dim=-1)
    Y = torch.nn.functional.one_hot(torch.randint(0, 2, (B, N)), 2).float()

    def ours():
        V = V0.clone().requires_grad_()
        dc_loss(V, Y).sum().backward()

    def base():
        V = V0.clone().requires_grad_()
        Vt, Yt = V.transpose(1, 2), Y.transpose(1, 2)
        ((Vt @ V).square().sum() - 2 * (Vt @ Y).square().sum() + (Yt @ Y).square().sum()).backward()

    o, b = [], []
    for _ in range(3):
        o.append(timeit(ours, repeat=5))
        b.append(timeit(base, repeat=5))
    return report("(c) dc_loss fwd+bwd B=8 T=500 F=150 (vs Gram ref)", float(np.median(o)), float(np.median(b)), target=1.0)


BENCHES = {"kmeans": bench_kmeans, "step": bench_step, "dc": bench_dc}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHES))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    return {k: BENCHES[k]() for k in args.only.split(",")}


if __name__ == "__main__":
    main()
