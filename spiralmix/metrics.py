"""What the papers claim, as numbers: accuracy, calibration, uncertainty and flattening.

All functions are pure and batched over a leading member axis E: probabilities ``p`` and
targets ``y`` have shape (E, N), and every result has shape (E,) unless stated otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def binary_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy (negative log-likelihood) per member, in nats."""
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(-1)


def accuracy(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of points whose thresholded prediction (p > 0.5) equals y."""
    return ((p > 0.5).float() == y).float().mean(-1)


def brier_score(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted probability of class 1, in [0, 1]."""
    return ((p - y) ** 2).mean(-1)


def reliability(p: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> dict[str, torch.Tensor]:
    """Reliability-diagram statistics in ``n_bins`` equal-width bins of confidence.

    Confidence is max(p, 1−p) ∈ [0.5, 1] (Guo et al., "On Calibration of Modern Neural
    Networks", ICML 2017, for binary predictions); bins cover [0.5, 1]. Returns
    ``count``, ``confidence`` (mean confidence) and ``accuracy`` per bin, each (E, n_bins);
    empty bins have count 0 and NaN means.
    """
    confidence = torch.maximum(p, 1 - p)
    correct = ((p > 0.5).float() == y).float()
    edges = torch.linspace(0.5, 1.0, n_bins + 1)
    bins = torch.bucketize(confidence, edges[1:-1], right=True)  # (E, N) in 0..n_bins-1
    one_hot = F.one_hot(bins, n_bins).float()  # (E, N, n_bins)
    count = one_hot.sum(1)
    with torch.no_grad():
        mean_conf = (one_hot * confidence.unsqueeze(-1)).sum(1) / count
        mean_acc = (one_hot * correct.unsqueeze(-1)).sum(1) / count
    return {"count": count, "confidence": mean_conf, "accuracy": mean_acc, "edges": edges}


def expected_calibration_error(p: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """ECE: Σ_bins (n_bin / N) · |accuracy_bin − confidence_bin|, in [0, 1]."""
    return calibration_error(reliability(p, y, n_bins))


def calibration_error(stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """ECE from :func:`reliability` statistics (for callers that also draw the diagram)."""
    gap = (stats["accuracy"] - stats["confidence"]).abs().nan_to_num(0.0)
    return (stats["count"] * gap).sum(-1) / stats["count"].sum(-1)


def uncertain_fraction(p: torch.Tensor, low: float = 0.25, high: float = 0.75) -> torch.Tensor:
    """Fraction of points (e.g. a plotting grid) where low <= p <= high."""
    return ((p >= low) & (p <= high)).float().mean(-1)


def mean_confidence(p: torch.Tensor) -> torch.Tensor:
    """Mean of max(p, 1−p): 0.5 is maximally unsure, 1 is certain."""
    return torch.maximum(p, 1 - p).mean(-1)


def ring(n: int = 1000, r_min: float = 2.5, r_max: float = 3.5) -> torch.Tensor:
    """A deterministic ring of n points with radius in [r_min, r_max]: (n, 2).

    The spirals end at radius 2, so the ring lies where there is no training data;
    a model should not be confident there.
    """
    n_r = max(1, round(math.sqrt(n / 10)))
    n_theta = math.ceil(n / n_r)
    theta = torch.linspace(0, 2 * math.pi, n_theta + 1)[:-1]
    r = torch.linspace(r_min, r_max, n_r)
    R, T = torch.meshgrid(r, theta, indexing="ij")
    return torch.stack([R * torch.cos(T), R * torch.sin(T)], -1).reshape(-1, 2)[:n]


def class_singular_values(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Singular values of each class's centred representations.

    h: (E, N, D) hidden states, y: (E, N) labels in {0, 1} (each member must have the same
    number of points per class). Returns (E, 2, min(n_class, D)), descending.
    This is the spectrum Verma et al. ("Manifold Mixup", ICML 2019) use to show that
    manifold mixup *flattens* class representations: fewer directions of large variance.
    """
    out = []
    for label in (0, 1):
        mask = y[0] == label
        if not torch.all((y == label) == mask):
            # Per-member class positions differ: gather each member's class rows.
            hc = torch.stack([h[e][y[e] == label] for e in range(h.shape[0])])
        else:
            hc = h[:, mask]
        hc = hc - hc.mean(1, keepdim=True)
        finite = torch.isfinite(hc).flatten(1).all(1)  # a diverged member has no spectrum
        sv = torch.linalg.svdvals(torch.where(finite.view(-1, 1, 1), hc, 0.0).double()).float()
        out.append(torch.where(finite.view(-1, 1), sv, torch.nan))
    return torch.stack(out, 1)


def n_significant(singular_values: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Number of singular values above ``fraction`` of the largest one (last axis)."""
    top = singular_values[..., :1]
    return (singular_values > fraction * top).sum(-1).float()


def effective_rank(singular_values: torch.Tensor) -> torch.Tensor:
    """exp of the entropy of the normalised singular values (last axis), in [1, D].

    Roy & Vetterli (2007): p_i = σ_i / Σ_j σ_j, erank = exp(−Σ p_i log p_i). A threshold-free
    count of significant directions: D equal values give D, a single non-zero one gives 1.
    All-zero spectra give NaN (no direction at all), as do non-finite ones.
    """
    s = singular_values.double()
    p = s / s.sum(-1, keepdim=True)
    entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum(-1)
    erank = torch.where(s.sum(-1) > 0, entropy.exp(), torch.nan)
    return erank.to(singular_values.dtype)
