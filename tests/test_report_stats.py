"""Paired statistics of the report against hand-computed cases and scipy."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import scipy.stats

from spiralmix.report.stats import (
    bootstrap_ci,
    holm,
    min_pairs_for,
    smallest_p,
    wilcoxon_signed_rank,
)
from spiralmix.report.verdict import too_few_seeds


def brute_force_wilcoxon(d: list[float]) -> float:
    """Two-sided exact p by enumerating all 2^n sign flips of the average ranks."""
    d = [x for x in d if x != 0]
    ranks = scipy.stats.rankdata([abs(x) for x in d])
    observed = sum(r for r, x in zip(ranks, d) if x > 0)
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in
            itertools.product([0, 1], repeat=len(d))]  # fmt: skip
    lower = sum(s <= observed + 1e-9 for s in sums) / len(sums)
    upper = sum(s >= observed - 1e-9 for s in sums) / len(sums)
    return min(1.0, 2 * min(lower, upper))


def test_wilcoxon_hand_computed_cases():
    # Six positive differences: only 1 of 64 sign patterns is as extreme on each side.
    assert wilcoxon_signed_rank([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == (2 / 64, 6)
    # Ranks 1..6, the rank-2 difference negative: W− = 2; sign patterns with W− ≤ 2 are
    # {}, {1}, {2}: 3 of 64, two-sided 6/64.
    assert wilcoxon_signed_rank([1, -2, 3, 4, 5, 6]) == (6 / 64, 6)
    # Zeros are dropped (Wilcoxon's convention): three positive pairs remain, p = 2/8.
    assert wilcoxon_signed_rank([0.0, 1.0, 2.0, 0.0, 3.0]) == (0.25, 3)
    p, n = wilcoxon_signed_rank([0.0, 0.0])
    assert math.isnan(p) and n == 0


@pytest.mark.parametrize("n", [3, 5, 6, 8, 10, 14])
def test_wilcoxon_matches_scipy_exact_without_ties(n):
    rng = random.Random(n)
    d = [rng.gauss(0.4, 1.0) for _ in range(n)]
    expected = scipy.stats.wilcoxon(d, method="exact").pvalue
    assert wilcoxon_signed_rank(d)[0] == pytest.approx(expected, rel=1e-12)


def test_wilcoxon_with_ties_is_the_exact_sign_flip_distribution():
    d = [0.1, 0.1, -0.1, 0.3, 0.3, 0.5, -0.2, 0.4]
    assert wilcoxon_signed_rank(d)[0] == pytest.approx(brute_force_wilcoxon(d), rel=1e-12)


def test_bootstrap_hand_computed_cases():
    # Constant differences: every resample has the same mean.
    assert bootstrap_ci([0.25, 0.25, 0.25]) == (0.25, 0.25)
    # {0, 1}: resample means are 0 (1/4), 0.5 (1/2) and 1 (1/4): the 2.5 % and 97.5 %
    # quantiles are 0 and 1.
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    # Seeded: the same sample gives the same interval.
    sample = [0.3, -0.1, 0.5, 0.2, 0.4, 0.1]
    assert bootstrap_ci(sample) == bootstrap_ci(sample)


def test_bootstrap_matches_scipy_percentile_interval():
    sample = [0.12, -0.05, 0.31, 0.08, 0.22, 0.17, -0.02, 0.26, 0.11, 0.05]
    ours = bootstrap_ci(sample, resamples=100_000)
    theirs = scipy.stats.bootstrap(
        (sample,), lambda x, axis: x.mean(axis), method="percentile", n_resamples=100_000,
        random_state=0,
    ).confidence_interval  # fmt: skip
    # Two Monte Carlo estimates of the same quantiles agree to about 1e-3.
    assert ours[0] == pytest.approx(theirs.low, abs=3e-3)
    assert ours[1] == pytest.approx(theirs.high, abs=3e-3)
    assert ours[0] < sum(sample) / len(sample) < ours[1]


def test_holm_hand_computed():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 → monotone 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.01, math.nan, 0.02])  # NaN: not a test, not counted in m
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02)
    assert math.isnan(adjusted[1])


def test_too_few_seeds_for_significance():
    # Two-sided exact Wilcoxon: 5 pairs give at best 2/32 = 0.0625, 6 pairs 2/64.
    assert smallest_p(5) == 0.0625 and smallest_p(6) == 0.03125
    assert min_pairs_for(0.05) == 6
    # Holm over 5 regularizers multiplies the smallest p by 5: 10/2^n < 0.05 needs n = 8.
    assert min_pairs_for(0.05, comparisons=5) == 8
    message = too_few_seeds(5)
    assert "With 5 paired seeds no difference can be significant" in message
    assert "0.0625" in message and "at least 6 seeds" in message
    assert too_few_seeds(6) is None
    assert "at least 8 seeds" in too_few_seeds(6, comparisons=5)
    assert too_few_seeds(8, comparisons=5) is None
