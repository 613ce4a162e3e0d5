"""Tests for spiralmix.metrics: accuracy, calibration, uncertainty and flattening measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spiralmix.metrics import (
    accuracy,
    binary_nll,
    brier_score,
    class_singular_values,
    effective_rank,
    expected_calibration_error,
    mean_confidence,
    n_significant,
    reliability,
    ring,
    uncertain_fraction,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- calibration -------------------------------------------------------------------------------


def calibrated(n_bins: int, per_bin: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A perfectly calibrated predictor: in bin i, confidence c_i (the bin centre) and accuracy
    exactly c_i. ``per_bin`` must make c_i · per_bin an integer. flip predicts class 0 instead."""
    ps, ys = [], []
    for i in range(n_bins):
        c = 0.5 + (i + 0.5) / (2 * n_bins)
        n_correct = round(c * per_bin)
        assert n_correct == pytest.approx(c * per_bin)
        predicted = 0.0 if flip else 1.0
        y = torch.full((per_bin,), predicted)
        y[n_correct:] = 1 - predicted
        ps.append(torch.full((per_bin,), 1 - c if flip else c))
        ys.append(y)
    return torch.cat(ps), torch.cat(ys)


@pytest.mark.parametrize(("n_bins", "per_bin"), [(15, 60), (10, 40)])
def test_ece_of_a_calibrated_predictor_is_zero(n_bins, per_bin):
    p1, y1 = calibrated(n_bins, per_bin)
    p0, y0 = calibrated(n_bins, per_bin, flip=True)
    p, y = torch.stack([p1, p0]), torch.stack([y1, y0])  # two members: (2, n_bins · per_bin)
    ece = expected_calibration_error(p, y, n_bins)
    assert ece.shape == (2,)
    assert torch.all(ece.abs() < 1e-6)
    stats = reliability(p, y, n_bins)
    assert torch.all(stats["count"] == per_bin)
    assert torch.allclose(stats["accuracy"], stats["confidence"], atol=1e-6)


def test_ece_of_a_confidently_wrong_predictor_is_one():
    y = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0]])
    p = 1 - y  # p = 1 for y = 0, p = 0 for y = 1
    assert expected_calibration_error(p, y).item() == pytest.approx(1.0)


def test_ece_of_an_overconfident_predictor():
    # Confidence 0.8 everywhere, 70% correct: ECE = |0.7 − 0.8| = 0.1.
    p = torch.full((1, 100), 0.8)
    y = torch.cat([torch.ones(70), torch.zeros(30)]).unsqueeze(0)
    assert expected_calibration_error(p, y).item() == pytest.approx(0.1, abs=1e-6)


def test_reliability_empty_bins_and_counts():
    p = torch.tensor([[0.55, 0.95, 0.05, 1.0, 0.5]])
    y = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0]])
    stats = reliability(p, y, n_bins=5)
    assert stats["count"].sum() == 5
    # Confidences 0.55, 0.95, 0.95, 1.0, 0.5 in bins of width 0.1 starting at 0.5.
    assert stats["count"][0].tolist() == [2, 0, 0, 0, 3]
    assert torch.isnan(stats["confidence"][0, 1])
    assert stats["confidence"][0, 4].item() == pytest.approx((0.95 + 0.95 + 1.0) / 3)


# --- proper scores and accuracy ----------------------------------------------------------------


def test_brier_score_known_cases():
    y = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert brier_score(y, y).item() == 0.0
    assert brier_score(1 - y, y).item() == 1.0
    assert brier_score(torch.full_like(y, 0.5), y).item() == 0.25
    assert brier_score(torch.tensor([[0.9, 0.2]]), torch.tensor([[1.0, 0.0]])).item() == (
        pytest.approx((0.01 + 0.04) / 2)
    )


def test_binary_nll_is_minus_log_sigmoid():
    z = torch.tensor([[-3.0, -0.5, 0.0, 0.7, 4.0], [30.0, -30.0, 1.0, 2.0, -2.0]])
    y = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0, 1.0]])
    nll = binary_nll(z, y)
    assert nll.shape == (2,)
    for e in range(2):
        # −log σ(z) = log(1 + e^−z) for y = 1, −log(1 − σ(z)) = log(1 + e^z) for y = 0.
        terms = [
            math.log1p(math.exp(-zi)) if yi == 1 else math.log1p(math.exp(zi))
            for zi, yi in zip(z[e].tolist(), y[e].tolist())
        ]
        assert nll[e].item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_binary_nll_of_soft_targets_is_cross_entropy():
    z, y = torch.tensor([[0.4]]), torch.tensor([[0.3]])
    sig = 1 / (1 + math.exp(-0.4))
    expected = -(0.3 * math.log(sig) + 0.7 * math.log(1 - sig))
    assert binary_nll(z, y).item() == pytest.approx(expected, rel=1e-6)


