"""The regularizer plugin: what one member draws per step, does at each layer, adds to the loss.

A regularizer is a dataclass whose fields are its config keys; ``conf/regularizer/<name>.yaml``
names the class with ``_target_`` and sets those keys. Every regularizer configures dropout
(``p``) and AdamW's decoupled weight decay (``weight_decay``); a subclass adds, as needed:

- ``stream`` and :meth:`draw`: the member's random numbers for a chunk of steps, from the
  member's own stream only, so that its numbers never depend on its neighbours';
- :meth:`targets`, :meth:`at_layer` and :meth:`loss`: what a step does to the targets, to the
  inputs (layer 0) and the hidden states (layer j = output of hidden layer j) of the split
  forward pass, and how the rows' losses become the member's loss;
- :meth:`mixes_by_halves`: whether its members run all rows but their loss reads the first
  half (mixup beside other members), which the output layer needs to know.

Within one step the hooks run in this order: ``at_layer`` for j = 0 .. n_hidden during the
forward pass, then ``targets``, then ``loss``. They share one dict, the step's draws, fresh
for each step and group: ``at_layer`` may leave in it what it measured where it mixed (a
pair's distance, a λ per pair) for ``targets`` and ``loss`` to use. A class that sets
``needs_clean`` also finds there, under ``"clean"``, every row's loss (E', N) on the clean
batch: the inputs and targets as no hook changed them, through the same network and
dropout masks (RegMixup's clean term).

The hooks are class methods: :class:`spiralmix.step.EnsembleStep` calls them once for all
members of an ensemble that use the class (its *group*), with the group's member axis E'
first, so a group costs a few batched kernels whatever its size. Anything that differs
between members reaches the hooks through the draws (see :meth:`draw`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from spiralmix.config import ConfigError


@dataclass(frozen=True)
class StepContext:
    """What a group's hooks may know of the step they run in."""

    batch_size: int  # B: mixed pairs per step
    pairing: str  # halves: 2·B rows, first half paired with second; permute: B rows
    n_hidden: int  # hidden layers; at_layer sees j = 0 (inputs) .. n_hidden
    n_classes: int  # targets are (E', N) for two classes, one-hot (E', N, K) for more
    whole: bool  # the group holds every member: it may change the number of rows
    widths: tuple[int, ...] = ()  # at_layer's width at j = 0 (inputs) .. n_hidden


@dataclass
class Regularizer:
    """No regularization beyond the dropout and weight decay that every member configures.

    The base of every regularizer (``conf/regularizer/none.yaml``); each hook leaves the
    step as it is.
    """

    p: float = 0.0  # dropout probability after each hidden layer
    weight_decay: float = 0.0  # AdamW's decoupled weight decay

    stream: ClassVar[str | None] = None  # the member's stream that draw() reads, if any
    needs_clean: ClassVar[bool] = False  # loss() reads draw["clean"]: the clean batch's rows

    def check(self, n_hidden: int) -> None:
        """Raise :class:`ConfigError` for a setting that cannot work with ``n_hidden`` layers."""
        if not 0 <= self.p < 1:
            raise ConfigError("regularizer.p", self.p, "dropout probability must be in [0, 1)")
        if not self.weight_decay >= 0:
            raise ConfigError("regularizer.weight_decay", self.weight_decay, "must be >= 0")

    def draw(
        self, n_steps: int, context: StepContext, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """This member's random numbers for ``n_steps`` steps, each a tensor (n_steps, ...),
        drawn from ``generator`` (block ``chunk`` of the member's ``stream``) only. The step
        stacks them over the group into (n_steps, E', ...) and hands the hooks one step's
        (E', ...); per-member settings the hooks need go in here too."""
        return {}

    @classmethod
    def prepare(
        cls, group: Sequence[Regularizer], draws: dict, context: StepContext
    ) -> dict[str, object]:
        """The group's draws (..., E', ...) turned into what the hooks use, once per chunk
        (a leading step axis) or once per step; values are tensors or lists along the step
        axis. Returns ``draws`` unchanged by default."""
        return draws

    @classmethod
    def targets(cls, y: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        """The group's training targets: y (E', N) labels in [0, 1], or (E', N, K) one-hot."""
        return y

    @classmethod
    def at_layer(cls, j: int, h: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        """The group's inputs (j = 0) or hidden states after hidden layer j, (E', N, width)."""
        return h

    @classmethod
    def loss(cls, rows: torch.Tensor, draw: dict, context: StepContext) -> torch.Tensor:
        """The group's loss (E',) from each row's loss against its targets (E', N)
        (and, with ``needs_clean``, the clean batch's rows in ``draw["clean"]``)."""
        return rows.mean(-1)

    @classmethod
    def mixes_by_halves(cls, group: Sequence[Regularizer], context: StepContext) -> bool:
        """Whether the group's members mix by halves: all 2·B rows go through the network
        and :meth:`loss` reads the first half, where each member's run alone goes on with
        its B mixed rows. The output layer then sums their bias gradient half by half (see
        :func:`spiralmix.model.one_logit`), which is what keeps them exact at any B."""
        return False

    @classmethod
    def scalars(cls, draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-step TensorBoard scalars (n_steps, E') from a chunk's raw draws."""
        return {}

    @classmethod
    def acts(cls) -> bool:
        """Whether the class changes the step at all (the step skips groups that do not)."""
        hooks = ("draw", "prepare", "targets", "at_layer", "loss")
        own = [k for k in cls.__mro__ if issubclass(k, Regularizer) and k is not Regularizer]
        return any(name in k.__dict__ for k in own for name in hooks)


@dataclass
class WeightDecay(Regularizer):
    """AdamW's decoupled weight decay (``conf/regularizer/weight_decay.yaml``)."""


@dataclass
class Dropout(Regularizer):
    """Dropout after each hidden layer (``conf/regularizer/dropout.yaml``); the masks come
    from the member's ``dropout`` stream."""
