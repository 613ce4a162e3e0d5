"""Mixup as small pure functions: draw the mixing layer and λ, mix tensors and targets.

Every draw takes an explicit ``torch.Generator``: λ and k are part of the run's seeded
random streams (``torch.distributions.Beta`` cannot take a generator, hence the sampler).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from spiralmix.streams import permutations


def sample_layers(k_min: int, k_max: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """n mixing layers drawn uniformly from the inclusive range [k_min, k_max]; int64 (n,)."""
    if not 0 <= k_min <= k_max:
        raise ValueError(f"need 0 <= k_min <= k_max, got [{k_min}, {k_max}]")
    return torch.randint(k_min, k_max + 1, (n,), generator=generator)


def sample_log_gamma(alpha: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """n draws of log X for X ~ Gamma(alpha, 1) (Marsaglia & Tsang, 2000), float64 (n,).

    Logarithms keep small alphas finite: for alpha < 1, X = Gamma(alpha + 1) · U^(1/alpha)
    underflows to 0 in float64 long before log X does.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    boost = alpha < 1
    d = (alpha + 1 if boost else alpha) - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64)
    todo = torch.arange(n)
    while len(todo):
        x = torch.randn(len(todo), generator=generator, dtype=torch.float64)
        u = torch.rand(len(todo), generator=generator, dtype=torch.float64)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x**2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out[todo[ok]] = math.log(d) + torch.log(v[ok])
        todo = todo[~ok]
    if boost:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        out += torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)) / alpha
    return out


def sample_gamma(alpha: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """n draws from Gamma(alpha, 1), float64 (n,)."""
    return sample_log_gamma(alpha, n, generator).exp()


def sample_lambda(alpha: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """n mixing weights λ ~ Beta(alpha, alpha), float32 (n,), in (0, 1).

    λ = A / (A + B) = sigmoid(log A − log B) for A, B ~ Gamma(alpha); clamped to the open
    interval because float32 rounds values within 6e-8 of 1 up to 1.
    """
    log_a = sample_log_gamma(alpha, n, generator)
    log_b = sample_log_gamma(alpha, n, generator)
    lam = torch.sigmoid(log_a - log_b).float()
    tiny = torch.finfo(torch.float32).tiny
    return lam.clamp(tiny, 1 - torch.finfo(torch.float32).eps / 2)


def sample_beta(a: float, b: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """n draws from Beta(a, b), float32 (n,): A / (A + B) for A ~ Gamma(a), B ~ Gamma(b)."""
    log_a = sample_log_gamma(a, n, generator)
    log_b = sample_log_gamma(b, n, generator)
    return torch.sigmoid(log_a - log_b).float()


def mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """λ·a + (1−λ)·b; a tensor λ broadcasts against a and b (e.g. shape (E, 1, 1))."""
    return lam * a + (1 - lam) * b


def sample_permutations(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """n independent random permutations of range(size): int64 (n, size).

    The ``permute`` pairing mixes a batch with a permutation of itself; the ``halves``
    pairing (the reference's) mixes the first half of a 2·B batch with the second.
    """
    return permutations(n, size, generator)


def halves_mixing_weights(
    k: torch.Tensor, lam: torch.Tensor, n_layers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixing of the two halves of each member's batch, for every layer, as two weights.

    k and lam: (..., E) each member's mixing layer (-1: it does not mix) and λ. Returns
    ``layers`` (..., n_layers + 1, E, 2, 1), the weights (a, b) that make layer j's new
    first half a·first + b·second, and ``targets`` (..., E, 2, 1), those of the targets. A
    member mixing at layer k gets (λ, 1−λ) there and (1, 0), which keeps its rows, at every
    other layer; the second half is never changed (:func:`mix_halves`).
    """
    mixing = torch.stack([lam, 1 - lam], -1).unsqueeze(-1)  # (..., E, 2, 1)
    keep = torch.tensor([[1.0], [0.0]], dtype=lam.dtype, device=lam.device)
    j = torch.arange(n_layers + 1, device=k.device).view(-1, 1)  # layers along axis -2
    at = (k.unsqueeze(-2) == j).unsqueeze(-1).unsqueeze(-1)  # (..., L+1, E, 1, 1)
    layers = torch.where(at, mixing.unsqueeze(-4), keep)
    targets = torch.where((k >= 0).unsqueeze(-1).unsqueeze(-1), mixing, keep)
    return layers, targets


def mix_halves(
    t: torch.Tensor,
    weights: torch.Tensor,
    then: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Rows (E, 2·B, ...) of t with the first half replaced by a·first + b·second, weights
    (E, 2, 1) holding each member's (a, b): all members at once, whatever layer each mixes
    at; trailing axes (a hidden width, or the classes of one-hot targets) are carried along.

    Two products and a sum, the arithmetic of :func:`mix` (a matrix product would round
    differently): a member's mixed rows equal its separate run's to the bit, and (1, 0)
    gives its rows back unchanged. A member that mixed carries its unmixed second half
    along, unused (see ``MixupClassifier._loss_by_halves``).

    ``then``, if given, maps the mixed first half (E, B, ...) to what replaces it (noisy
    mixup's noise), before the halves are stacked once.
    """
    # unbind and stack: their gradients are views and one stack (slices' would be zero-filled)
    first, second = t.reshape(t.shape[0], 2, -1).unbind(1)
    mixed = weights[:, 0] * first + weights[:, 1] * second
    if then is not None:
        half = (t.shape[0], t.shape[1] // 2, *t.shape[2:])
        mixed = then(mixed.view(half)).reshape(mixed.shape)
    return torch.stack([mixed, second], 1).view(t.shape)
