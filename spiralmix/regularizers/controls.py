"""Controls for mixup: six regularizers, each isolating one mechanism that the literature
offers for why mixup helps (README.md, "Why does mixup help? The controls").

- :class:`LabelSmoothing`: the label part alone, no mixing;
- :class:`MixupIO`: the input part alone, mixed points keep a hard label;
- :class:`RegMixup`: mixup added to the clean loss instead of replacing it;
- :class:`LocalMixup`: only near pairs count;
- :class:`KernelMixup`: far pairs mix little;
- :class:`NoisyMixup`: manifold mixup plus noise on the mixed features.

Every setting that differs between members reaches the class hooks through the draws, as
(n_steps,) columns of the member's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import betainc

from spiralmix.config import ConfigError
from spiralmix.mixup import mix, mix_halves, sample_beta
from spiralmix.regularizers.base import Regularizer, StepContext
from spiralmix.regularizers.mixup import Mixup, pair_sides


def _column(n_steps: int, value: float) -> torch.Tensor:
    """A member's setting once per step, (n_steps,): how it reaches the class hooks."""
    return torch.full((n_steps,), float(value))


def _record(draw: dict, key: str, j: int, value: torch.Tensor) -> None:
    """Keep ``value`` (E', B) of layer j in draw[key] for the members that mix at j."""
    if key not in draw:
        draw[key] = value
    else:
        draw[key] = torch.where((draw["k"] == j).view(-1, 1), value, draw[key])


