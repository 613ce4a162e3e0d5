"""The LightningModule: trains an ensemble of MLPs (one per run) with :mod:`spiralmix.step`."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytorch_lightning as pl
import torch

from spiralmix import metrics
from spiralmix.compat import count_optimizer_steps
from spiralmix.regularizers import Regularizer
from spiralmix.step import EnsembleStep


class MixupClassifier(pl.LightningModule):
    """One run, or several trained side by side, each with its own seed and regularizer.

    Each member is one run: a seed with its own data split (from the datamodule), initial
    weights, batches and draws, and its own :class:`Regularizer`. Member e trains like a
    separate one-member run of the same seed and settings (:class:`EnsembleStep`).

    A ``training_step`` call runs ``steps_per_call`` optimizer steps on a chunk of batches
    (Lightning's per-call overhead would otherwise dominate a model this small).
    """

    def __init__(
        self,
        regularizers: Sequence[Regularizer],
        seeds: Sequence[int] = (123,),
        n_features: int = 2,
        hidden_dims: Sequence[int] = (32, 32, 32),
        lr: float = 1e-3,
        pairing: str = "halves",
        batch_size: int = 32,
        steps_per_call: int = 250,
        log_every_n_steps: int = 1,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["regularizers"])
        self.automatic_optimization = False
        self.seeds = list(seeds)
        self.ensemble = EnsembleStep(
            seeds, regularizers, n_features, hidden_dims, n_classes, lr, batch_size, pairing,
            steps_per_call,
        )  # fmt: skip
        self.net = self.ensemble.net
        self.failures: dict[int, int] = {}  # member → step whose training loss was not finite
        self.train_time_s = 0.0  # fit time of earlier (resumed-from) processes

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    @property
    def member_runs(self) -> list:
        """Each member's TensorBoard run (:class:`spiralmix.events.EnsembleLogger`); none
        without a logger."""
        return self.logger.members if self.logger is not None else []

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
        draws = self.ensemble.draw(chunk, n_steps)
        x, y = batch["x"][:n_steps], batch["y"][:n_steps]
        losses = self.ensemble.train_chunk(x, y, draws, optimizer)
        count_optimizer_steps(self.trainer, n_steps)  # global_step += n_steps
        steps, values = self.ensemble.scalars(
            first_step, losses, draws, self.hparams.log_every_n_steps
        )
        for run, member_values in zip(self.member_runs, values):
            run.events.write_scalars(steps, member_values)
        self._record_failures(first_step, losses)

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

    # Plain lists, dicts and numbers only: checkpoints load with torch.load(weights_only=True).
    # The evaluation history beside them is saved by spiralmix.evaluation.Evaluations.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.setdefault("spiralmix", {})
        state.update(failures=self.failures, train_time_s=self.elapsed_s)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["spiralmix"]
        self.failures, self.train_time_s = state["failures"], state["train_time_s"]

    def on_fit_start(self) -> None:
        self._fit_start = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        """Training wall time so far, over this process and any it resumed from."""
        return self.train_time_s + (time.perf_counter() - self._fit_start)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.ensemble.optimizer()