def test_accuracy():
    p = torch.tensor([[0.9, 0.2, 0.6, 0.4], [0.5, 0.51, 0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
    assert accuracy(p, y).tolist() == [0.5, 1.0]  # p = 0.5 predicts class 0


# --- uncertainty -------------------------------------------------------------------------------


def test_uncertain_fraction():
    assert uncertain_fraction(torch.full((2, 50), 0.5)).tolist() == [1.0, 1.0]
    assert uncertain_fraction(torch.tensor([[0.0, 1.0, 1.0, 0.0]])).item() == 0.0
    p = torch.tensor([[0.1, 0.25, 0.5, 0.75, 0.9]])
    assert uncertain_fraction(p).item() == pytest.approx(3 / 5)  # bounds are inclusive


def test_mean_confidence():
    assert mean_confidence(torch.tensor([[0.2, 0.9]])).item() == pytest.approx(0.85)
    assert mean_confidence(torch.full((1, 4), 0.5)).item() == 0.5
    assert mean_confidence(torch.tensor([[0.0, 1.0]])).item() == 1.0


@pytest.mark.parametrize("n", [1, 7, 100, 1000, 1001])
def test_ring_points(n):
    points = ring(n, r_min=2.5, r_max=3.5)
    assert points.shape == (n, 2)
    r = points.norm(dim=1)
    assert torch.all((r >= 2.5 - 1e-5) & (r <= 3.5 + 1e-5))
    assert torch.equal(points, ring(n, r_min=2.5, r_max=3.5))


def test_ring_spans_the_radius_range_and_all_angles():
    points = ring(1000, r_min=1.0, r_max=2.0)
    r = points.norm(dim=1)
    assert r.min().item() == pytest.approx(1.0, abs=1e-5)
    assert r.max().item() == pytest.approx(2.0, abs=1e-5)
    angles = torch.atan2(points[:, 1], points[:, 0])
    counts = torch.histc(angles, bins=8, min=-math.pi, max=math.pi)
    assert torch.all(counts > 0.5 * 1000 / 8)
    assert len(torch.unique(points, dim=0)) == 1000


# --- flattening --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def one_thread():
    """svdvals of a (200, 8) matrix takes ~0.1 s with 2 threads on a busy machine, ~0.1 ms on 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def labels(E: int, n_per_class: int) -> torch.Tensor:
    return torch.arange(2 * n_per_class).remainder(2).float().expand(E, -1)


def test_rank_one_class_representations_have_one_significant_direction():
    E, n_c, D = 2, 100, 8
    y = labels(E, n_c)
    direction = torch.randn(E, 1, D, generator=gen(0))
    offset = torch.randn(E, 1, D, generator=gen(1)) * 5 + 3 * y.unsqueeze(-1)
    h = torch.randn(E, 2 * n_c, 1, generator=gen(2)) * direction + offset
    sv = class_singular_values(h, y)
    assert sv.shape == (E, 2, D)
    assert torch.all(n_significant(sv) == 1)
    assert torch.all(sv[..., 1] < 1e-4 * sv[..., 0])


def test_isotropic_representations_have_all_directions_significant():
    E, n_c, D = 3, 200, 8
    h = torch.randn(E, 2 * n_c, D, generator=gen(3))
    sv = class_singular_values(h, labels(E, n_c))
    assert sv.shape == (E, 2, D)
    assert torch.all(n_significant(sv, 0.1) == D)
    assert torch.all(sv[..., :-1] >= sv[..., 1:])  # descending


@pytest.mark.parametrize(("n_c", "D", "k"), [(5, 8, 5), (20, 8, 8), (8, 8, 8)])
def test_class_singular_values_shape(n_c, D, k):
    h = torch.randn(4, 2 * n_c, D, generator=gen(4))
    assert class_singular_values(h, labels(4, n_c)).shape == (4, 2, k)


def test_class_singular_values_match_numpy_with_per_member_labels():
    """Members whose classes sit at different positions: each member's own rows are used."""
    E, n_c, D = 3, 10, 4
    h = torch.randn(E, 2 * n_c, D, generator=gen(5))
    y = torch.stack(
        [labels(1, n_c)[0][torch.randperm(2 * n_c, generator=gen(e))] for e in range(E)]
    )
    sv = class_singular_values(h, y)
    for e in range(E):
        for c in (0, 1):
            hc = h[e][y[e] == c].double().numpy()
            expected = np.linalg.svd(hc - hc.mean(0), compute_uv=False)
            assert np.allclose(sv[e, c].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_n_significant():
    sv = torch.tensor([[10.0, 2.0, 0.5, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert n_significant(sv, 0.1).tolist() == [2.0, 4.0]
    assert n_significant(sv, 0.01).tolist() == [3.0, 4.0]


def test_effective_rank_by_hand():
    # Two equal values: entropy log 2 → 2. One value: 1. [3, 1]: p = (3/4, 1/4),
    # H = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.5623 → exp = 1.7548.
    sv = torch.tensor([[1.0, 1.0, 0.0], [5.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    expected = [2.0, 1.0, math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))]
    assert effective_rank(sv).tolist() == pytest.approx(expected, rel=1e-6)
    assert effective_rank(torch.ones(2, 7)).tolist() == pytest.approx([7.0, 7.0])
    # No direction at all, or a diverged member: no rank rather than a made-up one.
    assert effective_rank(torch.zeros(3)).isnan()
    assert effective_rank(torch.tensor([torch.nan, 1.0])).isnan()
