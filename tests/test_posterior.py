"""Tests for spiralmix.posterior: each generator's true p*(y | x), against Monte-Carlo
samples of the generator and against densities computed from its own noise-free points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spiralmix import datasets
from spiralmix.posterior import true_posterior

CASES = {
    "spirals": {"_target_": "spiralmix.datasets.spirals", "n_samples": 1000, "noise": 0.2,
                "n_cycles": 2, "n_classes": 2},
    "spirals3": {"_target_": "spiralmix.datasets.spirals", "n_samples": 600, "noise": 0.15,
                 "n_cycles": 1.5, "n_classes": 3},
    "moons": {"_target_": "spiralmix.datasets.moons", "n_samples": 1000, "noise": 0.15},
    "circles": {"_target_": "spiralmix.datasets.circles", "n_samples": 1000, "noise": 0.08,
                "factor": 0.5},
    "checkerboard": {"_target_": "spiralmix.datasets.checkerboard", "n_samples": 1000,
                     "noise": 0.1, "board_size": 3},
    "blobs": {"_target_": "spiralmix.datasets.blobs", "n_samples": 1200, "noise": 0.3,
              "n_classes": 3, "spread": 0.8},
}  # fmt: skip


def columns(p: torch.Tensor) -> torch.Tensor:
    return torch.stack([1 - p, p], -1) if p.ndim == 1 else p


def worst_deviation(keys: dict, p_star: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
    """The largest |class frequency − mean p*| in standard errors over groups of >= 500
    points: the cells of a 5 × 5 grid (where p* puts each class) and, per class k, ten
    equal-width bins of p*_k (how sure p* is). Below 5 when p* is the generator's posterior."""
    P = columns(p_star)
    one_hot = F.one_hot(y.long(), P.shape[-1]).double()
    lo, hi = X.amin(0), X.amax(0)
    index = ((X - lo) / (hi - lo) * 5).long().clamp(max=4)
    groups = [index[:, 0] * 5 + index[:, 1]]
    groups += [(P[:, k] * 10).long().clamp(max=9) + 100 * (k + 1) for k in range(P.shape[-1])]
    worst = 0.0
    for group in groups:
        for g in group.unique():
            inside = group == g
            n = int(inside.sum())
            if n < 500:
                continue
            deviation = (one_hot[inside] - P[inside]).mean(0).abs()
            se = (P[inside] * (1 - P[inside])).sum(0).sqrt() / n
            worst = max(worst, float((deviation / se.clamp_min(1e-3 / math.sqrt(n))).max()))
    return worst