def _mixed_rows(rows: torch.Tensor, draw: dict) -> torch.Tensor:
    """The rows (E', B, ...) that hold the mixed pairs: the first half when mixing by halves."""
    return rows[:, : rows.shape[1] // 2] if "by_layer" in draw else rows


def _with_mixed_rows(h: torch.Tensor, new: torch.Tensor, j: int, draw: dict) -> torch.Tensor:
    """h (E', N, width) with its mixed rows replaced by ``new`` for the members mixing at j."""
    if "by_layer" in draw:  # the first half; the second half goes on unchanged
        new = torch.cat([new, h[:, h.shape[1] // 2 :]], 1)
    if draw["ks"].count(j) == len(draw["ks"]):
        return new
    return torch.where((draw["k"] == j).view(-1, 1, 1), new, h)


@dataclass
class LabelSmoothing(Regularizer):
    """Targets (1 − ε)·one-hot + ε/K, no mixing (Müller, Kornblith & Hinton, NeurIPS 2019).

    Mixup's label part alone: to first order mixup is label smoothing plus a penalty on the
    network's Jacobian (Carratino et al., JMLR 2022). With two classes the soft label of
    class 1 is (1 − ε)·y + ε/2.
    """

    epsilon: float = 0.1  # ε, the label mass spread evenly over the K classes

    def check(self, n_hidden: int) -> None:
        super().check(n_hidden)
        if not 0 <= self.epsilon < 1:
            raise ConfigError("regularizer.epsilon", self.epsilon, "must be in [0, 1)")

    def draw(self, n_steps: int, context: StepContext, generator: torch.Generator) -> dict:
        return {"epsilon": _column(n_steps, self.epsilon)}

    @classmethod
    def targets(cls, y: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        eps = draw["epsilon"].view(-1, *[1] * (y.ndim - 1))  # (E', 1) or (E', 1, 1)
        return y * (1 - eps) + eps / context.n_classes


@dataclass
class MixupIO(Mixup):
    """Mixup of the inputs (or hidden states) only: a mixed point keeps the hard label of
    the pair's dominant point, the first when λ ≥ 0.5 (the "mixing inputs only" ablation of
    Wang et al., CVPR 2023; Thulasidasan et al., NeurIPS 2019, find that the label mixing is
    what calibrates)."""

    @classmethod
    def label_weight(cls, lam: torch.Tensor) -> torch.Tensor:
        return (lam >= 0.5).to(lam.dtype)


@dataclass
class RegMixup(Mixup):
    """Cross-entropy on the clean batch plus η · mixup's cross-entropy (Pinto et al.,
    NeurIPS 2022, "Using Mixup as a Regularizer Can Surprisingly Improve Accuracy and Out
    Distribution Robustness"): mixup as a regularizer next to the clean data, not in place
    of them. The paper finds large α best (α = 10 or 20 on CIFAR); η = 0 is no regularizer.
    """

    alpha: float = 10.0
    eta: float = 1.0  # η, the weight of the mixed batch's loss

    needs_clean = True

    def check(self, n_hidden: int) -> None:
        super().check(n_hidden)
        if not self.eta >= 0:
            raise ConfigError("regularizer.eta", self.eta, "must be >= 0")

    def draw(self, n_steps: int, context: StepContext, generator: torch.Generator) -> dict:
        return {**super().draw(n_steps, context, generator), "eta": _column(n_steps, self.eta)}

    @classmethod
    def loss(cls, rows: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        return draw["clean"].mean(-1) + draw["eta"] * super().loss(rows, draw, context)


def _pair_distance(h: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
    """The Euclidean distance of each pair's two sides (E', B), a constant of the graph."""
    a, b = pair_sides(h.detach(), draw, context)
    return torch.linalg.vector_norm(a - b, dim=-1)


@dataclass
class LocalMixup(Mixup):
    """Mixup whose pairs count only when near: a mixed pair's loss is weighted by
    1[d ≤ ε], d the pair's distance where it mixes (inputs or hidden states) (Baena, Drumetz
    & Gripon, "Preventing Manifold Intrusion with Locality: Local Mixup", 2022, with its
    hard-threshold weighting; they show it on two spirals). ε = ∞ is mixup.

    The loss is the mean over all pairs, far ones counting 0 (the paper's weighted risk).
    """

    epsilon: float = 0.5  # ε, in the units of the mixing space; .inf: every pair counts

    def check(self, n_hidden: int) -> None:
        super().check(n_hidden)
        if not self.epsilon >= 0:
            raise ConfigError("regularizer.epsilon", self.epsilon, "must be >= 0")

    def draw(self, n_steps: int, context: StepContext, generator: torch.Generator) -> dict:
        draws = super().draw(n_steps, context, generator)
        return {**draws, "epsilon": _column(n_steps, self.epsilon)}

    @classmethod
    def at_layer(cls, j: int, h: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        if j in draw["ks"]:
            _record(draw, "distance", j, _pair_distance(h, draw, context))
        return super().at_layer(j, h, draw, context)

    @classmethod
    def loss(cls, rows: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        near = (draw["distance"] <= draw["epsilon"].view(-1, 1)).to(rows.dtype)  # (E', B)
        return (_mixed_rows(rows, draw) * near).mean(-1)


def warp_lambda(
    lam: torch.Tensor, distance: torch.Tensor, tau_max: torch.Tensor, tau_std: torch.Tensor
) -> torch.Tensor:
    """Similarity Kernel Mixup's λ per pair (Bouniot, Mozharovskyi & d'Alché-Buc, ICLR 2025,
    "Tailoring Mixup to Data for Calibration", eqs. for the warping function and kernel).

    λ (E',) is warped by the CDF of Beta(ω, ω), ω = 1/τ, with the batch-normalized and
    centred Gaussian similarity kernel τ = τ_max · exp(−(d̃ − 1) / (2 τ_std²)) of the
    pair's distance over the batch's mean distance, d̃ = d / mean(d) (E', B): far pairs
    (small τ, large ω) get λ near 0 or 1, near ones λ near ½. ω = 1 is the identity, and
    τ_max = 1 with τ_std = ∞ gives mixup's λ exactly. In float64 on the CPU (scipy's
    regularized incomplete beta function; torch has none), in numpy: a few dozen numbers a
    step, where each torch call would cost more than its arithmetic. Returns float32 (E', B).
    """
    d = distance.detach().cpu().numpy().astype(np.float64)
    scaled = d / np.maximum(d.mean(-1, keepdims=True), np.finfo(np.float64).tiny)
    tau_std = tau_std.cpu().numpy().astype(np.float64)[:, None]
    tau = tau_max.cpu().numpy().astype(np.float64)[:, None] * np.exp(
        -(scaled - 1) / (2 * tau_std**2)
    )
    omega = 1 / np.maximum(tau, 1e-12)
    x = np.broadcast_to(lam.cpu().numpy().astype(np.float64)[:, None], omega.shape)
    warped = np.where(omega == 1, x, betainc(omega, omega, x))  # I_λ(1, 1) = λ, to the bit
    return torch.from_numpy(warped.astype(np.float32)).to(lam.device)


@dataclass
class KernelMixup(Mixup):
    """Similarity Kernel Mixup (Bouniot et al., ICLR 2025): each pair's λ warped by a
    similarity kernel of its distance where it mixes, so that far pairs mix little
    (:func:`warp_lambda`); the targets mix with the warped λ. The paper's defaults:
    τ_max = 1, τ_std = 0.5 (α = 1). τ_max = 1 with τ_std = .inf switches the kernel off:
    mixup."""

    alpha: float = 1.0
    tau_max: float = 1.0  # τ_max, the kernel at the batch's mean distance
    tau_std: float = 0.5  # τ_std, the kernel's width in units of the mean distance

    def check(self, n_hidden: int) -> None:
        super().check(n_hidden)
        if not self.tau_max > 0:
            raise ConfigError("regularizer.tau_max", self.tau_max, "must be > 0")
        if not self.tau_std > 0:
            raise ConfigError("regularizer.tau_std", self.tau_std, "must be > 0")

    def draw(self, n_steps: int, context: StepContext, generator: torch.Generator) -> dict:
        draws = super().draw(n_steps, context, generator)
        tau = {"tau_max": _column(n_steps, self.tau_max), "tau_std": _column(n_steps, self.tau_std)}
        return {**draws, **tau}

    @classmethod
    def at_layer(cls, j: int, h: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        if j not in draw["ks"]:
            return h
        a, b = pair_sides(h, draw, context)
        distance = torch.linalg.vector_norm(a.detach() - b.detach(), dim=-1)
        lam = warp_lambda(draw["lam"], distance, draw["tau_max"], draw["tau_std"])
        _record(draw, "pair_lam", j, lam)
        return _with_mixed_rows(h, mix(a, b, draw["pair_lam"].unsqueeze(-1)), j, draw)

    @classmethod
    def targets(cls, y: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        a, b = pair_sides(y, draw, context)
        lam = draw["pair_lam"].view(*draw["pair_lam"].shape, *[1] * (y.ndim - 2))
        mixed = mix(a, b, lam)
        return torch.cat([mixed, b], 1) if "by_layer" in draw else mixed


@dataclass
class NoisyMixup(Mixup):
    """Noisy Feature Mixup (Lim, Erichson et al., ICLR 2022): manifold mixup, then the mixed
    features h become m ⊙ h + a with multiplicative noise m = 1 + σ_mult·β·U(−1, 1) and
    additive noise a = σ_add·β'·N(0, 1) per feature, β, β' ~ Beta(2, 5) per step. NFM's
    CIFAR settings: α = 1, σ_add = 0.4, σ_mult = 0.2. Zero noise is mixup.

    A step draws one noise (B, width) for the widest layer and the layer where the member
    mixes uses its first features. Mixing by halves, a layer's noise is (m, a) for the
    members that mix there and (1, 0), which keeps the rows, for the others.
    """

    alpha: float = 1.0
    add_noise: float = 0.4  # σ_add
    mult_noise: float = 0.2  # σ_mult

    def check(self, n_hidden: int) -> None:
        super().check(n_hidden)
        for key in ("add_noise", "mult_noise"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"regularizer.{key}", getattr(self, key), "must be >= 0")

    def draw(self, n_steps: int, context: StepContext, generator: torch.Generator) -> dict:
        draws = super().draw(n_steps, context, generator)  # k, λ (and pairs) as mixup's
        shape = (n_steps, context.batch_size, max(context.widths))  # the widest layer's
        scale_add, scale_mult = sample_beta(2.0, 5.0, 2 * n_steps, generator).view(2, -1, 1, 1)
        # in place: these are the largest draws of any regularizer, (n_steps, B, width)
        normal = torch.randn(shape, generator=generator)
        uniform = torch.empty(shape).uniform_(-1, 1, generator=generator)
        draws["add"] = normal.mul_(self.add_noise * scale_add)
        draws["mult"] = uniform.mul_(self.mult_noise * scale_mult).add_(1)
        return draws

    @classmethod
    def prepare(cls, group: Sequence[NoisyMixup], draws: dict, context: StepContext) -> dict:
        draws = super().prepare(group, draws, context)
        if "by_layer" in draws:  # per layer, 1 for its members that mix there, else 0
            layers = torch.arange(context.n_hidden + 1, device=draws["k"].device).view(-1, 1)
            at = draws["k"].unsqueeze(-2) == layers  # (..., n_hidden + 1, E')
            gate = at[..., None, None].to(draws["mult"].dtype)
            draws = {**draws, "noise_gate": gate, "noise_off": 1 - gate}
        return draws

    @classmethod
    def at_layer(cls, j: int, h: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        if "by_layer" not in draw:  # mixup's mixed rows (E', B, width), then their noise
            h = super().at_layer(j, h, draw, context)
            if j not in draw["ks"]:
                return h
            return _with_mixed_rows(h, _noisy(h, draw["mult"], draw["add"]), j, draw)
        # By halves: the noise on the first half where a member mixes at j, inside the mixing
        # (no slicing, concatenation and selection of rows).
        ks = draw["ks"]
        if j not in ks:
            return mix_halves(h, draw["by_layer"][j])
        mult, add = draw["mult"], draw["add"]
        if ks.count(j) < len(ks):  # no noise, (1, 0), for the members that mix elsewhere
            if "layer_noise" not in draw:  # every layer's at once, (n_hidden + 1, E', B, W)
                # exact for any m, and cheaper than torch.where: m·1 + 0 and m·0 + 1
                gate = draw["noise_gate"]
                draw["layer_noise"] = (mult * gate).add_(draw["noise_off"]), add * gate
            mult, add = (noise[j] for noise in draw["layer_noise"])
        return mix_halves(h, draw["by_layer"][j], then=lambda mixed: _noisy(mixed, mult, add))


def _noisy(mixed: torch.Tensor, mult: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """m ⊙ h + a on mixed rows h (E', B, width), with the noise of the layer's width."""
    width = mixed.shape[-1]
    return mult[..., :width] * mixed + add[..., :width]


__all__ = [
    "KernelMixup",
    "LabelSmoothing",
    "LocalMixup",
    "MixupIO",
    "NoisyMixup",
    "RegMixup",
    "warp_lambda",
]
