"""Two-dimensional classification problems, one generator function each.

Every generator takes ``n_samples``, ``noise`` and a ``torch.Generator`` (the member's
``"data"`` stream) plus its own keyword arguments, and returns X of shape (n_samples, 2),
float32, and y of shape (n_samples,), float32 class indices in 0..K-1, shuffled, with the
same number of points per class (``n_samples`` must be a multiple of K).

A generator is named by ``_target_`` in ``conf/data/<name>.yaml``; its keyword arguments
are filled from the ``data`` keys of the same name (see :func:`generate`). A generator
with an ``n_classes`` argument supports any K >= 2; one without it makes two classes.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping

import torch
from hydra.utils import get_method

Generated = tuple[torch.Tensor, torch.Tensor]


def _check(n_samples: int, noise: float, n_classes: int = 2) -> None:
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes!r}")
    if not isinstance(n_samples, int) or n_samples <= 0 or n_samples % n_classes:
        raise ValueError(
            f"n_samples must be a positive multiple of n_classes={n_classes}, got {n_samples!r}"
        )
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")


def _shuffle_and_noise(
    X: torch.Tensor, y: torch.Tensor, noise: float, generator: torch.Generator | None
) -> Generated:
    """Shuffle the points, then add N(0, noise²) to each coordinate."""
    order = torch.randperm(len(X), generator=generator)
    X, y = X[order], y[order]
    if noise > 0:
        X = X + noise * torch.randn(X.shape, generator=generator)
    return X, y


def _sklearn_seed(generator: torch.Generator | None) -> int:
    """An integer seed for scikit-learn drawn from the member's own stream."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def _from_sklearn(X, y) -> Generated:
    """scikit-learn's NumPy points and labels as float32 tensors."""
    return torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)


def spiral_arms(n_samples: int, n_cycles: float = 2.0, n_classes: int = 2) -> list[torch.Tensor]:
    """The noise-free points of each arm of :func:`spirals`, (n_samples // K, 2) float64 each
    (also the nodes of its true posterior, :func:`spiralmix.posterior.spirals`)."""
    m = n_samples // n_classes
    theta = torch.linspace(0.0, 2 * math.pi * n_cycles, m, dtype=torch.float64)
    r = torch.linspace(0.2, 2.0, m, dtype=torch.float64)
    # The reference turns class 1 by exactly π; keep that constant for K = 2.
    turns = (
        [0.0, math.pi]
        if n_classes == 2
        else [2 * math.pi * c / n_classes for c in range(n_classes)]
    )
    return [torch.stack([r * torch.cos(theta + t), r * torch.sin(theta + t)], dim=1) for t in turns]


def spirals(
    n_samples: int = 1000,
    noise: float = 0.0,
    n_cycles: float = 2.0,
    n_classes: int = 2,
    generator: torch.Generator | None = None,
) -> Generated:
    """K interleaved spirals (arms 2π/K apart), ``n_samples // K`` points each.

    With m points per arm, θ = linspace(0, 2π·n_cycles, m) and r = linspace(0.2, 2, m);
    arm c is (r cos(θ + 2πc/K), r sin(θ + 2πc/K)). For K = 2 these are the reference's two
    spirals, class 1 turned by π. The points lie within radius 2 of the origin (plus noise).
    """
    _check(n_samples, noise, n_classes)
    m = n_samples // n_classes
    X = torch.cat(spiral_arms(n_samples, n_cycles, n_classes)).float()
    y = torch.cat([torch.full((m,), float(c)) for c in range(n_classes)])
    return _shuffle_and_noise(X, y, noise, generator)


def moons(
    n_samples: int = 1000, noise: float = 0.1, generator: torch.Generator | None = None
) -> Generated:
    """scikit-learn's two interleaving half circles (``make_moons``), seeded from ``generator``.

    The points lie in [-1, 2] × [-0.5, 1] (plus noise), within 1.6 of (0.5, 0.25).
    """
    from sklearn.datasets import make_moons

    _check(n_samples, noise)
    X, y = make_moons(n_samples, noise=noise or None, random_state=_sklearn_seed(generator))
    return _from_sklearn(X, y)


