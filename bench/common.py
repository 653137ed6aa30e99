"""Helpers for the benchmarks: timing with warm-up, and the ratio line every benchmark prints."""
import time

import torch


def timeit(fn, repeat=5, warmup=1):
    """Median wall time in seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def report(name, ours, base, target=None, unit="s"):
    """Print one line: sepkit time, baseline time measured in the same run, and their ratio."""
    ratio = ours / base
    verdict = "" if target is None else ("  OK" if ratio <= target else f"  ABOVE TARGET {target}")
    print(f"{name:<48s} sepkit {ours:9.4f} {unit}   baseline {base:9.4f} {unit}   ratio {ratio:5.2f}{verdict}", flush=True)
    return ratio


def setup_threads(n=2):
    torch.set_num_threads(n)
