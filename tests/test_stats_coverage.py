"""Coverage of the paired interval of sepkit.stats on simulated grids of known truth, 2, 3 and 5 seeds.

Where the seeds vary more than the files (the case of most claims of a small grid), a 95% interval
must cover the true difference in at least 95% of repeats. The former two-way bootstrap (seeds
resampled like files, deviations scaled by sqrt(S/(S-1))) covered 79% / 88% / 91% here (2 / 3 / 5
seeds, 1500 repeats each); the t-based seed term 98% / 97% / 96%.

Tolerance: with R repeats the measured coverage of an interval that truly covers 95% has a binomial
standard error sqrt(0.95 * 0.05 / R) = 0.0069 for R = 1000; the test asks for at least 0.95 - 3
standard errors (0.929), which a correct interval fails with probability ~0.1%, and at most 0.995
(an interval that always covers says nothing). Everything is seeded, so the result is the same on
every run.
"""
import math

import numpy as np
import pytest

from sepkit import stats

R = 1000
TRUE = 0.2


def simulate(rng, seeds, files=30, file_sd=3.0, inter_sd=0.1, seed_sd=0.5, noise_sd=0.1):
    """A and B on shared files: E[A - B] = TRUE over files and seeds; the seeds dominate the spread."""
    f = rng.normal(0, file_sd, files)

    def system(mu):
        return (mu + f + rng.normal(0, inter_sd, files) + rng.normal(0, seed_sd, (seeds, 1))
                + rng.normal(0, noise_sd, (seeds, files)))

    return system(TRUE), system(0.0), rng.uniform(2, 10, files)


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_interval_covers_the_truth_with_few_seeds(seeds):
    rng = np.random.default_rng(1000 + seeds)
    hits = false_reversed = 0
    for k in range(R):
        a, b, w = simulate(rng, seeds)
        r = stats.paired_bootstrap(a, b, w, n_boot=200, seed=k)
        hits += r["lo"] <= TRUE <= r["hi"]
        false_reversed += r["hi"] < 0
    low = 0.95 - 3 * math.sqrt(0.95 * 0.05 / R)
    assert low <= hits / R <= 0.995, f"{seeds} seeds: coverage {hits / R:.3f}, want [{low:.3f}, 0.995]"
    assert false_reversed / R <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / R), false_reversed
