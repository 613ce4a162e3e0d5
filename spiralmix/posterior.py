"""The true posterior p*(y | x) of each generator in :mod:`spiralmix.datasets`.

Every data set is drawn from a known process: a class c (each with n_samples / K points),
a noise-free point of that class, then Gaussian noise N(0, noise² I). So the density of a
point of class c is the noise density convolved with what the class draws:

- spirals, moons, circles draw their noise-free points from a fixed set of nodes along the
  class's curve (each node once: ``linspace`` in the generator), so p(x | c) is the mean of
  N(x; node, noise² I) over the class's nodes: exact, with no quadrature error. (A continuous
  curve is not what they draw: near the ends of the spiral arms, where the end node weighs
  twice what a trapezoid rule gives it, the two posteriors differ by up to 0.05 at noise 0.2.)
- checkerboard draws uniformly within each of the class's cells, so p(x | c) is a mean over
  the cells of products of two differences of normal CDFs;
- blobs are Gaussians of variance spread² + noise² around their centres.

Without noise the curves and cells have no density off their support: p* is 0/1 where it is
defined and undefined elsewhere, and :func:`true_posterior` returns None (as it does for a
generator it does not know). Densities are computed in log space in float64, so points far
from the data (where every density underflows) still get the posterior of the nearest nodes.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping

import torch

from spiralmix import datasets

# Points per block when comparing with all nodes: (block, nodes) float64 distances.
_BLOCK = 2048


def _log_node_mixture(X: torch.Tensor, nodes: torch.Tensor, noise: float) -> torch.Tensor:
    """log Σ_nodes exp(−|x − node|² / (2 noise²)) for each point: X (N, 2), nodes (M, 2) → (N,).

    The Gaussian's normalising constant is the same for every class, so it is left out."""
    # |x|² + |node|² − 2 x·node in float64: twice as fast as cdist, exact to 1e-14 here.
    node_sq = nodes.square().sum(1)
    out = []
    for block in X.split(_BLOCK):
        sq = (block.square().sum(1, keepdim=True) + node_sq - 2 * block @ nodes.T).clamp_min(0)
        out.append(torch.logsumexp(-sq / (2 * noise**2), -1))
    return torch.cat(out) if out else X.new_zeros(0)


def _curve_classes(X: torch.Tensor, arms: list[torch.Tensor], noise: float) -> torch.Tensor | None:
    """Unnormalised log p(x, c) (N, K) for classes whose points are nodes ``arms[c]`` + noise;
    a sum over nodes, so that a class's prior is its share of the nodes."""
    if noise == 0:
        return None
    return torch.stack([_log_node_mixture(X, arm, noise) for arm in arms], -1)


def spirals(
    X: torch.Tensor, n_samples: int, noise: float, n_cycles: float = 2.0, n_classes: int = 2
) -> torch.Tensor | None:
    """log p(x, c) (N, K) of :func:`spiralmix.datasets.spirals`, up to a constant."""
    arms = datasets.spiral_arms(n_samples, n_cycles, n_classes)
    # The generator rounds the noise-free points to float32 before adding noise.
    return _curve_classes(X, [a.float().double() for a in arms], noise)


def moons(X: torch.Tensor, n_samples: int, noise: float) -> torch.Tensor | None:
    """log p(x, c) (N, 2) of scikit-learn's ``make_moons``: class 0 the upper half circle."""
    n_out = n_samples // 2
    t_out = torch.linspace(0, math.pi, n_out, dtype=torch.float64)
    t_in = torch.linspace(0, math.pi, n_samples - n_out, dtype=torch.float64)
    outer = torch.stack([t_out.cos(), t_out.sin()], 1)
    inner = torch.stack([1 - t_in.cos(), 1 - t_in.sin() - 0.5], 1)
    return _curve_classes(X, [outer, inner], noise)


