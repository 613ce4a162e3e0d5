"""The ensemble's training step in plain torch: draw a chunk, compute every member's loss,
take the optimizer steps.

An ensemble is E independent runs (members) stacked along a leading axis: one seed and one
regularizer each (:mod:`spiralmix.regularizers`); members may use different regularizers.
Member e draws its batches, dropout masks and its regularizer's numbers from its own seed's
streams (:mod:`spiralmix.streams`) and trains exactly, bit for bit, like a one-member run of
the same seed and settings. The LightningModule (:mod:`spiralmix.module`) calls this once
per ``training_step``; tests and benchmarks call it directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from spiralmix import metrics
from spiralmix.adamw import adamw_stepper
from spiralmix.compat import foreach_mul_
from spiralmix.model import MLPEnsemble
from spiralmix.regularizers import Regularizer, StepContext
from spiralmix.streams import stream


@dataclass
class Group:
    """The members that use one regularizer class: their indices, settings and context."""

    cls: type[Regularizer]
    members: list[int]
    regularizers: list[Regularizer]
    context: StepContext
    index: torch.Tensor  # the members' indices, for gathering their rows
    span: tuple[int, int] | None = field(init=False)  # (first, stop) if they are consecutive

    def __post_init__(self) -> None:
        first, stop = self.members[0], self.members[-1] + 1
        self.span = (first, stop) if self.members == list(range(first, stop)) else None


@dataclass
class Draws:
    """Random numbers of a chunk (leading step axis) or of one step: per group, its draws
    stacked over its members (..., E', ...); per hidden layer, every member's dropout masks
    (..., E, rows, width), or None without dropout. ``prepared``: already turned into what
    the hooks use (:meth:`Regularizer.prepare`)."""

    groups: list[dict]
    masks: list[torch.Tensor] | None = None
    prepared: bool = False

    def step(self, s: int) -> Draws:
        """The draws of step s of a chunk."""
        groups = [{key: value[s] for key, value in g.items()} for g in self.groups]
        masks = None if self.masks is None else [m[s] for m in self.masks]
        return Draws(groups, masks, self.prepared)


class EnsembleStep:
    """The members' network, draws, losses and AdamW steps.

    Args:
        seeds: one per member; its streams give the member's weights and draws.
        regularizers: one per member (or one for all).
        steps_per_call: the steps of a chunk; a chunk always draws all of them, so that a
            stream's numbers never depend on where a run stops.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        regularizers: Regularizer | Sequence[Regularizer],
        n_features: int = 2,
        hidden_dims: Sequence[int] = (32, 32, 32),
        n_classes: int = 2,
        lr: float = 1e-3,
        batch_size: int = 32,
        pairing: str = "halves",
        steps_per_call: int = 250,
    ) -> None:
        self.seeds = list(seeds)
        n = len(self.seeds)
        if isinstance(regularizers, Regularizer):
            regularizers = [regularizers] * n
        if len(regularizers) != n:
            raise ValueError(f"expected {n} regularizers, got {len(regularizers)}")
        self.regularizers = list(regularizers)
        self.hidden_dims = list(hidden_dims)
        self.lr, self.batch_size, self.pairing = lr, batch_size, pairing
        self.steps_per_call = steps_per_call
        self.p = [r.p for r in self.regularizers]
        self.weight_decay = [r.weight_decay for r in self.regularizers]
        self.net = MLPEnsemble(
            [stream(s, "init") for s in self.seeds], n_features, hidden_dims, self.p, n_classes
        )
        self.loss_rows = metrics.block_aligned(metrics.training_loss_rows(n_classes))
        by_class: dict[type, list[int]] = {}
        for e, r in enumerate(self.regularizers):
            by_class.setdefault(type(r), []).append(e)
        self.groups = [
            Group(
                cls, members, [self.regularizers[e] for e in members],
                StepContext(batch_size, pairing, self.net.n_hidden, n_classes, len(members) == n,
                            (n_features, *self.hidden_dims)),
                torch.tensor(members),
            )
            for cls, members in by_class.items()
            if cls.acts()
        ]  # fmt: skip
        by_halves = torch.zeros(n, dtype=torch.bool)
        for group in self.groups:
            if group.cls.mixes_by_halves(group.regularizers, group.context):
                by_halves[group.index] = True
        # (E,) the members that mix by halves (see model.one_logit), None if none
        self.by_halves = by_halves if by_halves.any() else None
        self._masks: list[torch.Tensor] | None = None  # see _mask_buffers

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    @property
    def rows(self) -> int:
        """Points per member and step: 2·B pairs' sides (halves) or B (permute)."""
        return 2 * self.batch_size if self.pairing == "halves" else self.batch_size

    def draw(self, chunk: int, n_steps: int | None = None) -> Draws:
        """Every member's random numbers for the first ``n_steps`` steps of ``chunk``.

        Drawn on the CPU (the same numbers on every device) and moved to the network's
        device once per chunk. The dropout masks are views of buffers that the next call
        refills (:meth:`_mask_buffers`).
        """
        S = (
            self.steps_per_call
        )  # always draw the whole chunk: the stream must not depend on n_steps
        n_steps = S if n_steps is None else n_steps
        device = self.net.weights[0].device
        groups = []
        for group in self.groups:
            per_member = []
            for e, r in zip(group.members, group.regularizers):
                generator = stream(self.seeds[e], r.stream, chunk) if r.stream else None
                per_member.append(r.draw(S, group.context, generator))
            groups.append(
                {key: torch.stack([d[key] for d in per_member], 1)[:n_steps].to(device)
                 for key in per_member[0]}
            )  # fmt: skip
        masks = None
        if any(p > 0 for p in self.p):
            buffers = self._mask_buffers(S, self.rows)
            for e, (seed, p) in enumerate(zip(self.seeds, self.p)):
                if p > 0:
                    gen = stream(seed, "dropout", chunk)
                    for j, width in enumerate(self.hidden_dims):
                        # (rand >= p) / (1 - p), written into the buffer without temporaries
                        mask = torch.rand(S, self.rows, width, generator=gen).ge_(p)
                        torch.div(mask, 1 - p, out=buffers[j][:, e])
            masks = [m[:n_steps].to(device) for m in buffers]
        return Draws(groups, masks)

    def _mask_buffers(self, n_steps: int, n_rows: int) -> list[torch.Tensor]:
        """Per hidden layer, the chunk's dropout masks of all members (S, E, n_rows, width).

        Kept from chunk to chunk: members without dropout keep their ones, members with
        dropout get new masks each chunk (so one chunk's masks are gone at the next ``draw``).
        Filling the ones and stacking them anew each chunk cost more than a training step.
        """
        shape = (n_steps, self.n_members, n_rows)
        if self._masks is None or self._masks[0].shape[:3] != shape:
            self._masks = [torch.ones(*shape, width) for width in self.hidden_dims]
        return self._masks

    def prepare(self, draws: Draws) -> Draws:
        """The draws as the hooks use them (:meth:`Regularizer.prepare`), once per chunk."""
        if draws.prepared:
            return draws
        groups = [
            g.cls.prepare(g.regularizers, d, g.context) for g, d in zip(self.groups, draws.groups)
        ]
        return Draws(groups, draws.masks, prepared=True)

    def loss(self, x: torch.Tensor, y: torch.Tensor, draws: Draws) -> torch.Tensor:
        """Per-member training loss of one step (E,): x (E, N, 2), y (E, N) or (E, N, K),
        with the step's draws (raw or prepared)."""
        masks = draws.masks
        if not self.groups:
            return self.loss_rows(self.net(x, dropout_masks=masks), y).mean(-1)
        draws = self.prepare(draws)
        n_hidden = self.net.n_hidden
        # A fresh dict per group and call: at_layer may leave in it what targets and loss use.
        active = [(group, dict(d)) for group, d in zip(self.groups, draws.groups)]
        clean = None
        if any(group.cls.needs_clean for group, _ in active):  # the batch as no hook sees it
            clean = self.loss_rows(self.net(x, dropout_masks=masks), y)  # (E, N)
        h = x
        for j in range(n_hidden + 1):
            if j > 0:
                h = self.net(h, j - 1, j, masks)
            for group, d in active:
                h = _apply(group, h, group.cls.at_layer, (j,), (d, group.context))
            if masks is not None and masks[0].shape[1] != h.shape[1]:  # rows were dropped
                masks = [m[:, : h.shape[1]] for m in masks]
        for group, d in active:  # after the layers: targets may use what at_layer measured
            y = _apply(group, y, group.cls.targets, (), (d, group.context))
            if group.cls.needs_clean:
                d["clean"] = clean if group.context.whole else _split(group, clean)[1]
        by_halves = None if self.by_halves is None else self.by_halves.to(h.device)
        logits = self.net(h, n_hidden, by_halves=by_halves)
        rows = self.loss_rows(logits, y)  # (E, N')
        if len(active) == 1 and active[0][0].context.whole:
            group, d = active[0]
            return group.cls.loss(rows, d, group.context)
        loss = rows.mean(-1)  # members whose regularizer keeps the loss as it is
        for group, d in active:
            own = group.cls.loss(_split(group, rows)[1], d, group.context)
            loss = _join(group, _split(group, loss), own)
        return loss

    def train_chunk(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        draws: Draws,
        optimizer: torch.optim.Optimizer,
    ) -> torch.Tensor:
        """One optimizer step per row of x (n_steps, E, N, 2) and y (n_steps, E, N), with
        the chunk's draws; returns the losses (n_steps, E).

        Everything per member and per step that does not depend on the weights (mixing
        weights) is prepared here once for the whole chunk, so a step is a fixed sequence of
        batched kernels over all members.
        """
        params = list(self.net.parameters())
        decay = self.decay_factors()
        if decay is not None:
            decay = [decay.to(x.device)] * len(params)
        step = adamw_stepper(optimizer, self.n_members)
        prepared = self.prepare(draws)
        per_step = [prepared.step(s) for s in range(len(x))]
        losses = torch.empty(len(x), self.n_members, device=x.device)
        for s in range(len(x)):
            loss = self.loss(x[s], y[s], per_step[s])
            # Members share no parameters, so the sum's gradient is each member's own.
            grads = torch.autograd.grad(loss.sum(), params)
            if decay is not None:
                with torch.no_grad():  # AdamW's decoupled decay, one rate per member
                    foreach_mul_(params, decay)
            step(grads)
            losses[s] = loss.detach()
        return losses

    def scalars(
        self, first_step: int, losses: torch.Tensor, draws: Draws, every: int = 1
    ) -> tuple[list[int], list[dict[str, list[float]]]]:
        """Per-step scalars of a chunk that started after ``first_step``: the steps logged
        (every ``every``-th; step g is the g-th optimizer step) and, per member, tag → values."""
        rows = range(-(first_step + 1) % every, len(losses), every)
        steps = [first_step + s + 1 for s in rows]
        loss = losses[rows.start :: every].T.tolist()
        out = [{"train/loss": loss[e]} for e in range(self.n_members)]
        for group, d in zip(self.groups, draws.groups):
            for tag, column in group.cls.scalars(d).items():
                values = column[rows.start :: every].T.tolist()
                for i, e in enumerate(group.members):
                    out[e][tag] = values[i]
        return steps, out

    def decay_factors(self) -> torch.Tensor | None:
        """(E, 1, 1) factors 1 − lr·weight_decay when members decay at different rates
        (then applied by hand before each step), None when AdamW does it for all."""
        if len(set(self.weight_decay)) == 1:
            return None
        # In double precision and then rounded, as the fused AdamW kernel computes its factor.
        factors = [1 - self.lr * rate for rate in self.weight_decay]
        device = self.net.weights[0].device
        return torch.tensor(factors, dtype=torch.float32, device=device).view(-1, 1, 1)

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the members' parameters, with their shared weight decay if any."""
        shared = self.weight_decay[0] if self.decay_factors() is None else 0.0
        kwargs = {"lr": self.lr, "weight_decay": shared}
        try:  # the fused kernel does one pass over all parameters instead of one per tensor
            return torch.optim.AdamW(self.net.parameters(), fused=True, **kwargs)
        except (RuntimeError, TypeError):
            return torch.optim.AdamW(self.net.parameters(), **kwargs)