def samples(keys: dict, n_sets: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    data = [datasets.generate(keys, torch.Generator().manual_seed(s)) for s in range(n_sets)]
    return torch.cat([X for X, _ in data]), torch.cat([y for _, y in data])


@pytest.mark.parametrize("name", CASES)
def test_posterior_matches_monte_carlo_samples_of_the_generator(name):
    keys = CASES[name]
    X, y = samples(keys)
    p_star = true_posterior(keys, X)
    K = keys.get("n_classes", 2)
    assert p_star.shape == ((len(X),) if K == 2 else (len(X), K))
    assert p_star.dtype == torch.float64
    assert worst_deviation(keys, p_star, X, y) < 5
    # The check has power: the posterior of twice the noise fails it.
    wrong = true_posterior({**keys, "noise": 2 * keys["noise"] + 0.2}, X)
    assert worst_deviation(keys, wrong, X, y) > 5


@pytest.mark.parametrize("name", ["spirals", "spirals3", "moons", "circles"])
def test_curve_posteriors_are_the_noise_convolved_with_the_generators_own_points(name):
    """The generator without noise gives its nodes; Gaussian sums over them give p*."""
    keys = CASES[name]
    nodes, labels = datasets.generate({**keys, "noise": 0.0}, torch.Generator().manual_seed(0))
    nodes, labels = nodes.double().numpy(), labels.numpy()
    X = (torch.rand(200, 2, generator=torch.Generator().manual_seed(1)) * 4 - 2).double()
    sigma = keys["noise"]
    d2 = ((X.numpy()[:, None, :] - nodes[None]) ** 2).sum(-1)  # (200, nodes)
    log_terms = -d2 / (2 * sigma**2)
    K = keys.get("n_classes", 2)
    shift = log_terms.max(1, keepdims=True)
    joint = np.stack([np.exp(log_terms - shift)[:, labels == c].sum(1) for c in range(K)], -1)
    expected = joint / joint.sum(1, keepdims=True)
    ours = columns(true_posterior(keys, X)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_checkerboard_posterior_equals_integrating_the_noise_over_each_cell():
    keys = CASES["checkerboard"]
    B, sigma = keys["board_size"], keys["noise"]
    X = np.array([[0.0, 0.0], [0.33, -0.2], [-1.1, 0.95], [0.7, 0.66], [1.4, -1.3]])
    # Midpoint rule, 300 × 300 per cell: the density of each class at X.
    width = 2 / B
    u = (np.arange(300) + 0.5) / 300 * width
    density = np.zeros((len(X), 2))
    for i in range(B):
        for j in range(B):
            gx = np.exp(-((X[:, :1] - (i * width - 1 + u)) ** 2) / (2 * sigma**2)).mean(1)
            gy = np.exp(-((X[:, 1:] - (j * width - 1 + u)) ** 2) / (2 * sigma**2)).mean(1)
            n_cells = sum((a + b) % 2 == (i + j) % 2 for a in range(B) for b in range(B))
            density[:, (i + j) % 2] += gx * gy / n_cells
    expected = density[:, 1] / density.sum(1)
    ours = true_posterior(keys, torch.tensor(X)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_blobs_posterior_in_closed_form_and_far_from_the_data():
    keys = {**CASES["blobs"], "n_classes": 2}
    # Centres (2, 0) and (-2, 0): logit of class 1 = (|x − μ0|² − |x − μ1|²) / 2s² = −8x / 2s².
    X = torch.tensor([[0.0, 1.0], [1.0, 0.0], [300.0, 0.0]], dtype=torch.float64)
    s2 = keys["spread"] ** 2 + keys["noise"] ** 2
    expected = torch.sigmoid(-torch.tensor([0.0, 8 / (2 * s2), 8 * 300 / (2 * s2)]))
    torch.testing.assert_close(true_posterior(keys, X), expected.double(), atol=1e-6, rtol=0)
    # Far from the data the log-space sums still give the nearest curve's class.
    far = torch.tensor([[0.0, 40.0], [50.0, 50.0]], dtype=torch.float64)
    assert torch.isfinite(true_posterior(CASES["spirals"], far)).all()
    assert torch.isfinite(true_posterior(CASES["checkerboard"], far)).all()


@pytest.mark.parametrize("name", ["spirals", "moons", "circles", "checkerboard"])
@pytest.mark.parametrize("noise", [0.0, 2e-207], ids=["zero", "below_double_precision"])
def test_noise_free_curves_and_boards_have_no_posterior(name, noise):
    # 2e-207: the squared noise underflows to 0 in double precision, so every density does.
    X = torch.tensor([[0.3, -0.2], [1.0, 1.0], [5.0, 5.0]])
    assert true_posterior({**CASES[name], "noise": noise}, X) is None


def test_noise_free_blobs_still_have_one_and_points_keep_their_member_axis():
    keys = {**CASES["blobs"], "noise": 0.0}
    p = true_posterior(keys, torch.zeros(4, 7, 2))
    assert p.shape == (4, 7, 3)
    torch.testing.assert_close(p, torch.full((4, 7, 3), 1 / 3, dtype=torch.float64))


def test_a_generator_without_a_known_posterior_gives_none():
    keys = {"_target_": "math.hypot", "noise": 0.1}
    assert true_posterior(keys, torch.zeros(3, 2)) is None
