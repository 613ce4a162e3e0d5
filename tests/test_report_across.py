"""Cross-data-set statistics against independent implementations (rliable, scipy, autorank,
baycomp) and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from spiralmix.report.across import (
    average_ranks,
    bayesian_signed_rank,
    bayesian_verdict,
    friedman,
    iqm,
    iqm_interval,
    nemenyi_cd,
    normalise,
    paired_poi_interval,
    performance_profile,
    probability_of_improvement,
)


def random_scores(seed: int, runs: int, tasks: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(runs, tasks, generator=generator, dtype=torch.float64).numpy()


def columns(scores: np.ndarray) -> list[torch.Tensor]:
    """(runs, tasks) → one tensor of runs per task."""
    return [torch.from_numpy(scores[:, t].copy()) for t in range(scores.shape[1])]


def test_iqm_hand_computed():
    # 8 values: drop two at each end, mean of 3, 4, 5, 6.
    assert float(iqm(torch.tensor([8.0, 1, 7, 2, 6, 3, 5, 4]))) == 4.5
    # 6 values: ⌊1.5⌋ = 1 at each end.
    assert float(iqm(torch.tensor([0.0, 10, 1, 2, 3, 100]))) == 4.0


@pytest.mark.parametrize("shape", [(10, 6), (5, 3), (7, 1)])
def test_iqm_equals_rliable(shape):
    metrics = pytest.importorskip("rliable.metrics")
    scores = random_scores(1, *shape)
    mine = float(iqm(torch.from_numpy(scores).flatten()))
    assert mine == pytest.approx(metrics.aggregate_iqm(scores), abs=1e-12)


def test_iqm_interval_is_seeded_stratified_and_covers_the_estimate():
    scores = random_scores(2, 10, 6)
    tasks = columns(scores)
    low, high = iqm_interval(tasks)
    assert (low, high) == iqm_interval(tasks)  # seeded: the same sweep, the same interval
    assert low < float(iqm(torch.from_numpy(scores).flatten())) < high
    # Stratified: a task whose seeds all agree contributes exactly its value to every resample.
    constant = [torch.full((10,), 0.5, dtype=torch.float64)] * 3
    assert iqm_interval(constant) == (0.5, 0.5)


def test_unpaired_probability_of_improvement_equals_rliable():
    metrics = pytest.importorskip("rliable.metrics")
    x, y = random_scores(3, 7, 4), random_scores(4, 5, 4)  # unpaired: 7 and 5 runs
    y[:, 0] = np.round(y[:, 0], 1)
    x[:3, 0] = y[:3, 0]  # ties count ½
    mine = probability_of_improvement(columns(x), columns(y), paired=False)
    assert mine == pytest.approx(metrics.probability_of_improvement(x, y), abs=1e-12)


def test_paired_probability_of_improvement_hand_computed():
    # Task 1: x beats y on seeds 1 and 2, ties on 3, loses on 4 → (1 + 1 + ½ + 0) / 4.
    # Task 2: x beats y on both seeds → 1. Mean over tasks: (0.625 + 1) / 2.
    x = [torch.tensor([2.0, 2, 1, 0]), torch.tensor([5.0, 6])]
    y = [torch.tensor([1.0, 1, 1, 1]), torch.tensor([4.0, 5])]
    assert probability_of_improvement(x, y) == 0.8125
    # Unpaired, task 2 compares 5 and 6 with 4 and 5: 3 wins, 1 tie of 4 → 0.875.
    assert probability_of_improvement(x[1:], y[1:], paired=False) == 0.875
    # Pairing matters: x is 1 above y on every seed, but the seeds spread far more.
    xs, ys = [torch.tensor([1.0, 11, 21, 31])], [torch.tensor([0.0, 10, 20, 30])]
    assert probability_of_improvement(xs, ys) == 1.0
    assert probability_of_improvement(xs, ys, paired=False) == 10 / 16


def test_paired_interval_resamples_pairs_jointly():
    # Always ahead on its own seed: every joint resample gives 1; unpaired ones would not.
    xs, ys = [torch.tensor([1.0, 11, 21, 31])], [torch.tensor([0.0, 10, 20, 30])]
    assert paired_poi_interval(xs, ys) == (1.0, 1.0)
    x, y = columns(random_scores(5, 10, 3)), columns(random_scores(6, 10, 3))
    low, high = paired_poi_interval(x, y)
    assert 0 <= low < probability_of_improvement(x, y) < high <= 1
    assert (low, high) == paired_poi_interval(x, y)


def test_performance_profile_hand_computed():
    # rliable.library (its score_distributions) fails to import beside pandas 3; the
    # definition is the same: the share of runs scoring above τ, strictly.
    scores = torch.tensor([0.1, 0.5, 0.5, 0.9], dtype=torch.float64)
    taus = torch.tensor([0.0, 0.5, 0.89, 0.9], dtype=torch.float64)
    assert performance_profile(scores, taus).tolist() == [1.0, 0.25, 0.25, 0.0]


def test_normalise_chance_and_best():
    acc = torch.tensor([0.5, 0.75, 1.0])
    assert normalise(acc, 0.5, 1.0).tolist() == [0.0, 0.5, 1.0]
    # A loss: log 2 is chance, 0.1 the best run; a loss above chance scores below 0.
    loss = torch.tensor([0.1, math.log(2), 2 * math.log(2) - 0.1])
    assert normalise(loss, math.log(2), 0.1).tolist() == pytest.approx([1.0, 0.0, -1.0])


def test_average_ranks_and_friedman_equal_scipy():
    table = torch.tensor(
        [[0.9, 0.8, 0.7], [0.6, 0.7, 0.5], [0.9, 0.9, 0.8], [0.5, 0.4, 0.3], [0.7, 0.6, 0.6]],
        dtype=torch.float64,
    )
    # Ranks per row (1 = highest), ties averaged: hand-computed.
    expected = torch.tensor([[1, 2, 3], [2, 1, 3], [1.5, 1.5, 3], [1, 2, 3], [1, 2.5, 2.5]])
    assert torch.allclose(average_ranks(table), expected.mean(0).double())
    chi2, p = friedman(table)
    reference = scipy.stats.friedmanchisquare(*table.T.numpy())
    assert chi2 == pytest.approx(reference.statistic, rel=1e-12)
    assert p == pytest.approx(reference.pvalue, rel=1e-9)


def test_friedman_and_nemenyi_equal_autorank():
    autorank = pytest.importorskip("autorank")  # not in the dev extra (see pyproject.toml)
    import pandas

    scores = random_scores(8, 6, 4) + np.array([0.0, 0.2, 0.4, 0.6])  # 6 tasks, 4 methods
    frame = pandas.DataFrame(scores, columns=["a", "b", "c", "d"])
    result = autorank.autorank(frame, alpha=0.05, force_mode="nonparametric")
    assert result.omnibus == "friedman"
    table = torch.from_numpy(scores)
    assert friedman(table)[1] == pytest.approx(result.pvalue, rel=1e-9)
    assert nemenyi_cd(4, 6) == pytest.approx(result.cd, rel=1e-3)  # the table has 4 digits
    ranks = dict(zip(["a", "b", "c", "d"], average_ranks(table).tolist()))
    assert ranks == pytest.approx(result.rankdf["meanrank"].to_dict())


@pytest.mark.parametrize("k", range(2, 11))
def test_nemenyi_table_equals_the_studentized_range(k):
    q = scipy.stats.studentized_range.ppf(0.95, k, np.inf) / math.sqrt(2)
    assert nemenyi_cd(k, 6) == pytest.approx(q * math.sqrt(k * (k + 1) / 36), rel=1e-3)


@pytest.mark.parametrize(
    ("differences", "rope"),
    [
        ([0.02, 0.03, 0.015, 0.04, 0.025, 0.05], 0.01),  # clearly above the ROPE
        ([0.002, -0.003, 0.001, 0.004, -0.001, 0.0], 0.01),  # inside it
        ([0.02, -0.03, 0.01, 0.04, -0.02, 0.005], 0.01),  # undecided
        ([-0.2, -0.1, -0.3, 0.05, -0.15, -0.25, -0.05], 0.02),  # below
    ],
)
def test_bayesian_signed_rank_equals_baycomp(differences, rope):
    baycomp = pytest.importorskip("baycomp")  # not in the dev extra (see pyproject.toml)
    mine = bayesian_signed_rank(differences, rope)
    # baycomp's sampler is Monte-Carlo (numpy's generator, 50 000 samples): equal within noise.
    zeros = np.zeros(len(differences))
    theirs = baycomp.SignedRankTest.probs(zeros, np.array(differences), rope, random_state=0)
    assert mine == pytest.approx(theirs, abs=0.01)
    assert mine == bayesian_signed_rank(differences, rope)  # seeded


def reference_signed_rank(differences, rope, samples=50_000, seed=0):
    """baycomp's SignedRankTest written out with numpy's Dirichlet sampler: the region with
    the largest posterior mass, counted over samples (prior weight ½ at 0)."""
    z = np.concatenate([[0.0], differences])
    sums = z[:, None] + z[None, :]
    below = (sums < -2 * rope) + 0.5 * (sums == -2 * rope)
    above = (sums > 2 * rope) + 0.5 * (sums == 2 * rope)
    w = np.random.default_rng(seed).dirichlet([0.5, *[1.0] * len(differences)], samples)
    p_below = np.einsum("si,ij,sj->s", w, below, w)
    p_above = np.einsum("si,ij,sj->s", w, above, w)
    winner = np.stack([p_below, 1 - p_below - p_above, p_above]).argmax(0)
    return tuple(np.bincount(winner, minlength=3) / samples)


@pytest.mark.parametrize(
    ("differences", "rope"),
    [
        ([0.02, 0.03, 0.015, 0.04, 0.025, 0.05], 0.01),
        ([0.002, -0.003, 0.001, 0.004, -0.001, 0.0], 0.01),
        ([0.02, -0.03, 0.01, 0.04, -0.02, 0.005], 0.01),
        ([-0.2, -0.1, -0.3, 0.05, -0.15, -0.25, -0.05], 0.02),
    ],
)
def test_bayesian_signed_rank_equals_a_numpy_reference(differences, rope):
    # Monte-Carlo on both sides, different generators: equal within sampling noise.
    mine = bayesian_signed_rank(differences, rope)
    assert mine == pytest.approx(reference_signed_rank(differences, rope), abs=0.01)


def test_bayesian_verdicts_hand_computed():
    # All six differences far above the ROPE: the ROPE wins only the samples in which the
    # prior's pseudo-observation at 0 weighs more than 1/√2 (w0² > ½), nothing is below.
    worse, equivalent, better = bayesian_signed_rank([0.1] * 6, 0.01)
    assert worse == 0.0 and 0 < equivalent < 0.001 and better == 1 - equivalent
    assert bayesian_signed_rank([0.0] * 6, 0.01) == (0.0, 1.0, 0.0)
    assert bayesian_verdict(0.01, 0.02, 0.97) == "better"
    assert bayesian_verdict(0.96, 0.04, 0.0) == "worse"
    assert bayesian_verdict(0.0, 0.95, 0.05) == "practically equivalent"
    assert bayesian_verdict(0.3, 0.4, 0.3) == "undecided"
