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
    nll,
    probabilities,
    reliability,
    ring,
    soft_cross_entropy,
    training_loss,
    two_columns,
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


# --- K classes: each definition equals the binary one at K = 2 ---------------------------------


def binary_case(seed: int, E: int = 3, N: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(E, N, generator=gen(seed)) * 3
    y = (torch.rand(E, N, generator=gen(seed + 1)) > 0.5).float()
    return z, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_class_metrics_at_k_2_equal_the_binary_ones(seed):
    z, y = binary_case(seed)
    p = torch.sigmoid(z)
    p2 = two_columns(p)  # (E, N, 2)
    logits2 = torch.stack([torch.zeros_like(z), z], -1)  # softmax([0, z]) = [1 − σ(z), σ(z)]
    assert torch.allclose(probabilities(logits2), p2, atol=1e-6)
    assert torch.equal(accuracy(p2, y), accuracy(p, y))
    torch.testing.assert_close(brier_score(p2, y), brier_score(p, y))
    torch.testing.assert_close(nll(logits2, y), binary_nll(z, y))
    torch.testing.assert_close(nll(z, y), binary_nll(z, y))
    soft = torch.rand(3, 400, generator=gen(seed + 2))
    torch.testing.assert_close(soft_cross_entropy(logits2, two_columns(soft)), binary_nll(z, soft))
    torch.testing.assert_close(
        expected_calibration_error(p2, y, 15), expected_calibration_error(p, y, 15)
    )
    stats, stats2 = reliability(p, y, 10), reliability(p2, y, 10)
    assert torch.equal(stats["count"], stats2["count"])
    assert torch.equal(stats["edges"], stats2["edges"])
    torch.testing.assert_close(uncertain_fraction(p2), uncertain_fraction(p))
    torch.testing.assert_close(mean_confidence(p2), mean_confidence(p))


def test_k_class_nll_matches_scikit_learn():
    from sklearn.metrics import log_loss

    logits = torch.randn(2, 50, 4, generator=gen(7)) * 2
    y = torch.randint(0, 4, (2, 50), generator=gen(8)).float()
    p = torch.softmax(logits.double(), -1)
    for e in range(2):
        expected = log_loss(y[e].numpy(), p[e].numpy(), labels=[0, 1, 2, 3])
        assert nll(logits, y)[e].item() == pytest.approx(expected, rel=1e-5)


def test_k_class_brier_accuracy_and_confidence_by_hand():
    p = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [1 / 3, 1 / 3, 1 / 3]]])
    y = torch.tensor([[0.0, 1.0, 2.0]])
    # ½ Σ (p − onehot)²: (0.09 + 0.04 + 0.01) / 2, (0.01 + 0.49 + 0.36) / 2, (4/9 + 1/9 + 1/9) / 2.
    expected = ((0.14 + 0.86 + 6 / 9) / 2) / 3
    assert brier_score(p, y).item() == pytest.approx(expected, rel=1e-6)
    assert accuracy(p, y).item() == pytest.approx(1 / 3)  # ties go to the first class
    assert mean_confidence(p).item() == pytest.approx((0.7 + 0.6 + 1 / 3) / 3)
    # Uncertain: top-label confidence <= (1 + 1/3) / 2 = 2/3: the second and third points.
    assert uncertain_fraction(p).item() == pytest.approx(2 / 3)


def test_k_class_ece_is_top_label_over_bins_from_chance():
    # Top-label confidence 0.6 everywhere, 50% right: ECE = 0.1; bins cover [1/4, 1].
    p = torch.tensor([0.6, 0.2, 0.1, 0.1]).expand(1, 100, 4)
    y = torch.cat([torch.zeros(50), torch.ones(50)]).unsqueeze(0)
    stats = reliability(p, y, n_bins=3)
    assert stats["edges"].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert stats["count"].tolist() == [[0, 100, 0]]
    assert expected_calibration_error(p, y, 3).item() == pytest.approx(0.1, abs=1e-6)


def test_class_singular_values_for_every_class_match_numpy():
    E, K, n_c, D = 2, 4, 12, 5
    h = torch.randn(E, K * n_c, D, generator=gen(9))
    y = torch.arange(K).repeat(n_c).float().expand(E, -1)
    sv = class_singular_values(h, y, K)
    assert sv.shape == (E, K, D)
    for e in range(E):
        for c in range(K):
            hc = h[e][y[e] == c].double().numpy()
            expected = np.linalg.svd(hc - hc.mean(0), compute_uv=False)
            assert np.allclose(sv[e, c].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_ring_around_a_centre():
    points = ring(500, r_min=2.0, r_max=2.8, center=(0.5, -1.0))
    r = (points - torch.tensor([0.5, -1.0])).norm(dim=1)
    assert torch.all((r >= 2.0 - 1e-5) & (r <= 2.8 + 1e-5))
    assert torch.equal(ring(300), ring(300, 2.5, 3.5, (0.0, 0.0)))


def test_training_loss_is_bce_for_two_classes_and_soft_cross_entropy_for_more():
    assert training_loss(2) is binary_nll
    assert training_loss(3) is soft_cross_entropy
    logits = torch.randn(2, 10, 3, generator=gen(10))
    targets = torch.softmax(torch.randn(2, 10, 3, generator=gen(11)), -1)
    expected = -(targets * torch.log_softmax(logits, -1)).sum(-1).mean(-1)
    torch.testing.assert_close(soft_cross_entropy(logits, targets), expected)
