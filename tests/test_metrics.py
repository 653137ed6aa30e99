import numpy as np
import pytest

from sepkit.metrics import aggregate, best_permutation, score_file, si_sdr, si_sdr_improvement


def _sig(n=8000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, n))


def test_si_sdr_definition_and_scale_invariance():
    ref = _sig()[0]
    noise = _sig(seed=1)[0]
    est = ref + 0.1 * noise
    e, r = est - est.mean(), ref - ref.mean()
    a = e @ r / (r @ r)
    expect = 10 * np.log10(np.sum((a * r) ** 2) / np.sum((e - a * r) ** 2))
    assert np.isclose(si_sdr(est, ref), expect)
    for s in (0.01, 3.0, -7.0):
        assert np.isclose(si_sdr(s * est, ref), expect)
    assert np.isnan(si_sdr(est, np.zeros_like(ref)))


def test_best_permutation_and_improvement():
    src = _sig()
    mix = src.sum(0)
    est = src[::-1] + 0.05 * _sig(seed=2)
    perm, _ = best_permutation(est, src)
    assert perm == [1, 0]
    res = si_sdr_improvement(est, src, mix)
    assert np.all(res["si_sdri"] > 15)
    assert np.allclose(res["si_sdr_mix"], si_sdr(np.stack([mix, mix]), src))


def _si_sdr_by_hand(est, ref):
    e, r = est - est.mean(), ref - ref.mean()
    a = e @ r / (r @ r)
    return 10 * np.log10(np.sum((a * r) ** 2) / np.sum((e - a * r) ** 2))


def test_improvement_is_over_the_mixture_by_hand():
    """SI-SDRi = SI-SDR(estimate) - SI-SDR(mixture as the estimate), per source, in reference order.

    The mixture is loud in vocals (+10 dB over the accompaniment), so the baselines are far from 0 and of
    opposite signs: an improvement without the baseline, or against the wrong source, is off by >= 8 dB."""
    src = _sig(8000, seed=4)
    src[1] *= 10 ** (-10 / 20)
    mix = src.sum(0)
    est = src[::-1] + 0.05 * _sig(8000, seed=5)  # in the other order: DC's unordered outputs
    res = si_sdr_improvement(est, src, mix)
    base = [_si_sdr_by_hand(mix, src[0]), _si_sdr_by_hand(mix, src[1])]
    assert base[0] > 8 and base[1] < -8
    want = [_si_sdr_by_hand(est[1], src[0]) - base[0], _si_sdr_by_hand(est[0], src[1]) - base[1]]
    np.testing.assert_allclose(res["si_sdr_mix"], base, atol=1e-9)
    np.testing.assert_allclose(res["si_sdri"], want, atol=1e-9)
    np.testing.assert_allclose(score_file(est, src, mix, bss=False)["si_sdri"], want, atol=1e-9)
    # without a permutation search the estimates stay in their order (and score badly)
    np.testing.assert_allclose(si_sdr_improvement(est, src, mix, permute=False)["si_sdri"],
                               [_si_sdr_by_hand(est[0], src[0]) - base[0], _si_sdr_by_hand(est[1], src[1]) - base[1]],
                               atol=1e-9)


def test_bss_eval_scores_and_nsdr():
    src = _sig(16000)
    mix = src.sum(0)
    est = src + 0.1 * _sig(16000, seed=3)
    res = score_file(est[::-1], src, mix)
    assert res["perm"] == [1, 0]
    assert np.all(res["nsdr"] > 10) and np.all(res["sir"] > res["nsdr"])
    assert np.allclose(res["nsdr"], res["sdr"] - score_file(np.stack([mix, mix]), src, mix, permute=False)["sdr"])


def test_silent_reference_is_nan_not_zero():
    src = _sig(4000)
    src[0] = 0
    res = score_file(src + 0.01, src, src.sum(0))
    assert np.isnan(res["si_sdri"][0]) and np.isnan(res["nsdr"][0])


def test_gnsdr_is_length_weighted():
    files = [{"nsdr": np.array([2.0, 4.0]), "si_sdri": np.array([1.0, 1.0])},
             {"nsdr": np.array([8.0, np.nan]), "si_sdri": np.array([4.0, 4.0])}]
    agg = aggregate(files, lengths=[30.0, 10.0])
    assert agg["nsdr"] == pytest.approx([(2 * 30 + 8 * 10) / 40, 4.0])
    assert agg["si_sdri"] == pytest.approx([(30 + 40) / 40] * 2)
    assert list(agg["n_used_nsdr"]) == [2, 1]
