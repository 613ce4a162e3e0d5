"""The LightningModule: trains an ensemble of MLPs (one per run) with optional manifold mixup."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytorch_lightning as pl
import torch

from spiralmix import metrics
from spiralmix.adamw import adamw_stepper
from spiralmix.compat import count_optimizer_steps
from spiralmix.evaluation import Evaluation, EvaluationListener, EvaluationSettings, evaluate
from spiralmix.mixup import (
    halves_mixing_weights,
    mix,
    mix_halves,
    sample_lambda,
    sample_layers,
    sample_permutations,
)
from spiralmix.model import MLPEnsemble
from spiralmix.streams import stream


def per_member(value: object, n: int) -> list:
    """A per-member setting as a list of n values (a single value is shared by all)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(f"expected {n} per-member values, got {len(value)}")
        return list(value)
    return [value] * n


class MixupClassifier(pl.LightningModule):
    """Manifold mixup on a 2-D data set, for one run or several trained side by side.

    Each member of the :class:`MLPEnsemble` is one run: a seed with its own data split (from
    the datamodule), initial weights, batches, λ, k and dropout masks, all drawn from that
    seed's streams, and its own regularizer settings (``p``, ``weight_decay`` and the
    ``mixup_*`` arguments take one value for all members or a list with one per member).
    Member e trains like a separate one-member run of the same seed and settings.

    A ``training_step`` call runs ``steps_per_call`` optimizer steps on a chunk of batches
    (Lightning's per-call overhead would otherwise dominate a model this small). Each step
    draws k ∈ [k_min, k_max] and λ ~ Beta(α, α) per mixup member, runs both halves of the
    batch up to layer k, mixes hidden states and targets with λ, runs the rest, and minimises
    binary cross-entropy on the soft targets (two classes, one logit) or softmax cross-entropy
    on the mixed one-hot targets (``n_classes`` = K > 2, K logits). Without mixup every
    sample of the batch is used.
    """

    def __init__(
        self,
        seeds: Sequence[int] = (123,),
        n_features: int = 2,
        hidden_dims: Sequence[int] = (32, 32, 32),
        p: float | Sequence[float] = 0.0,
        lr: float = 1e-3,
        weight_decay: float | Sequence[float] = 0.0,
        mixup_enabled: bool | Sequence[bool] = False,
        mixup_alpha: float | Sequence[float] = 2.0,
        mixup_layers: Sequence[Sequence[int] | None] | None = None,
        pairing: str = "halves",
        batch_size: int = 32,
        steps_per_call: int = 250,
        eval_every_n_steps: int = 2500,
        log_every_n_steps: int = 1,
        ece_bins: int = 15,
        flatten_fraction: float = 0.1,
        grid_resolution: int = 100,
        temperature_scaling: bool = False,
        n_classes: int = 2,
        ood_center: Sequence[float] = (0.0, 0.0),
        ood_radius: float = 2.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.automatic_optimization = False
        self.seeds = list(seeds)
        n = len(self.seeds)
        self.p = per_member(p, n)
        self.weight_decay = per_member(weight_decay, n)
        self.mixup_enabled = per_member(mixup_enabled, n)
        self.mixup_alpha = per_member(mixup_alpha, n)
        self.net = MLPEnsemble(
            [stream(s, "init") for s in self.seeds], n_features, hidden_dims, self.p, n_classes
        )
        self.loss_function = metrics.training_loss(n_classes)
        self.loss_rows = metrics.training_loss_rows(n_classes)
        # mixup_layers: None (all layers for everyone), one [k_min, k_max], or one per member.
        if mixup_layers is None or isinstance(mixup_layers[0], int):
            mixup_layers = [mixup_layers] * n
        self.mixup_layers = [
            (0, self.net.n_hidden) if layers is None else tuple(layers) for layers in mixup_layers
        ]
        self.history: list[dict] = []  # one entry per evaluation: step and metric → (E,) list
        self.failures: dict[int, int] = {}  # member → step whose training loss was not finite
        self.train_time_s = 0.0  # fit time of earlier (resumed-from) processes
        self.latest: Evaluation | None = None  # the latest evaluation
        self._masks: list[torch.Tensor] | None = None  # see _mask_buffers

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities for points x of shape (E, N, 2) or (N, 2) (same for all): of class 1,
        (E, N), for two classes; of each class, (E, N, K), for K > 2."""
        if x.ndim == 2:
            x = x.expand(self.n_members, -1, -1)
        return metrics.probabilities(self.net(x))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # The raw torch optimizer: Lightning's per-step hooks would cost more than the step.
        optimizer = self.optimizers().optimizer
        first_step = self.global_step
        chunk = int(batch["chunk"])
        assert chunk * self.hparams.steps_per_call == first_step, "batches out of step"
        n_steps = min(self.hparams.steps_per_call, self.trainer.max_steps - first_step)
        draws = self._draw(chunk, n_steps)
        losses = self._train_chunk(batch["x"][:n_steps], batch["y"][:n_steps], draws, optimizer)
        count_optimizer_steps(self.trainer, n_steps)  # global_step += n_steps
        self._log_steps(first_step, losses, draws)
        self._record_failures(first_step, losses)
        last = self.global_step >= self.trainer.max_steps or self.trainer.should_stop
        if self.global_step % self.hparams.eval_every_n_steps == 0 or last:
            self._evaluate_on_cpu()

    def _train_chunk(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        draws: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
    ) -> torch.Tensor:
        """One optimizer step per row of x (n_steps, E, N, 2) and y (n_steps, E, N), with
        the chunk's draws (n_steps, E, ...); returns the losses (n_steps, E).

        Everything per member and per step that does not depend on the weights (mixing
        weights) is prepared here once for the whole chunk, so a step is a fixed sequence of
        batched kernels over all members.
        """
        params = list(self.parameters())
        decay = self._decay_factors()
        if decay is not None:
            decay = [decay.to(x.device)] * len(params)
        step = adamw_stepper(optimizer, self.n_members)
        prepared = self._prepare(draws, x.device)
        per_step = [dict(zip(prepared, values)) for values in zip(*prepared.values())]
        losses = torch.empty(len(x), self.n_members, device=x.device)
        for s in range(len(x)):
            loss = self._loss(x[s], y[s], per_step[s] if per_step else {})
            # Members share no parameters, so the sum's gradient is each member's own.
            grads = torch.autograd.grad(loss.sum(), params)
            if decay is not None:
                with torch.no_grad():  # AdamW's decoupled decay, one rate per member
                    torch._foreach_mul_(params, decay)
            step(grads)
            losses[s] = loss.detach()
        return losses

    def _record_failures(self, first_step: int, losses: torch.Tensor) -> None:
        """Note members whose loss became non-finite; stop when no member is left training.

        A diverged member's NaNs stay in its own parameters (members share none), so the
        other seeds of an ensemble train on unharmed.
        """
        bad = ~torch.isfinite(losses)  # (n_steps, E)
        for e in bad.any(0).nonzero().flatten().tolist():
            if e not in self.failures:
                self.failures[e] = first_step + int(bad[:, e].nonzero()[0]) + 1
        if len(self.failures) == self.n_members:
            self.trainer.should_stop = True

    def _draw(self, chunk: int, n_steps: int) -> dict[str, torch.Tensor]:
        """Each member's random numbers for the chunk's steps, from that member's streams.

        Returns tensors (n_steps, E, ...): ``k`` (-1 for members without mixup), ``lam``,
        ``b`` (partners, permute pairing) and ``mask{j}`` (dropout masks, 1 where p = 0;
        views of buffers that the next call refills, see :meth:`_mask_buffers`).
        """
        hp = self.hparams
        draws: dict[str, list[torch.Tensor]] = {}
        n = 2 * hp.batch_size if hp.pairing == "halves" else hp.batch_size
        S = hp.steps_per_call  # always draw the whole chunk: the stream must not depend on n_steps
        any_mixup = any(self.mixup_enabled)
        for e, seed in enumerate(self.seeds):
            if any_mixup:
                k = torch.full((S,), -1)
                lam = torch.ones(S)
                partners = torch.arange(hp.batch_size).expand(S, -1)
                if self.mixup_enabled[e]:
                    gen = stream(seed, "mixup", chunk)
                    k = sample_layers(*self.mixup_layers[e], S, gen)
                    lam = sample_lambda(self.mixup_alpha[e], S, gen)
                    if hp.pairing == "permute":
                        partners = sample_permutations(S, hp.batch_size, gen)
                draws.setdefault("k", []).append(k)
                draws.setdefault("lam", []).append(lam)
                if hp.pairing == "permute":
                    draws.setdefault("b", []).append(partners)
            if self.p[e] > 0:
                p, gen = self.p[e], stream(seed, "dropout", chunk)
                for j, width in enumerate(hp.hidden_dims):
                    # (rand >= p) / (1 - p), written into the buffer without temporaries
                    mask = torch.rand(S, n, width, generator=gen).ge_(p)
                    torch.div(mask, 1 - p, out=self._mask_buffers(S, n)[j][:, e])
        # Stack members on axis 1 and keep the first n_steps: (n_steps, E, ...); drawn on the
        # CPU (the same numbers on every device), moved to the module's device once per chunk.
        out = {k: torch.stack(v, 1)[:n_steps].to(self.device) for k, v in draws.items()}
        if any(p > 0 for p in self.p):
            for j, mask in enumerate(self._mask_buffers(S, n)):
                out[f"mask{j}"] = mask[:n_steps].to(self.device)
        return out

    def _mask_buffers(self, n_steps: int, n_rows: int) -> list[torch.Tensor]:
        """Per hidden layer, the chunk's dropout masks of all members (S, E, n_rows, width).

        Kept from chunk to chunk: members without dropout keep their ones, members with
        dropout get new masks each chunk (so one chunk's masks are gone at the next ``_draw``).
        Filling the ones and stacking them anew each chunk cost more than a training step.
        """
        shape = (n_steps, self.n_members, n_rows)
        if self._masks is None or self._masks[0].shape[:3] != shape:
            self._masks = [torch.ones(*shape, width) for width in self.hparams.hidden_dims]
        return self._masks

    @property
    def _mixes_by_halves(self) -> bool:
        """Whether mixing runs on the batch halves of all members at once (:meth:`_loss_by_halves`).

        Used for ensembles; one run keeps the reference's operations, bit for bit.
        """
        if self.n_members == 1 or self.hparams.pairing != "halves":
            return False
        # All members always mixing at one layer (input mixup): the reference's way drops the
        # second half there and runs the later layers on half the rows.
        ranges = {r if on else None for on, r in zip(self.mixup_enabled, self.mixup_layers)}
        one_layer = len(ranges) == 1 and None not in ranges and len(set(ranges.pop())) == 1
        return any(self.mixup_enabled) and not one_layer

    def _prepare(
        self, draws: dict[str, torch.Tensor], device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """The draws (..., E, ...) as the step's inputs, moved to ``device``.

        For mixing by halves, k and λ become the mixing weights of every layer and of the
        targets, and ``mixes`` whether each member mixes in the step.
        """
        draws = {key: value.to(device) for key, value in draws.items()}
        if not (self._mixes_by_halves and "k" in draws):
            return draws
        k, lam = draws.pop("k"), draws.pop("lam")
        draws["mix"], draws["mix_targets"] = halves_mixing_weights(k, lam, self.net.n_hidden)
        draws["mixes"] = k >= 0
        return draws

    def _loss_by_halves(
        self, x: torch.Tensor, y: torch.Tensor, draw: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Per-member loss (E,) for x (E, 2B, 2) and y (E, 2B) or (E, 2B, K), with prepared draws.

        Every layer runs once for all members on all 2B rows; after each layer the first
        half of every member's rows is replaced by its mix with the second half, or kept
        (weights (1, 0)) for members that do not mix there. Members mixing at different
        layers thus cost no extra passes.

        A member that mixes has its B mixed rows in the first half from its mixing layer on
        and its loss is their mean: the very rows, operations and mean of its separate run
        (which goes on with the B mixed rows alone). The second half it carries along gets
        no gradient, so every number of the member is its separate run's, to the bit.
        """
        n_hidden = self.net.n_hidden
        masks = [draw[f"mask{j}"] for j in range(n_hidden)] if "mask0" in draw else None
        mixing = draw["mix"].unbind(0)  # per layer (E, 2, 1)
        h = mix_halves(x, mixing[0])
        for j in range(n_hidden):
            h = mix_halves(self.net(h, j, j + 1, masks), mixing[j + 1])
        targets = mix_halves(y, draw["mix_targets"])  # (E, 2B) or (E, 2B, K) soft labels
        rows = self.loss_rows(self.net(h, n_hidden), targets)  # (E, 2B)
        mixed_rows = rows[:, : rows.shape[1] // 2].mean(-1)
        if all(self.mixup_enabled):
            return mixed_rows
        return torch.where(draw["mixes"], mixed_rows, rows.mean(-1))

    def _loss(
        self, x: torch.Tensor, y: torch.Tensor, draw: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Per-member training loss of one step. x: (E, N, 2), y: (E, N) or (E, N, K) → (E,).

        ``draw`` holds the step's draws (E, ...), raw or already prepared (:meth:`_prepare`).
        """
        if self._mixes_by_halves and "k" in draw:
            draw = self._prepare(draw, x.device)
        if "mix" in draw:
            return self._loss_by_halves(x, y, draw)
        n_hidden = self.net.n_hidden
        masks = [draw[f"mask{j}"] for j in range(n_hidden)] if "mask0" in draw else None
        if "k" not in draw:
            return self.loss_function(self.net(x, dropout_masks=masks), y)
        # One run, the permute pairing (a member's partners are a permutation of its own rows,
        # so shapes never change), or every member mixing at one layer (the halves pairing then
        # goes on with the B mixed rows for all); other ensembles take _loss_by_halves.
        k, lam = draw["k"], draw["lam"]  # (E,), (E,); k = -1: this member does not mix
        ks = k.tolist()
        per_target = (-1,) + (1,) * (y.ndim - 1)  # broadcast over points (and classes)
        targets = mix(*self._pairs(y, draw), lam.view(per_target))  # (E, B) or (E, B, K)
        if min(ks) < 0:  # members without mixup keep their own targets
            targets = torch.where((k >= 0).view(per_target), targets, y)
        h = x
        for j in range(n_hidden + 1):
            if j > 0:
                h = self.net(h, j - 1, j, masks)
            if j not in ks:
                continue
            mixed = mix(*self._pairs(h, draw), lam.view(-1, 1, 1))  # (E, B, width)
            # Members that mix elsewhere, or not at all, keep their rows (one run always mixes).
            h = mixed if ks.count(j) == len(ks) else torch.where((k == j).view(-1, 1, 1), mixed, h)
            if masks is not None:
                masks = [m[:, : h.shape[1]] for m in masks]
        return self.loss_function(self.net(h, n_hidden), targets)

    def _pairs(
        self, t: torch.Tensor, draw: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The two sides of each mixed pair: rows (E, B, ...) of t (E, N, ...)."""
        if self.hparams.pairing == "halves":
            B = t.shape[1] // 2
            return t[:, :B], t[:, B:]
        b = draw["b"]  # (E, B) a permutation per member
        idx = b.view(*b.shape, *([1] * (t.ndim - 2))).expand(-1, -1, *t.shape[2:])
        return t, torch.gather(t, 1, idx)

    @torch.no_grad()
    def evaluate(self) -> Evaluation:
        """Evaluate every member on its whole test set (and train / validation sets).

        Logs each metric to the member's own logger at the current step, appends it to
        ``history``, keeps the record as ``latest`` and hands it to every callback that is
        an :class:`EvaluationListener` (figures, progress).
        """
        hp = self.hparams
        settings = EvaluationSettings(
            n_classes=hp.n_classes,
            grid_resolution=hp.grid_resolution,
            ece_bins=hp.ece_bins,
            flatten_fraction=hp.flatten_fraction,
            ood_center=tuple(hp.ood_center),
            ood_radius=hp.ood_radius,
            temperature_scaling=hp.temperature_scaling,
        )
        was_training = self.training
        self.eval()
        record = evaluate(self.net, self.trainer.datamodule, settings, self.global_step)
        self.train(was_training)

        step = self.global_step
        columns = {name: value.tolist() for name, value in record.metrics.items()}
        for e, logger in enumerate(self.loggers):
            logger.events.write_scalars([step], {name: [v[e]] for name, v in columns.items()})
        self.history.append({"step": step, **columns})
        self.latest = record
        for callback in self.trainer.callbacks:
            if isinstance(callback, EvaluationListener):
                callback.on_evaluation(self.trainer, self, record)
        return record

    def on_train_start(self) -> None:
        if self.global_step == 0:  # a resumed run evaluated this step before it stopped
            self._evaluate_on_cpu()

    def _evaluate_on_cpu(self) -> None:
        """:meth:`evaluate` with the ensemble on the CPU, where the data sets, figures and
        saved tensors live; a run on another device moves it there and back (a few kB)."""
        device = self.device
        self.cpu()
        try:
            self.evaluate()
        finally:
            self.to(device)

    # Plain lists, dicts and numbers only: checkpoints load with torch.load(weights_only=True).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["spiralmix"] = {
            "history": self.history,
            "failures": self.failures,
            "train_time_s": self.elapsed_s,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["spiralmix"]
        self.history, self.failures = state["history"], state["failures"]
        self.train_time_s = state["train_time_s"]

    def on_fit_start(self) -> None:
        self._fit_start = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        """Training wall time so far, over this process and any it resumed from."""
        return self.train_time_s + (time.perf_counter() - self._fit_start)

    def _log_steps(
        self, first_step: int, losses: torch.Tensor, draws: dict, loggers: Sequence = ()
    ) -> None:
        """Per-step scalars, one TensorBoard event per step for all tags, a chunk at a time.

        To the module's loggers (:class:`spiralmix.events.RunLogger`), or to ``loggers`` (one
        per member) when given.
        """
        every = self.hparams.log_every_n_steps
        columns = {"train/loss": losses}
        if "k" in draws:
            columns.update({"mixup/k": draws["k"], "mixup/lambda": draws["lam"]})
        rows = range(-(first_step + 1) % every, len(losses), every)
        # Step g is the g-th optimizer step; evaluations at g see its result.
        steps = [first_step + s + 1 for s in rows]
        for e, logger in enumerate(loggers or self.loggers):
            tags = columns if self.mixup_enabled[e] else {"train/loss": losses}
            values = {tag: column[rows.start :: every, e].tolist() for tag, column in tags.items()}
            logger.events.write_scalars(steps, values)

    def _decay_factors(self) -> torch.Tensor | None:
        """(E, 1, 1) factors 1 − lr·weight_decay when members decay at different rates
        (then applied by hand before each step), None when AdamW does it for all."""
        if len(set(self.weight_decay)) == 1:
            return None
        # In double precision and then rounded, as the fused AdamW kernel computes its factor.
        factors = [1 - self.hparams.lr * rate for rate in self.weight_decay]
        return torch.tensor(factors, dtype=torch.float32, device=self.device).view(-1, 1, 1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        shared = self.weight_decay[0] if self._decay_factors() is None else 0.0
        kwargs = {"lr": self.hparams.lr, "weight_decay": shared}
        try:  # the fused kernel does one pass over all parameters instead of one per tensor
            return torch.optim.AdamW(self.parameters(), fused=True, **kwargs)
        except (RuntimeError, TypeError):
            return torch.optim.AdamW(self.parameters(), **kwargs)
