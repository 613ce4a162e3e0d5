"""Calibration as the literature and its libraries compute it, and temperature scaling.

Conventions as in :mod:`spiralmix.metrics`: a leading member axis E, labels y (E, N), binary
probabilities p of class 1 (E, N) or K-class probabilities (E, N, K); results are (E,).

:func:`spiralmix.metrics.expected_calibration_error` bins the top-label confidence over
[1/K, 1], where it lives. Guo et al. ("On Calibration of Modern Neural Networks", ICML 2017)
and torchmetrics' ``MulticlassCalibrationError`` bin it over [0, 1]; :func:`ece` does the
same, so its numbers can stand beside a paper's. Like torchmetrics, a confidence of exactly 1
(a saturated float32 sigmoid or softmax) falls in a bin of its own after the last one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from spiralmix import metrics

# Golden-section iterations: the bracket shrinks by 0.618 per iteration; after 60 the log T
# bracket of the default bounds is 1e-11 wide.
_GOLDEN_ITERATIONS = 60


def _binned_gaps(
    confidence: torch.Tensor, correct: torch.Tensor, bins: torch.Tensor, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, |accuracy − confidence|) per bin, each (E, n_bins): weight is the bin's
    share of the points; an empty bin has weight 0 and gap 0."""
    one_hot = F.one_hot(bins, n_bins).to(confidence.dtype)  # (E, N, n_bins)
    count = one_hot.sum(1)
    mean_conf = (one_hot * confidence.unsqueeze(-1)).sum(1) / count
    mean_acc = (one_hot * correct.to(confidence.dtype).unsqueeze(-1)).sum(1) / count
    gap = (mean_acc - mean_conf).abs().nan_to_num(0.0)
    return count / count.sum(-1, keepdim=True), gap


def _equal_width_bins(confidence: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin i holds [i/n, (i+1)/n), and bin n a confidence of exactly 1 (as torchmetrics)."""
    edges = torch.linspace(0, 1, n_bins + 1, dtype=confidence.dtype)
    return torch.bucketize(confidence.contiguous(), edges, right=True) - 1  # (E, N) in 0..n_bins


def binned_calibration_error(
    confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15, norm: str = "l1"
) -> torch.Tensor:
    """Σ_bins weight · |accuracy − confidence| ("l1") or the largest gap of a non-empty bin
    ("max") of confidences (E, N) in [0, 1] and outcomes (E, N) in {0, 1}, in n_bins
    equal-width bins over [0, 1]."""
    weight, gap = _binned_gaps(
        confidence, correct, _equal_width_bins(confidence, n_bins), n_bins + 1
    )
    return (weight * gap).sum(-1) if norm == "l1" else gap.amax(-1)


def ece(p: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """Top-label expected calibration error, 15 equal-width bins over [0, 1] by default:
    torchmetrics' ``MulticlassCalibrationError(n_bins, norm="l1")``. In [0, 1]."""
    confidence, correct, _ = metrics.top_label(p, y)
    return binned_calibration_error(confidence, correct, n_bins)


def mce(p: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """Maximum calibration error: the largest |accuracy − confidence| of a non-empty bin of
    :func:`ece` (torchmetrics' ``norm="max"``). In [0, 1]."""
    confidence, correct, _ = metrics.top_label(p, y)
    return binned_calibration_error(confidence, correct, n_bins, norm="max")


def adaptive_ece(p: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """Top-label ECE in equal-mass bins (Nixon et al., "Measuring Calibration in Deep
    Learning", 2019): the points sorted by confidence, bin b holds ranks
    [⌈b·N/n⌉, ⌈(b+1)·N/n⌉), so the bins' sizes differ by at most one. In [0, 1]."""
    confidence, correct, _ = metrics.top_label(p, y)
    confidence, order = confidence.sort(dim=-1, stable=True)
    correct = correct.gather(-1, order)
    N = confidence.shape[-1]
    bins = torch.arange(N).mul(n_bins).div(N, rounding_mode="floor").expand_as(order)
    weight, gap = _binned_gaps(confidence, correct, bins, n_bins)
    return (weight * gap).sum(-1)


def classwise_ece(p: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """Class-wise ECE (Kull et al., 2019): the mean over classes k of the calibration error
    of p_k against 1[y = k], equal-width bins over [0, 1]. For binary p it is the error of
    p of class 1 alone: torchmetrics' ``BinaryCalibrationError``. In [0, 1]."""
    if p.ndim == 2:
        return binned_calibration_error(p, y, n_bins)
    K = p.shape[-1]
    one_hot = F.one_hot(y.long(), K)
    per_class = [binned_calibration_error(p[..., k], one_hot[..., k], n_bins) for k in range(K)]
    return torch.stack(per_class).mean(0)


def confidence_gap(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean top-label confidence minus accuracy, in [−1, 1]: > 0 over-, < 0 underconfident."""
    confidence, correct, _ = metrics.top_label(p, y)
    return confidence.mean(-1) - correct.mean(-1)


def fit_temperature(
    logits: torch.Tensor, y: torch.Tensor, bounds: tuple[float, float] = (1e-3, 1e4)
) -> torch.Tensor:
    """The temperature T per member, (E,) float64, that minimises the NLL of
    ``logits / T`` on (validation) labels y (Guo et al., 2017).

    The NLL of β·logits is convex in β = 1/T, so it has one minimum along log T: a golden-
    section search over log T within ``bounds`` finds it, deterministically and for all
    members at once. A member whose minimum lies outside reaches the nearer bound; one with
    non-finite logits gets NaN. The upper bound is far: an unregularized net's logits on
    noisy data are so large that its best T can exceed 100, and a member below chance on the
    points is best at T → ∞ (every prediction uniform) and gets the bound.
    """
    z = logits.double()
    y = y.double()  # binary cross-entropy computes in the targets' dtype
    lo = torch.full(z.shape[:1], math.log(bounds[0]), dtype=torch.float64)
    hi = torch.full_like(lo, math.log(bounds[1]))
    shape = (-1,) + (1,) * (z.ndim - 1)

    def loss(log_t: torch.Tensor) -> torch.Tensor:
        return metrics.nll(z / log_t.exp().view(shape), y)

    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(_GOLDEN_ITERATIONS):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        left = loss(a) <= loss(b)  # the minimum lies in [lo, b] or in [a, hi]
        lo, hi = torch.where(left, lo, a), torch.where(left, b, hi)
    T = ((lo + hi) / 2).exp()
    return torch.where(torch.isfinite(z).flatten(1).all(1), T, torch.nan)


def scale(logits: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """logits (E, N) or (E, N, K) divided by each member's temperature T (E,), in the
    logits' dtype."""
    return logits / T.to(logits.dtype).view((-1,) + (1,) * (logits.ndim - 1))
