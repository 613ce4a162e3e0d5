"""Callbacks: decision-boundary and diagnostic figures, and a progress bar over the whole run."""

from __future__ import annotations

import logging
import sys
import time

import pytorch_lightning as pl
import torch
from tqdm.auto import tqdm

from spiralmix import plots
from spiralmix.compat import event_file_writer
from spiralmix.evaluation import Evaluation, EvaluationListener
from spiralmix.hparams import hparams_summaries

log = logging.getLogger("spiralmix")  # shown and kept by Hydra's job logging


class BoundaryImages(pl.Callback, EvaluationListener):
    """After each evaluation of the module, log each member's figures to its own logger.

    Tags: ``boundary/test_data`` (once), ``boundary/probability``,
    ``boundary/probability_train`` (the probability of class 1 for two classes; a map with
    a colour per class, fading to white where unsure, for more), and with ``diagnostics``
    also ``calibration/reliability`` and ``flatten/spectrum``; when the last hidden layer
    has 2 units (two classes), ``bottleneck/hidden_space`` (input and hidden space).
    Figures are drawn from the :class:`Evaluation` record, so nothing is evaluated twice.
    """

    def __init__(self, labels: list[str], diagnostics: bool = True, n_classes: int = 2) -> None:
        if not labels or not all(labels):
            raise ValueError("labels must be non-empty strings, one per member (figure titles)")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.labels = labels
        self.diagnostics = diagnostics
        self.n_classes = n_classes
        self._panels: list[dict] = []  # per member, built at the first evaluation

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if trainer.global_step == 0:
            for e, (logger, seed) in enumerate(zip(pl_module.member_runs, pl_module.seeds)):
                title = f"test data · {self.labels[e]} · seed {seed}"
                fig = plots.data_figure(dm.test_X[e], dm.test_y[e], title, self.n_classes)
                logger.experiment.add_figure("boundary/test_data", fig, 0)

    @torch.no_grad()
    def on_evaluation(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, evaluation: Evaluation
    ) -> None:
        step = evaluation.step
        dm = trainer.datamodule
        if not self._panels:
            # Every member's reliability diagram has the same axes: one figure draws them all.
            reliability = plots.ReliabilityPanel(evaluation.reliability["edges"])
            self._panels = [
                self._make_panels(evaluation, dm, pl_module.hparams.hidden_dims, e, reliability)
                for e in range(len(self.labels))
            ]
        for e, (logger, seed) in enumerate(zip(pl_module.member_runs, pl_module.seeds)):
            panels = self._panels[e]
            title = f"{self.labels[e]} · seed {seed} · step {step:,}"
            grid_p = evaluation.grid_p[e]
            images = {
                "boundary/probability": panels["probability"].render(grid_p, title),
                "boundary/probability_train": panels["train"].render(grid_p, title),
            }
            if self.diagnostics:
                stats = {k: v if k == "edges" else v[e] for k, v in evaluation.reliability.items()}
                spectra = [sv[e] for sv in evaluation.spectra]
                images["calibration/reliability"] = panels["reliability"].render(stats, title)
                images["flatten/spectrum"] = panels["spectrum"].render(spectra, title)
            if "bottleneck" in panels:
                images["bottleneck/hidden_space"] = panels["bottleneck"].render(
                    grid_p,
                    evaluation.hidden_grid[e],
                    evaluation.hidden_grid_p[e],
                    evaluation.hidden_codes[e],
                    title,
                )
            logger.events.write_images(step, images)

    def _make_panels(
        self, evaluation: Evaluation, dm, hidden_dims, e: int, reliability: plots.ReliabilityPanel
    ) -> dict:
        grid, K = evaluation.grid[e], self.n_classes
        X, y = dm.train_X[e], dm.train_y[e]
        if K == 2:
            boundary = {
                "probability": plots.BoundaryPanel(grid),
                "train": plots.BoundaryPanel(grid, X, y),
            }
        else:
            boundary = {
                "probability": plots.ClassMapPanel(grid, K),
                "train": plots.ClassMapPanel(grid, K, X, y),
            }
        panels = {
            **boundary,
            "reliability": reliability,
            "spectrum": plots.SpectrumPanel([dm.train_X.shape[-1], *hidden_dims], K),
        }
        if evaluation.hidden_codes is not None:  # the last hidden layer has 2 units
            panels["bottleneck"] = plots.BottleneckPanel(grid, X, y)
        return panels


class HparamsWithResults(pl.Callback, EvaluationListener):
    """At the end, log each member's flat config as hparams, with the test metrics as its
    results, so TensorBoard's HPARAMS tab compares runs (and seeds) side by side.

    The HPARAMS tab shows the columns in the order of ``member_hparams`` (put what differs
    between runs first) and reads each result from the run's own ``test/*`` scalars (their
    last value), so no extra one-point charts are written.
    """

    def __init__(self, member_hparams: list[dict]) -> None:
        self.member_hparams = member_hparams
        self._final: dict[str, torch.Tensor] = {}

    def on_evaluation(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, evaluation: Evaluation
    ) -> None:
        self._final = evaluation.metrics

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for e, (logger, params) in enumerate(zip(pl_module.member_runs, self.member_hparams)):
            results = {k: v[e].item() for k, v in self._final.items() if k.startswith("test/")}
            writer = event_file_writer(logger.experiment)
            for summary in hparams_summaries(params, results):  # experiment, start, end
                writer.add_summary(summary, trainer.global_step)


class RunProgress(pl.Callback, EvaluationListener):
    """One progress bar over all steps (steps/s, time left, latest test accuracy).

    On a terminal it is a live bar; otherwise (logs, sweeps) it prints one line per
    evaluation, so log files stay readable.
    """

    def __init__(self, interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._bar: tqdm | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._start_step = time.perf_counter(), trainer.global_step
        if self.interactive:
            self._bar = tqdm(
                total=trainer.max_steps,
                initial=trainer.global_step,
                unit="step",
                dynamic_ncols=True,
                smoothing=0.1,
            )

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        if self._bar is not None:
            self._bar.update(trainer.global_step - self._bar.n)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()

    def on_evaluation(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, evaluation: Evaluation
    ) -> None:
        if not hasattr(self, "_start"):  # an evaluation outside of fit
            return
        latest = {k: v.tolist() for k, v in evaluation.metrics.items()}
        accs = latest["test/acc"]
        acc = f"{sum(accs) / len(accs):.3f}" + (" (mean)" if len(accs) > 1 else "")
        if self._bar is not None:
            self._bar.set_postfix_str(f"test acc {acc}")
            return
        done = trainer.global_step - self._start_step
        elapsed = time.perf_counter() - self._start
        speed = ""
        if done > 0:
            rate = done / elapsed
            left = (trainer.max_steps - trainer.global_step) / rate
            speed = f"  {rate:,.0f} steps/s  {left:,.0f} s left"
        log.info(
            f"step {trainer.global_step:>7,}/{trainer.max_steps:,}  test acc {acc}  "
            f"test loss {sum(latest['test/loss']) / len(accs):.3f}{speed}"
        )