def _apply(
    group: Group, t: torch.Tensor, hook: Callable, before: tuple, after: tuple
) -> torch.Tensor:
    """``hook(*before, rows, *after)`` on the group's members' rows of t (members on axis
    0); the other members' rows are kept as they are."""
    if group.context.whole:
        return hook(*before, t, *after)
    parts = _split(group, t)
    return _join(group, parts, hook(*before, parts[1], *after))


def _split(group: Group, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """t (members on axis 0) in parts whose middle one holds the group's members' rows:
    (before, rows, after), views, when the members are consecutive, else (t, rows)."""
    if group.span is None:
        return t, t.index_select(0, group.index.to(t.device))
    first, stop = group.span
    return t.split([first, stop - first, len(t) - stop])


def _join(group: Group, parts: tuple[torch.Tensor, ...], rows: torch.Tensor) -> torch.Tensor:
    """The tensor that ``parts`` (:func:`_split`) came from with the group's rows replaced
    by ``rows``. For consecutive members one concatenation, whose gradient is views and
    the split's one concatenation: the training step of 10 seeds each of none, dropout and
    mixup takes 11 % less than with index_copy and index_select, forward and backward."""
    if group.span is None:
        t, _ = parts
        return t.index_copy(0, group.index.to(t.device), rows)
    before, _, after = parts
    return torch.cat([before, rows, after])
