"""Selective prediction and far-from-data detection from a model's own uncertainty.

Batched over a leading member axis E like :mod:`spiralmix.metrics`; results are (E,).
Tied scores are treated as scikit-learn treats them: a tie counts one half in the AUROC, and
thresholds lie between distinct scores only. A member with a non-finite score gets NaN.
"""

from __future__ import annotations

import torch

from spiralmix import metrics


def _finite(*scores: torch.Tensor) -> torch.Tensor:
    """(E,) whether all of each member's scores are finite."""
    return torch.stack([torch.isfinite(s).flatten(1).all(1) for s in scores]).all(0)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Predictive entropy of each point in nats, (E, N): −Σ_k p_k log p_k (0 log 0 = 0), for
    binary p of class 1 (E, N) or K-class p (E, N, K); in [0, log K]."""
    p = metrics.two_columns(p) if p.ndim == 2 else p
    return -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1)


def aurc(confidence: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Area under the risk–coverage curve (Geifman & El-Yaniv, 2017), in [0, 1], lower is
    better: the mean over n = 1..N of the error rate of the n most confident points.

    Points of equal confidence are kept or rejected in an order nobody chose: the risk at
    each coverage is its mean over all their orders (errors spread evenly over a tie).
    confidence, correct: (E, N).
    """
    E, N = confidence.shape
    confidence, order = confidence.double().sort(dim=-1, descending=True, stable=True)
    errors = 1 - correct.double().gather(-1, order)
    cumulative = _leading_zero(errors.cumsum(-1))  # (E, N + 1): errors among the first n points
    # Each point's tie: sorted positions [start, end) sharing its confidence.
    ascending = -confidence.contiguous()
    start = torch.searchsorted(ascending, ascending, right=False)
    end = torch.searchsorted(ascending, ascending, right=True)
    n = torch.arange(1, N + 1, dtype=torch.float64)
    before, within = cumulative.gather(-1, start), cumulative.gather(-1, end)
    expected = before + (n - start) * (within - before) / (end - start)
    risk = expected / n
    return torch.where(_finite(confidence), risk.mean(-1), torch.nan)


def _leading_zero(cumulative: torch.Tensor) -> torch.Tensor:
    """A leading zero column: (E, N) cumulative sums → (E, N + 1), column n the sum of n."""
    return torch.cat([cumulative.new_zeros(cumulative.shape[0], 1), cumulative], -1)


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of scores that should be higher for ``positive`` (E, P) than
    for ``negative`` (E, Q) points: P(s+ > s−) + ½ P(s+ = s−), in [0, 1] (0.5 is chance);
    scikit-learn's ``roc_auc_score``."""
    neg = negative.double().sort(-1).values.contiguous()
    pos = positive.double().contiguous()
    below = torch.searchsorted(neg, pos, right=False)  # negatives strictly lower
    tied = torch.searchsorted(neg, pos, right=True) - below
    area = (below + 0.5 * tied).double().mean(-1) / neg.shape[-1]
    return torch.where(_finite(positive, negative), area, torch.nan)


def fpr_at_tpr(positive: torch.Tensor, negative: torch.Tensor, tpr: float = 0.95) -> torch.Tensor:
    """False-positive rate at the highest threshold that accepts at least ``tpr`` of the
    positives (Hendrycks & Gimpel, 2017: FPR at 95 % TPR), in [0, 1], lower is better:
    the share of ``negative`` (E, Q) scores at or above that threshold on ``positive`` (E, P)."""
    P = positive.shape[-1]
    # The fewest positives whose share reaches tpr, as a float comparison (as scikit-learn).
    k = next(k for k in range(1, P + 1) if k / P >= tpr)
    threshold = positive.double().sort(-1, descending=True).values[:, k - 1 : k]  # (E, 1)
    rate = (negative.double() >= threshold).double().mean(-1)
    return torch.where(_finite(positive, negative), rate, torch.nan)
