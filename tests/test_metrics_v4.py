"""BSS eval v4 (sepkit.metrics_v4) against museval: stored numbers always, the live museval when installed.

* tests/data/museval_v4.json holds museval's output on the fixed signals of
  tests/data/make_museval_v4.py (made once by that script; no museval needed here): every frame of
  SDR / ISR / SIR / SAR must agree to 1e-6 dB.
* Where museval is installed (setup.py's dev extra) the same comparison runs live, on those signals
  and on another case. museval's package imports musdb -> stempeg, which refuses to import without an
  ffmpeg binary; its ``metrics`` module needs only numpy and scipy and is loaded by path.
* A gain that changes from one window to the next, worked out by hand: the v4 distortion filters are
  fitted once on the whole track, so the window's gain error shows as artifacts (SAR), and ISR is the
  same in every window; filters fitted per window (v3's way) would absorb the gain (SAR ~ 300 dB).
"""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sepkit.metrics_v4 import bss_eval_v4

DATA = Path(__file__).parent / "data"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MAKE = _load("make_museval_v4", DATA / "make_museval_v4.py")


def museval_metrics():
    try:
        return MAKE.load_museval_metrics()
    except ImportError:
        pytest.skip("museval is not installed (pip install -e .[dev])")


def _compare(ours, theirs, atol=1e-6):
    for name in ("sdr", "isr", "sir", "sar"):
        np.testing.assert_allclose(ours[name], np.asarray(theirs[name], dtype=np.float64), atol=atol, rtol=0,
                                   err_msg=name)


def test_v4_matches_stored_museval_numbers():
    stored = json.loads((DATA / "museval_v4.json").read_text())
    ref, est = MAKE.signals()
    assert stored["window"] == stored["hop"] == stored["sample_rate"]
    ours = bss_eval_v4(ref, est, stored["sample_rate"], win=1.0, hop=1.0, filters_len=stored["filters_len"])
    assert ours["sdr"].shape == (2, stored["seconds"])
    _compare(ours, stored)


def test_v4_matches_live_museval():
    metrics = museval_metrics()
    ref, est = MAKE.signals()
    sdr, isr, sir, sar, _ = metrics.bss_eval(ref, est, window=MAKE.SR, hop=MAKE.SR, filters_len=MAKE.FILTERS_LEN)
    _compare(bss_eval_v4(ref, est, MAKE.SR, filters_len=MAKE.FILTERS_LEN),
             {"sdr": sdr, "isr": isr, "sir": sir, "sar": sar})
    # another case: windows of 1 s every 0.5 s, a partial last window, leakage both ways
    sr = 4000
    ref = MAKE.noise(11, (2, int(2.7 * sr), 2))
    est = np.stack([0.8 * ref[0] + 0.2 * ref[1] + 0.05 * MAKE.noise(12, ref[0].shape),
                    np.roll(ref[1], 2, axis=0) * np.linspace(0.5, 1.0, ref.shape[1])[:, None]
                    + 0.1 * MAKE.noise(13, ref[1].shape)])
    sdr, isr, sir, sar, _ = metrics.bss_eval(ref, est, window=sr, hop=sr // 2, filters_len=32)
    ours = bss_eval_v4(ref, est, sr, win=1.0, hop=0.5, filters_len=32)
    assert ours["sdr"].shape == sdr.shape == (2, 4)
    _compare(ours, {"sdr": sdr, "isr": isr, "sir": sir, "sar": sar})


def test_v4_time_varying_gain_by_hand():
    """est_0 = g_t ref_0 (g = 0.9, 0.3, 0.4 in the three windows), est_1 = ref_1; white references.

    One filter for the whole track: about the scalar c = sum_t g_t E_t / sum_t E_t (E_t: the energy of
    ref_0 in window t; the other taps are O(1/sqrt(N))). Per window: the projection is c ref_0, so
    SDR_t = -20 log10 |1 - g_t|, ISR_t = -20 log10 |1 - c| (the same in every window),
    SAR_t = 20 log10 (c / |g_t - c|), and SIR is large (no leakage).
    """
    sr, g = 4000, np.array([0.9, 0.3, 0.4])
    ref = MAKE.noise(21, (2, 3 * sr))
    est = np.stack([np.repeat(g, sr) * ref[0], ref[1]])
    out = bss_eval_v4(ref, est, sr, filters_len=16)
    energy = (ref[0].reshape(3, sr) ** 2).sum(1)
    c = (g * energy).sum() / energy.sum()
    np.testing.assert_allclose(out["sdr"][0], -20 * np.log10(1 - g), atol=1e-6)
    np.testing.assert_allclose(out["isr"][0], -20 * math.log10(1 - c), atol=0.05)
    np.testing.assert_allclose(out["sar"][0], 20 * np.log10(c / np.abs(g - c)), atol=0.05)
    assert np.all(out["sir"][0] > 30)
    assert np.all(out["sdr"][1] > 200) and np.all(out["sar"][1] > 200)  # a perfect estimate
