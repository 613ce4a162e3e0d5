"""What the papers claim, as numbers: accuracy, calibration, uncertainty and flattening.

All functions are pure and batched over a leading member axis E, and every result has
shape (E,) unless stated otherwise. Labels ``y`` are class indices of shape (E, N). For two
classes, logits and probabilities ``p`` (of class 1) have shape (E, N); for K > 2 classes
they have shape (E, N, K), and each multi-class definition equals the binary one at K = 2
(see :func:`two_columns`):

- accuracy: the share of points whose most probable class is the label;
- NLL: the mean of −log p(label);
- ECE: top-label confidence max_k p_k in equal-width bins over [1/K, 1];
- Brier score: ½ Σ_k (p_k − 1[k = label])², in [0, 1];
- uncertain: top-label confidence at most half-way from chance (1/K) to certainty;
- confidence far from the data: the mean top-label confidence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def binary_nll_rows(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each point (E, N), in nats; logits (E, N), y (E, N) labels or
    soft targets in [0, 1]."""
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none")


def binary_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy (negative log-likelihood) per member, in nats."""
    return binary_nll_rows(logits, y).mean(-1)


def soft_cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy −Σ_k t_k log softmax(logits)_k of each point (E, N), in nats.

    logits (E, N, K); targets (E, N, K) one-hot or mixed one-hot (rows on the simplex)."""
    return -(targets * F.log_softmax(logits, -1)).sum(-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy per member, in nats."""
    return soft_cross_entropy_rows(logits, targets).mean(-1)


def training_loss_rows(n_classes: int):
    """The loss of each point on (logits, targets) for K classes, (E, N): BCE on soft labels
    for two classes, softmax cross-entropy on mixed one-hot targets for more."""
    return binary_nll_rows if n_classes == 2 else soft_cross_entropy_rows


def training_loss(n_classes: int):
    """:func:`training_loss_rows` averaged over each member's points, (E,)."""
    return binary_nll if n_classes == 2 else soft_cross_entropy


# Torch's element-wise CPU kernels run a tensor in blocks of two vectors (32 floats with
# AVX-512, 16 with AVX2) and the rest, fewer than a block, with scalar code, whose sigmoid,
# exp and log round differently: a point's value would depend on where its row falls.
VECTOR_BLOCK = 32


def on_whole_blocks(fn, *tensors: torch.Tensor) -> torch.Tensor:
    """``fn(*tensors)`` of (E, N, ...) tensors, computed on rows padded along the points'
    axis to a multiple of :data:`VECTOR_BLOCK` and cut back to N: every point of every
    member falls in the kernels' vector blocks, so its value does not depend on how many
    points its row has or how many members run beside it. Rows of a multiple of the block
    (the default 32 pairs, 64 rows) are computed as they are."""
    n = tensors[0].shape[1]
    pad = -n % VECTOR_BLOCK
    if pad == 0:
        return fn(*tensors)
    padded = [F.pad(t, (0, 0) * (t.ndim - 2) + (0, pad)) for t in tensors]
    return fn(*padded)[:, :n]


def block_aligned(loss_rows):
    """``loss_rows`` (E, N) on whole blocks (:func:`on_whole_blocks`): a member's losses and
    their gradients do not depend on how many rows it has (B mixed pairs alone, 2·B rows
    mixing by halves beside others) or how many members it trains beside."""
    return lambda logits, targets: on_whole_blocks(loss_rows, logits, targets)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """sigmoid of (E, N) logits (p of class 1), softmax of (E, N, K) logits.

    The sigmoid runs on whole blocks (:func:`on_whole_blocks`), as the training loss does:
    the scalar sigmoid of a tensor's last partial block differs from the vectorized one in
    about one value in 25, so a run alone's last test or grid points would otherwise differ
    from the same member's beside others."""
    if logits.ndim == 3:
        return torch.softmax(logits, -1)
    return on_whole_blocks(torch.sigmoid, logits).contiguous()


def nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean −log p(label) per member, in nats; binary cross-entropy for (E, N) logits."""
    if logits.ndim == 2:
        return binary_nll(logits, y)
    log_p = F.log_softmax(logits, -1).gather(-1, y.long().unsqueeze(-1)).squeeze(-1)
    return -log_p.mean(-1)


def two_columns(p: torch.Tensor) -> torch.Tensor:
    """Binary p of class 1 (E, N) as K = 2 class probabilities (E, N, 2): [1 − p, p]."""
    return torch.stack([1 - p, p], -1)


def accuracy(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of points whose most probable class (binary: p > 0.5) equals y."""
    if p.ndim == 3:
        return (p.argmax(-1) == y).float().mean(-1)
    return ((p > 0.5).float() == y).float().mean(-1)


def brier_score(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """½ Σ_k (p_k − 1[k = y])² averaged over points, in [0, 1]; for two classes this is the
    mean squared error of the probability of class 1."""
    if p.ndim == 3:
        one_hot = F.one_hot(y.long(), p.shape[-1]).to(p.dtype)
        return 0.5 * ((p - one_hot) ** 2).sum(-1).mean(-1)
    return ((p - y) ** 2).mean(-1)


def top_label(p: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(confidence, correct, K): the most probable class's probability and whether it is
    the label, each (E, N), for binary (E, N) or K-class (E, N, K) probabilities."""
    if p.ndim == 3:
        confidence, predicted = p.max(-1)
        return confidence, (predicted == y).float(), p.shape[-1]
    return torch.maximum(p, 1 - p), ((p > 0.5).float() == y).float(), 2


def reliability(p: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> dict[str, torch.Tensor]:
    """Reliability-diagram statistics in ``n_bins`` equal-width bins of confidence.

    Confidence is the top-label probability max_k p_k ∈ [1/K, 1] (Guo et al., "On
    Calibration of Modern Neural Networks", ICML 2017; max(p, 1−p) for binary p); bins
    cover [1/K, 1]. Returns ``count``, ``confidence`` (mean confidence) and ``accuracy``
    per bin, each (E, n_bins), and the bins' ``edges`` (n_bins + 1,); empty bins have
    count 0 and NaN means.
    """
    confidence, correct, K = top_label(p, y)
    edges = torch.linspace(1 / K, 1.0, n_bins + 1)
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
    """Fraction of points (e.g. a plotting grid) where low <= p <= high (binary p, (E, N)).

    For K-class p (E, N, K): where the top-label confidence is at most half-way from
    chance (1/K) to certainty, i.e. <= (1 + 1/K) / 2 (0.75 for K = 2, as p in [0.25, 0.75]).
    """
    if p.ndim == 3:
        K = p.shape[-1]
        return (p.amax(-1) <= (1 + 1 / K) / 2).float().mean(-1)
    return ((p >= low) & (p <= high)).float().mean(-1)


def mean_confidence(p: torch.Tensor) -> torch.Tensor:
    """Mean top-label confidence max_k p_k (max(p, 1−p) for binary p): 1/K is maximally
    unsure, 1 is certain."""
    if p.ndim == 3:
        return p.amax(-1).mean(-1)
    return torch.maximum(p, 1 - p).mean(-1)


def ring(
    n: int = 1000,
    r_min: float = 2.5,
    r_max: float = 3.5,
    center: tuple[float, float] = (0.0, 0.0),
) -> torch.Tensor:
    """A deterministic ring of n points around ``center`` with radius in [r_min, r_max]: (n, 2).

    The spirals end at radius 2, so the default ring lies where there is no training data;
    a model should not be confident there. Other data sets pass 1.25 and 1.75 times the
    radius of the circle that holds their data (``data.center``, ``data.radius``).
    """
    n_r = max(1, round(math.sqrt(n / 10)))
    n_theta = math.ceil(n / n_r)
    theta = torch.linspace(0, 2 * math.pi, n_theta + 1)[:-1]
    r = torch.linspace(r_min, r_max, n_r)
    R, T = torch.meshgrid(r, theta, indexing="ij")
    points = torch.stack([R * torch.cos(T), R * torch.sin(T)], -1).reshape(-1, 2)[:n]
    return points + torch.tensor(center, dtype=points.dtype)


def class_singular_values(h: torch.Tensor, y: torch.Tensor, n_classes: int = 2) -> torch.Tensor:
    """Singular values of each class's centred representations.

    h: (E, N, D) hidden states, y: (E, N) labels in 0..K-1 (each member must have the same
    number of points per class). Returns (E, K, min(n_class, D)), descending.
    This is the spectrum Verma et al. ("Manifold Mixup", ICML 2019) use to show that
    manifold mixup *flattens* class representations: fewer directions of large variance.
    """
    out = []
    for label in range(n_classes):
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
