"""Callbacks: decision-boundary and diagnostic figures, and a progress bar over the whole run."""

from __future__ import annotations

import logging
import sys
import time

import pytorch_lightning as pl
import torch
from torch.utils.tensorboard.summary import hparams
from tqdm.auto import tqdm

from spiralmix import plots
from spiralmix.compat import event_file_writer

log = logging.getLogger("spiralmix")  # shown and kept by Hydra's job logging


class BoundaryImages(pl.Callback):
    """After each evaluation of the module, log each member's figures to its own logger.

    Tags: ``boundary/test_data`` (once), ``boundary/probability``,
    ``boundary/probability_train``, and with ``diagnostics`` also
    ``calibration/reliability`` and ``flatten/spectrum``; when the last hidden layer has 2
    units, ``bottleneck/hidden_space`` (input and hidden space). The module's evaluation cadence
    decides when; figures are drawn from the tensors it kept, so nothing is evaluated twice.
    """

    def __init__(self, labels: list[str], diagnostics: bool = True) -> None:
        if not labels or not all(labels):
            raise ValueError("labels must be non-empty strings, one per member (figure titles)")
        self.labels = labels
        self.diagnostics = diagnostics
        self._rendered_step: int | None = None
        self._panels: list[dict] = []  # per member, built at the first evaluation

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if trainer.global_step == 0:
            for e, (logger, seed) in enumerate(zip(trainer.loggers, pl_module.seeds)):
                title = f"test data · seed {seed}"
                fig = plots.data_figure(dm.test_X[e], dm.test_y[e], title)
                logger.experiment.add_figure("boundary/test_data", fig, 0)

    # The module evaluates step 0 in its own on_train_start, which runs after the callbacks'.
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        self._render(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        self._render(trainer, pl_module)

    @torch.no_grad()
    def _render(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        latest = pl_module.last_eval
        if not latest or latest["step"] == self._rendered_step:
            return
        step = self._rendered_step = latest["step"]
        dm = trainer.datamodule
        if not self._panels:
            self._panels = [self._make_panels(pl_module, dm, e) for e in range(pl_module.n_members)]
        for e, (logger, seed) in enumerate(zip(trainer.loggers, pl_module.seeds)):
            writer, panels = logger.experiment, self._panels[e]
            title = f"{self.labels[e]} · seed {seed} · step {step:,}"
            images = {
                "boundary/probability": panels["probability"].render(latest["grid_p"][e], title),
                "boundary/probability_train": panels["train"].render(latest["grid_p"][e], title),
            }
            if self.diagnostics:
                stats = {k: v if k == "edges" else v[e] for k, v in latest["reliability"].items()}
                spectra = [sv[e] for sv in latest["spectra"]]
                images["calibration/reliability"] = panels["reliability"].render(stats, title)
                images["flatten/spectrum"] = panels["spectrum"].render(spectra, title)
            if "bottleneck" in panels:
                images["bottleneck/hidden_space"] = panels["bottleneck"].render(
                    latest["grid_p"][e],
                    latest["hidden_grid"][e],
                    latest["hidden_grid_p"][e],
                    latest["hidden_codes"][e],
                    title,
                )
            for tag, image in images.items():
                writer.add_image(tag, image, step, dataformats="HWC")

    @staticmethod
    def _make_panels(pl_module: pl.LightningModule, dm, e: int) -> dict:
        grid = pl_module.last_eval["grid"][e]
        widths = [dm.train_X.shape[-1], *pl_module.hparams.hidden_dims]
        edges = torch.linspace(0.5, 1.0, pl_module.hparams.ece_bins + 1)
        panels = {
            "probability": plots.BoundaryPanel(grid),
            "train": plots.BoundaryPanel(grid, dm.train_X[e], dm.train_y[e]),
            "reliability": plots.ReliabilityPanel(edges),
            "spectrum": plots.SpectrumPanel(widths),
        }
        if "hidden_codes" in pl_module.last_eval:  # the last hidden layer has 2 units
            panels["bottleneck"] = plots.BottleneckPanel(grid, dm.train_X[e], dm.train_y[e])
        return panels


class HparamsWithResults(pl.Callback):
    """At the end, log each member's flat config as hparams, with the test metrics as its
    results, so TensorBoard's HPARAMS tab compares runs (and seeds) side by side.

    The HPARAMS tab shows the columns in the order of ``member_hparams`` (put what differs
    between runs first) and reads each result from the run's own ``test/*`` scalars (their
    last value), so no extra one-point charts are written.
    """

    def __init__(self, member_hparams: list[dict]) -> None:
        self.member_hparams = member_hparams

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        final = pl_module.history[-1]
        for e, (logger, params) in enumerate(zip(trainer.loggers, self.member_hparams)):
            results = {k: v[e] for k, v in final.items() if k.startswith("test/")}
            writer = event_file_writer(logger.experiment)
            for summary in hparams(params, results):  # experiment, session start, session end
                writer.add_summary(summary, trainer.global_step)


class RunProgress(pl.Callback):
    """One progress bar over all steps (steps/s, time left, latest test accuracy).

    On a terminal it is a live bar; otherwise (logs, sweeps) it prints one line per
    evaluation, so log files stay readable.
    """

    def __init__(self, interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._bar: tqdm | None = None
        self._seen_eval = -1

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

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        self._report(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_) -> None:
        if self._bar is not None:
            self._bar.update(trainer.global_step - self._bar.n)
        self._report(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()

    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.history or pl_module.history[-1]["step"] == self._seen_eval:
            return
        latest = pl_module.history[-1]
        self._seen_eval = latest["step"]
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
