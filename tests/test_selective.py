"""Tests for spiralmix.selective: AURC, far-from-data AUROC and FPR at 95 % TPR, entropy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from spiralmix import selective


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def scores(E: int, n: int, shift: float, seed: int, levels: int | None = None) -> torch.Tensor:
    """(E, n) scores; rounded to ``levels`` values per unit, so that many tie."""
    s = torch.randn(E, n, generator=gen(seed)) + shift
    return s if levels is None else (s * levels).round() / levels


@pytest.mark.parametrize("levels", [None, 4, 1])
def test_auroc_equals_scikit_learn_with_and_without_ties(levels):
    pos, neg = scores(3, 300, 1.0, 0, levels), scores(3, 500, 0.0, 1, levels)
    ours = selective.auroc(pos, neg)
    for e in range(3):
        truth = np.r_[np.ones(300), np.zeros(500)]
        expected = roc_auc_score(truth, np.r_[pos[e].numpy(), neg[e].numpy()])
        assert ours[e].item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("levels", [None, 4, 1])
def test_fpr_at_95_tpr_equals_scikit_learn_roc_curve(levels):
    pos, neg = scores(3, 900, 1.5, 2, levels), scores(3, 1000, 0.0, 3, levels)
    ours = selective.fpr_at_tpr(pos, neg, 0.95)
    for e in range(3):
        truth = np.r_[np.ones(900), np.zeros(1000)]
        fpr, tpr, _ = roc_curve(
            truth, np.r_[pos[e].numpy(), neg[e].numpy()], drop_intermediate=False
        )
        assert ours[e].item() == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


def test_far_from_data_measures_are_nan_for_a_diverged_member():
    pos, neg = scores(2, 20, 1.0, 4), scores(2, 30, 0.0, 5)
    pos[1, 3] = math.nan
    assert selective.auroc(pos, neg)[1].isnan() and selective.fpr_at_tpr(pos, neg)[1].isnan()
    assert selective.auroc(pos, neg)[0].isfinite()


def brute_force_aurc(confidence: list[float], correct: list[int]) -> float:
    """The mean over every order of tied points of the area under the risk–coverage curve."""
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])
    groups = [list(g) for _, g in itertools.groupby(order, key=lambda i: confidence[i])]
    areas = []
    for arrangement in itertools.product(*[itertools.permutations(g) for g in groups]):
        ranked = [i for g in arrangement for i in g]
        errors = np.cumsum([1 - correct[i] for i in ranked])
        areas.append(np.mean(errors / np.arange(1, len(ranked) + 1)))
    return float(np.mean(areas))


def test_aurc_by_hand_and_over_every_order_of_ties():
    # No ties: risks 0/1, 1/2, 1/3, 2/4 for correct, wrong, correct, wrong from the top.
    confidence = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    correct = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    expected = (0 + 1 / 2 + 1 / 3 + 2 / 4) / 4
    assert selective.aurc(confidence, correct).item() == pytest.approx(expected, abs=1e-12)
    conf = [0.9, 0.7, 0.7, 0.7, 0.5, 0.5, 0.3]
    right = [1, 0, 1, 1, 0, 1, 0]
    ours = selective.aurc(torch.tensor([conf]), torch.tensor([right], dtype=torch.float32))
    assert ours.item() == pytest.approx(brute_force_aurc(conf, right), abs=1e-12)


def test_aurc_is_lowest_when_the_errors_are_the_least_confident():
    correct = (torch.arange(100) >= 20).float().unsqueeze(0)  # 20 errors
    ranked = torch.linspace(0, 1, 100).unsqueeze(0)  # the errors are least confident
    best, worst = selective.aurc(ranked, correct), selective.aurc(1 - ranked, correct)
    assert best < worst and selective.aurc(torch.ones(1, 100), correct).item() == pytest.approx(0.2)


def test_entropy_of_binary_and_k_class_probabilities():
    p = torch.tensor([[0.0, 0.5, 1.0, 0.2]])
    expected = torch.tensor([[0.0, math.log(2), 0.0, -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))]])
    torch.testing.assert_close(selective.entropy(p), expected)
    uniform = torch.full((1, 2, 5), 0.2)
    torch.testing.assert_close(selective.entropy(uniform), torch.full((1, 2), math.log(5)))
