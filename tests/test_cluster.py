import numpy as np
import torch
from sklearn.cluster import KMeans

from sepkit.cluster import kmeans, labels_to_masks, name_clusters_lowfreq


def _blobs(n=3000, k=4, d=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, d))
    lab = rng.integers(0, k, n)
    return (centers[lab] + rng.normal(0, 1, (n, d))).astype(np.float32)


def test_inertia_matches_sklearn_within_1_percent():
    for seed in range(3):
        x = _blobs(seed=seed)
        sk = KMeans(4, n_init=3, random_state=seed).fit(x)
        res = kmeans(torch.from_numpy(x), 4, n_init=3, seed=seed)
        assert res.inertia <= sk.inertia_ * 1.01
        assert res.labels.shape == (3000,) and res.centers.shape == (4, 5)
        d = ((x[:, None] - res.centers.numpy()[None]) ** 2).sum(-1)
        assert np.isclose(d.min(1).sum(), res.inertia, rtol=1e-4)


def test_weights_exclude_points_from_fit():
    x = torch.tensor([[0.0], [0.1], [10.0], [10.1], [1000.0]])
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    res = kmeans(x, 2, weights=w, n_init=2)
    assert sorted(res.centers.squeeze(1).tolist()) == pytest_approx([0.05, 10.05])
    assert res.labels[4] == res.labels[2]  # the outlier still gets a label (nearest centre)


def pytest_approx(v):
    import pytest

    return pytest.approx(v, abs=1e-5)


def test_deterministic_by_seed():
    x = torch.from_numpy(_blobs(seed=5))
    a, b = kmeans(x, 4, seed=3), kmeans(x, 4, seed=3)
    assert torch.equal(a.labels, b.labels)


def test_lowfreq_naming_rule():
    T, F = 10, 6
    freqs = torch.tensor([50.0, 150.0, 400.0, 1000.0, 2000.0, 4000.0])
    labels = torch.zeros(T, F, dtype=torch.long)
    labels[:, :2] = 1  # cluster 1 holds every bin below 200 Hz -> accompaniment
    masks = labels_to_masks(labels.reshape(-1), 2, (T, F))
    assert name_clusters_lowfreq(masks, freqs) == [0, 1]
    assert name_clusters_lowfreq(masks.flip(-1), freqs) == [1, 0]
