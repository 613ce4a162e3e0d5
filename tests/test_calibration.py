"""Tests for spiralmix.calibration: ECE as torchmetrics bins it, adaptive, maximum and
class-wise ECE, the signed gap, and temperature scaling."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

from spiralmix import calibration, metrics


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def predictions(E: int, N: int, K: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (E, N) for K = 2, (E, N, K) otherwise, with some saturated at exactly 1,
    and labels (E, N)."""
    g = gen(seed)
    logits = 3 * torch.randn(E, N, *(() if K == 2 else (K,)), generator=g)
    logits[:, :5] *= 100  # confidence exactly 1.0 in float32: torchmetrics' extra bin
    y = torch.randint(K, (E, N), generator=g).float()
    return metrics.probabilities(logits), y


@pytest.mark.parametrize("K", [2, 3, 5])
@pytest.mark.parametrize("norm", ["l1", "max"])
def test_ece_and_mce_equal_torchmetrics_multiclass(K, norm):
    p, y = predictions(3, 400, K)
    ours = (calibration.ece if norm == "l1" else calibration.mce)(p, y, 15)
    columns = metrics.two_columns(p) if K == 2 else p
    for e in range(3):
        reference = MulticlassCalibrationError(num_classes=K, n_bins=15, norm=norm)
        expected = reference(columns[e], y[e].long())
        torch.testing.assert_close(ours[e], expected, atol=1e-6, rtol=0)


def test_classwise_ece_is_torchmetrics_binary_at_two_classes_and_its_mean_form():
    p, y = predictions(3, 400, 2, seed=1)
    ours = calibration.classwise_ece(p, y)
    for e in range(3):
        expected = BinaryCalibrationError(n_bins=15, norm="l1")(p[e], y[e].long())
        torch.testing.assert_close(ours[e], expected, atol=1e-6, rtol=0)
    # The K-class definition on [1 − p, p] gives the same (no point on a bin edge here).
    torch.testing.assert_close(calibration.classwise_ece(metrics.two_columns(p), y), ours)


def test_classwise_ece_averages_each_class_against_torchmetrics_binary():
    p, y = predictions(2, 300, 4, seed=2)
    expected = torch.stack([
        torch.stack([BinaryCalibrationError(n_bins=15)(p[e, :, k], (y[e] == k).long())
                     for k in range(4)]).mean()
        for e in range(2)
    ])  # fmt: skip
    torch.testing.assert_close(calibration.classwise_ece(p, y), expected, atol=1e-6, rtol=0)


def test_literature_ece_differs_from_the_one_binned_over_chance_to_one():
    p, y = predictions(4, 500, 2, seed=3)
    assert not torch.allclose(calibration.ece(p, y), metrics.expected_calibration_error(p, y))


def test_adaptive_ece_by_hand():
    # Six points in three bins of two, sorted by confidence: (0.6, 0.7), (0.8, 0.8), (0.9, 1.0).
    confidence = torch.tensor([[0.8, 0.6, 1.0, 0.7, 0.9, 0.8]])
    correct = torch.tensor([[1.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    p = confidence  # binary p >= 0.5: the top label is class 1 and its confidence is p
    y = correct
    # Bins: conf 0.65 acc 0.5; conf 0.8 acc 0.5; conf 0.95 acc 1.
    expected = (0.15 + 0.3 + 0.05) / 3
    torch.testing.assert_close(
        calibration.adaptive_ece(p, y, n_bins=3), torch.tensor([expected]), atol=1e-6, rtol=0
    )


def test_adaptive_bins_hold_equal_mass_and_vanish_for_a_calibrated_predictor():
    # 100 points per confidence c in {0.6, 0.7, 0.8, 0.9}, correct for exactly c of them.
    conf = torch.tensor([0.6, 0.7, 0.8, 0.9]).repeat_interleave(100)
    correct = torch.cat([(torch.arange(100) < 100 * c).float() for c in (0.6, 0.7, 0.8, 0.9)])
    p, y = conf.unsqueeze(0), correct.unsqueeze(0)
    assert calibration.adaptive_ece(p, y, n_bins=4).item() < 1e-6
    assert calibration.ece(p, y).item() < 1e-6
    assert calibration.adaptive_ece(p, 1 - y, n_bins=4).item() > 0.4  # always wrong: far off


def test_confidence_gap_signs():
    p, y = predictions(2, 300, 3, seed=4)
    gap = calibration.confidence_gap(p, y)
    confidence, correct, _ = metrics.top_label(p, y)
    torch.testing.assert_close(gap, confidence.mean(-1) - correct.mean(-1))
    # Labels drawn at random: a confident predictor is overconfident.
    assert (gap > 0.2).all()
    binary, yb = predictions(2, 300, 2, seed=4)
    torch.testing.assert_close(
        calibration.confidence_gap(binary, yb),
        calibration.confidence_gap(metrics.two_columns(binary), yb),
    )


def tempered(K: int, T: float, N: int = 8000, seed: int = 5):
    """Logits of a model that is T times too confident, (1, N) or (1, N, K), and labels drawn
    from the true (untempered) probabilities."""
    g = gen(seed)
    true = 1.5 * torch.randn(1, N, *(() if K == 2 else (K,)), generator=g)
    p = metrics.probabilities(true)
    if K == 2:
        y = (torch.rand(1, N, generator=g) < p).float()
    else:
        y = torch.multinomial(p[0], 1, generator=g).T.float()
    return T * true, y


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("T", [0.5, 3.0])
def test_temperature_scaling_recovers_the_temperature_of_a_tempered_model(K, T):
    logits, y = tempered(K, T)
    fitted = calibration.fit_temperature(logits, y)
    assert abs(fitted.item() / T - 1) < 0.08, fitted
    # Scaling undoes the tempering: calibrated again, and the NLL drops.
    scaled = calibration.scale(logits, fitted)
    assert calibration.ece(metrics.probabilities(scaled), y) < 0.02
    assert metrics.nll(scaled, y) < metrics.nll(logits, y)


def test_fitted_temperature_is_the_minimum_of_a_fine_grid_per_member():
    logits, y = tempered(3, 2.0, N=500)
    logits = torch.cat([logits, 0.3 * logits, 5 * logits])  # three members
    y = y.expand(3, -1)
    fitted = calibration.fit_temperature(logits, y)
    grid = torch.logspace(-2, 2, 2001, dtype=torch.float64)  # log T steps of 0.0046
    for e in range(3):
        z, labels = logits[e].double(), y[e].expand(len(grid), -1)
        losses = metrics.nll(z / grid.view(-1, 1, 1), labels)  # (grid,): one per temperature
        best = metrics.nll(z[None] / fitted[e], y[e : e + 1])[0]
        assert best <= losses.min() + 1e-12
        assert abs(fitted[e].log() - grid[losses.argmin()].log()) < 5e-3


def test_binary_temperature_equals_two_class_softmax_temperature():
    logits, y = tempered(2, 2.0, N=400)
    two = torch.stack([torch.zeros_like(logits), logits], -1)  # softmax([0, z]) = sigmoid(z)
    torch.testing.assert_close(
        calibration.fit_temperature(logits, y), calibration.fit_temperature(two, y)
    )


def test_temperature_reaches_its_bound_and_is_nan_for_a_diverged_member():
    # Every point right with a large margin: the NLL keeps falling as T → 0.
    logits = torch.tensor([[4.0, -4.0, 5.0, -3.0], [1.0, 2.0, float("nan"), 0.0]])
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    T = calibration.fit_temperature(logits, y, bounds=(0.01, 100.0))
    assert abs(T[0].item() - 0.01) < 1e-9 and T[1].isnan()