def circles(
    n_samples: int = 1000,
    noise: float = 0.05,
    factor: float = 0.5,
    generator: torch.Generator | None = None,
) -> Generated:
    """scikit-learn's two concentric circles (``make_circles``): class 1 is the inner one,
    ``factor`` times the outer one's radius 1. Seeded from ``generator``."""
    from sklearn.datasets import make_circles

    _check(n_samples, noise)
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor!r}")
    X, y = make_circles(
        n_samples, noise=noise or None, factor=factor, random_state=_sklearn_seed(generator)
    )
    return _from_sklearn(X, y)


def checkerboard(
    n_samples: int = 1000,
    noise: float = 0.0,
    board_size: int = 2,
    generator: torch.Generator | None = None,
) -> Generated:
    """A board_size × board_size board of alternating cells on [-1, 1]², points uniform
    within each class's cells (``board_size`` = 2 is XOR)."""
    _check(n_samples, noise)
    if board_size < 2:
        raise ValueError(f"board_size must be >= 2, got {board_size!r}")
    m = n_samples // 2
    cells = torch.cartesian_prod(torch.arange(board_size), torch.arange(board_size))  # (k², 2)
    points, labels = [], []
    for label in (0, 1):
        own = cells[cells.sum(1) % 2 == label]  # (n_cells, 2) this class's cells
        which = own[torch.randint(len(own), (m,), generator=generator)]  # (m, 2)
        offset = torch.rand(m, 2, generator=generator)
        points.append((which + offset) * (2 / board_size) - 1)
        labels.append(torch.full((m,), float(label)))
    return _shuffle_and_noise(torch.cat(points), torch.cat(labels), noise, generator)


def blobs(
    n_samples: int = 1000,
    noise: float = 0.0,
    n_classes: int = 2,
    spread: float = 0.5,
    generator: torch.Generator | None = None,
) -> Generated:
    """K isotropic Gaussian clusters with standard deviation ``spread``, centred on the
    circle of radius 2 at angles 2πc/K: convex classes."""
    _check(n_samples, noise, n_classes)
    if spread <= 0:
        raise ValueError(f"spread must be > 0, got {spread!r}")
    m = n_samples // n_classes
    angles = 2 * math.pi * torch.arange(n_classes, dtype=torch.float64) / n_classes
    centres = 2 * torch.stack([angles.cos(), angles.sin()], 1).float()  # (K, 2)
    X = centres.repeat_interleave(m, 0) + spread * torch.randn(n_samples, 2, generator=generator)
    y = torch.arange(n_classes).repeat_interleave(m).float()
    return _shuffle_and_noise(X, y, noise, generator)


def resolve(target: str) -> Callable[..., Generated]:
    """The generator function a ``_target_`` names (raises ValueError if there is none)."""
    try:
        return get_method(target)
    except Exception as err:  # Hydra wraps import errors of every kind
        raise ValueError(f"no generator function {target!r}") from err


def max_classes(target: str) -> int | None:
    """The most classes the generator can make: None (any) if it takes n_classes, else 2."""
    return None if "n_classes" in inspect.signature(resolve(target)).parameters else 2


def generate(data: Mapping, generator: torch.Generator) -> Generated:
    """Call the generator ``data["_target_"]`` names with the ``data`` keys it takes.

    ``data`` is the ``data`` config node: keys the function does not take (the split,
    the batch size, ...) and keys set to None are left out.
    """
    function = resolve(data["_target_"])
    kwargs = {
        name: data[name]
        for name in inspect.signature(function).parameters
        if name != "generator" and name in data and data[name] is not None
    }
    return function(**kwargs, generator=generator)
