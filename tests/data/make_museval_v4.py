"""Write tests/data/museval_v4.json: museval's BSS eval v4 on fixed signals, the reference numbers of
tests/test_metrics_v4.py (which then needs no museval to check sepkit.metrics_v4 against it).

Run once, where museval is installed (``pip install museval``; its package imports ffmpeg-bound modules,
so its ``metrics`` module is loaded by path, which needs only numpy and scipy)::

    tools/venv/bin/python tests/data/make_museval_v4.py

The signals are made here without a random generator (a counter hashed by splitmix64), so they are the
same bit for bit with any numpy: two stereo sources, estimates with a gain that changes every second
(where filters fitted per window and per track disagree), leakage, a delay, a channel mix and noise.
"""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

SR = 8000
SECONDS = 3
FILTERS_LEN = 64
OUT = Path(__file__).with_name("museval_v4.json")


def noise(stream, shape):
    """Uniform noise in [-1, 1): splitmix64 of the sample counter (wrapping uint64 arithmetic)."""
    n = int(np.prod(shape))
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(stream) * golden + golden
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) / 2.0 ** 53 * 2 - 1).reshape(shape)


def signals():
    """``(ref, est)``, each ``(2 sources, SECONDS * SR samples, 2 channels)``."""
    n = SECONDS * SR
    t = np.arange(n) / SR
    ref = np.stack([noise(1, (n, 2)), noise(2, (n, 2))])
    ref[1] += 0.5 * np.sin(2 * np.pi * 220 * t)[:, None]
    gain = np.repeat([1.0, 0.5, 0.8], SR)[:, None]  # a gain that changes every second
    est0 = gain * (ref[0] @ np.array([[0.9, 0.1], [0.0, 1.0]])) + 0.2 * ref[1] + 0.05 * noise(3, (n, 2))
    est1 = np.roll(ref[1], 3, axis=0) + 0.1 * ref[0] + 0.1 * noise(4, (n, 2))
    return ref, np.stack([est0, est1])


def load_museval_metrics():
    """museval.metrics without museval/__init__ (which imports musdb -> stempeg -> needs ffmpeg)."""
    spec = importlib.util.find_spec("museval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("museval is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "metrics.py"
    mod_spec = importlib.util.spec_from_file_location("_museval_metrics", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def main():
    metrics = load_museval_metrics()
    from importlib.metadata import version

    ref, est = signals()
    sdr, isr, sir, sar, _ = metrics.bss_eval(ref, est, window=SR, hop=SR, filters_len=FILTERS_LEN)
    data = {"museval": version("museval"), "sample_rate": SR, "seconds": SECONDS, "filters_len": FILTERS_LEN,
            "window": SR, "hop": SR, "signals": "tests/data/make_museval_v4.py:signals",
            "sdr": sdr.tolist(), "isr": isr.tolist(), "sir": sir.tolist(), "sar": sar.tolist()}
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT}: museval {data['museval']}, sdr {np.round(sdr, 3).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
