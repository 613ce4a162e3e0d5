"""Mixup as a regularizer: input mixup (Zhang et al., 2018) and manifold mixup (Verma et al.,
2019), mixing a step's pairs at a layer k drawn per step and their targets with λ."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from spiralmix.config import ConfigError
from spiralmix.mixup import (
    halves_mixing_weights,
    mix,
    mix_halves,
    sample_lambda,
    sample_layers,
    sample_permutations,
)
from spiralmix.regularizers.base import Regularizer, StepContext


@dataclass
class Mixup(Regularizer):
    """Each step draws k ∈ [k_min, k_max] and λ ~ Beta(alpha, alpha), runs both sides of each
    pair up to layer k, mixes hidden states and targets with λ and runs the rest.

    Two ways to do it, with the same bits for every member: a group that holds the whole
    ensemble and can drop rows (one run; all members mixing at one layer; the permute
    pairing) goes the reference's way, mixing at layer k and going on with the B mixed rows.
    Otherwise the halves pairing mixes *by halves*: every layer runs on all 2B rows of every
    member, and after layer j the first half becomes a·first + b·second with (λ, 1−λ) where
    the member mixes and (1, 0), which keeps its rows, elsewhere; a member's loss is the mean
    over its first half, whose rows and operations are its separate run's.
    """

    alpha: float = 2.0  # λ ~ Beta(alpha, alpha)
    layers: Sequence[int] | None = None  # inclusive [k_min, k_max]; None: 0..n_hidden

    stream = "mixup"

    def check(self, n_hidden: int) -> None:
        super().check(n_hidden)
        if not self.alpha > 0:
            raise ConfigError("regularizer.alpha", self.alpha, "must be > 0")
        if self.layers is not None:
            layers = list(self.layers)
            if not (len(layers) == 2 and 0 <= layers[0] <= layers[1] <= n_hidden):
                raise ConfigError(
                    "regularizer.layers", layers,
                    f"must be [k_min, k_max] with 0 <= k_min <= k_max <= {n_hidden} "
                    "(0 = input, i = output of hidden layer i)",
                )  # fmt: skip

    def layer_range(self, n_hidden: int) -> tuple[int, int]:
        return (0, n_hidden) if self.layers is None else (int(self.layers[0]), int(self.layers[1]))

    def draw(self, n_steps: int, context: StepContext, generator: torch.Generator) -> dict:
        draws = {
            "k": sample_layers(*self.layer_range(context.n_hidden), n_steps, generator),
            "lam": sample_lambda(self.alpha, n_steps, generator),
        }
        if context.pairing == "permute":
            draws["b"] = sample_permutations(n_steps, context.batch_size, generator)
        return draws

    @classmethod
    def mixes_by_halves(cls, group: Sequence[Mixup], context: StepContext) -> bool:
        ranges = {m.layer_range(context.n_hidden) for m in group}
        one_layer = len(ranges) == 1 and len(set(next(iter(ranges)))) == 1
        shrinks = context.whole and (len(group) == 1 or one_layer)
        return context.pairing == "halves" and not shrinks

    @classmethod
    def prepare(cls, group: Sequence[Mixup], draws: dict, context: StepContext) -> dict:
        draws = {**draws, "ks": draws["k"].tolist()}  # the layers where members mix
        if not cls.mixes_by_halves(group, context):
            return draws
        mixing, targets = halves_mixing_weights(draws["k"], draws["lam"], context.n_hidden)
        label = cls.label_weight(draws["lam"])
        if label is not draws["lam"]:  # the labels mix with weights of their own
            targets = halves_mixing_weights(draws["k"], label, context.n_hidden)[1]
        # per layer, along the step axis when there is one: (..., E', 2, 1)
        layers = mixing.unbind(-4)
        return {**draws, "by_layer": list(zip(*layers)) if mixing.ndim == 5 else layers,
                "mix_targets": targets}  # fmt: skip

    @classmethod
    def targets(cls, y: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        if "by_layer" in draw:
            return mix_halves(y, draw["mix_targets"])  # (E', 2B) or (E', 2B, K) soft labels
        per_target = (-1,) + (1,) * (y.ndim - 1)  # broadcast over points (and classes)
        return mix(*pair_sides(y, draw, context), cls.label_weight(draw["lam"]).view(per_target))

    @classmethod
    def label_weight(cls, lam: torch.Tensor) -> torch.Tensor:
        """The weight of each pair's first label in its target, from the λ (..., E') that
        mixes its inputs: λ itself (mixup's soft labels); a subclass may return others."""
        return lam

    @classmethod
    def at_layer(cls, j: int, h: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        if "by_layer" in draw:
            return mix_halves(h, draw["by_layer"][j])
        ks = draw["ks"]
        if j not in ks:
            return h
        mixed = mix(*pair_sides(h, draw, context), draw["lam"].view(-1, 1, 1))  # (E', B, width)
        # Members that mix at another layer keep their rows (one run always mixes here).
        if ks.count(j) == len(ks):
            return mixed
        return torch.where((draw["k"] == j).view(-1, 1, 1), mixed, h)

    @classmethod
    def loss(cls, rows: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        if "by_layer" in draw:  # the mixed rows: the first half
            return rows[:, : rows.shape[1] // 2].mean(-1)
        return rows.mean(-1)

    @classmethod
    def scalars(cls, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"mixup/k": draws["k"], "mixup/lambda": draws["lam"]}


def pair_sides(
    t: torch.Tensor, draw: dict, context: StepContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two sides of each mixed pair: rows (E', B, ...) of t (E', N, ...)."""
    if context.pairing == "halves":
        B = t.shape[1] // 2
        return t[:, :B], t[:, B:]
    b = draw["b"]  # (E', B) a permutation per member
    idx = b.view(*b.shape, *([1] * (t.ndim - 2))).expand(-1, -1, *t.shape[2:])
    return t, torch.gather(t, 1, idx)