def circles(
    X: torch.Tensor, n_samples: int, noise: float, factor: float = 0.5
) -> torch.Tensor | None:
    """log p(x, c) (N, 2) of scikit-learn's ``make_circles``: class 1 the inner circle."""
    n_out = n_samples // 2

    def circle(n: int, radius: float) -> torch.Tensor:
        t = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)  # endpoint=False
        return radius * torch.stack([t.cos(), t.sin()], 1)

    return _curve_classes(X, [circle(n_out, 1.0), circle(n_samples - n_out, factor)], noise)


def _log_interval_mass(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(Φ(hi) − Φ(lo)) for lo < hi, accurate in both tails (Φ the normal CDF)."""
    # In the upper tail use Φ(hi) − Φ(lo) = Φ(−lo) − Φ(−hi), where the CDFs are small.
    upper = lo > 0
    lo, hi = torch.where(upper, -hi, lo), torch.where(upper, -lo, hi)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi))


def checkerboard(
    X: torch.Tensor, n_samples: int, noise: float, board_size: int = 2
) -> torch.Tensor | None:
    """log p(x, c) (N, 2) of :func:`spiralmix.datasets.checkerboard`, up to a constant.

    A class draws one of its cells uniformly, a point uniformly in it, then noise: the
    density is the mean over its cells of Π_axes [Φ((x − a)/σ) − Φ((x − b)/σ)] / area for
    the cell [a, b] per axis."""
    if noise == 0:
        return None
    width = 2 / board_size
    cells = torch.cartesian_prod(torch.arange(board_size), torch.arange(board_size)).double()
    lo = cells * width - 1  # (cells, 2) each cell's lower corner
    # (N, cells): the log of the Gaussian mass of each cell seen from each point, both axes.
    log_mass = _log_interval_mass(
        (X.unsqueeze(1) - lo - width) / noise, (X.unsqueeze(1) - lo) / noise
    ).sum(-1)
    parity = cells.sum(1).long() % 2
    # Each class has n_samples / 2 points spread over its own cells: its prior is 1/2.
    return torch.stack(
        [
            torch.logsumexp(log_mass[:, parity == c], -1) - math.log((parity == c).sum())
            for c in (0, 1)
        ],
        -1,
    )


def blobs(
    X: torch.Tensor, noise: float, n_classes: int = 2, spread: float = 0.5
) -> torch.Tensor | None:
    """log p(x, c) (N, K) of :func:`spiralmix.datasets.blobs`: Gaussians of variance
    spread² + noise² around K centres on the circle of radius 2, up to a constant."""
    angles = 2 * math.pi * torch.arange(n_classes, dtype=torch.float64) / n_classes
    centres = (2 * torch.stack([angles.cos(), angles.sin()], 1)).float().double()  # (K, 2)
    return -torch.cdist(X, centres).square() / (2 * (spread**2 + noise**2))


POSTERIORS: dict[Callable, Callable[..., torch.Tensor | None]] = {
    datasets.spirals: spirals,
    datasets.moons: moons,
    datasets.circles: circles,
    datasets.checkerboard: checkerboard,
    datasets.blobs: blobs,
}


def true_posterior(data: Mapping, X: torch.Tensor) -> torch.Tensor | None:
    """p*(y | x) of the generator ``data["_target_"]`` names at points X (..., 2), float64.

    ``data`` holds the generator's keys, as for :func:`spiralmix.datasets.generate`.
    Returns p of class 1 (...) for two classes and (..., K) for K > 2, like
    :func:`spiralmix.metrics.probabilities`; None where the posterior is degenerate
    (noise 0 on a curve or board, or noise so small that the density of some point
    underflows to 0 for every class in double precision) or the generator has no known
    posterior.
    """
    posterior = POSTERIORS.get(datasets.resolve(data["_target_"]))
    if posterior is None:
        return None
    kwargs = {
        name: data[name]
        for name in inspect.signature(posterior).parameters
        if name != "X" and name in data and data[name] is not None
    }
    log_joint = posterior(X.reshape(-1, 2).double(), **kwargs)
    if log_joint is None or not torch.isfinite(log_joint.amax(-1)).all():
        return None
    p = torch.softmax(log_joint, -1)
    p = p[:, 1] if p.shape[-1] == 2 else p
    return p.reshape(*X.shape[:-1], *p.shape[1:])
