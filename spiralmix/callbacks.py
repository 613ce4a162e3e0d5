"""What each evaluation feeds: every member's scalars and figures, the HPARAMS tab, a progress
bar over the whole run.

Each consumer is handed, when ``train.py`` builds it, the members' TensorBoard runs and data
it writes about, and receives every :class:`~spiralmix.evaluation.Evaluation` from
:class:`~spiralmix.evaluation.Evaluations`; none reads the module, the trainer's datamodule
or another callback.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from tqdm.auto import tqdm

from spiralmix import plots
from spiralmix.compat import event_file_writer
from spiralmix.evaluation import Evaluation
from spiralmix.events import RunLogger
from spiralmix.hparams import hparams_summaries

log = logging.getLogger("spiralmix")  # shown and kept by Hydra's job logging


class EvaluationScalars:
    """Writes each evaluation's metrics into each member's own run, at the evaluation's step."""

    def __init__(self, runs: Sequence[RunLogger]) -> None:
        self.runs = list(runs)

    def on_evaluation(self, evaluation: Evaluation) -> None:
        columns = {name: value.tolist() for name, value in evaluation.metrics.items()}
        for e, run in enumerate(self.runs):
            run.events.write_scalars([evaluation.step], {k: [v[e]] for k, v in columns.items()})


class BoundaryImages:
    """After each evaluation, log each member's figures to its own run.

    Tags: ``boundary/test_data`` and, where the data have noise, ``boundary/true_posterior``
    (the generator's posterior in the learned maps' colours; both at step 0),
    ``boundary/probability``,
    ``boundary/probability_train`` (the probability of class 1 for two classes; a map with
    a colour per class, fading to white where unsure, for more), and with ``diagnostics``
    also ``calibration/reliability`` and ``flatten/spectrum``; when the last hidden layer
    has 2 units (two classes), ``bottleneck/hidden_space`` (input and hidden space).
    Figures are drawn from the :class:`Evaluation` record, so nothing is evaluated twice.

    A member whose ``figures`` entry is False draws none of these: it logs its map with
    the training points as a bare image, ``boundary/map`` (:func:`plots.map_pixels`, no
    axes), at its first and last evaluation; every map of every member is kept as an
    array (:class:`spiralmix.maps.ProbabilityMaps`) for ``spiralmix-render`` to draw.

    Args:
        runs, labels, seeds: per member, its run, its title (``moons · mixup``) and seed.
        data: the members' splits, ``{train,test}_X`` (E, N, 2) and ``{train,test}_y`` (E, N),
            read at the first evaluation (a datamodule is set up by then).
        hidden_dims: the widths of the hidden layers (the spectra's axes).
        figures: per member, whether it draws the figures (default: every member).
    """

    def __init__(
        self,
        runs: Sequence[RunLogger],
        labels: Sequence[str],
        seeds: Sequence[int],
        data: object,
        hidden_dims: Sequence[int],
        diagnostics: bool = True,
        n_classes: int = 2,
        figures: Sequence[bool] | None = None,
    ) -> None:
        if not labels or not all(labels):
            raise ValueError("labels must be non-empty strings, one per member (figure titles)")
        figures = [True] * len(runs) if figures is None else list(figures)
        if not len(runs) == len(labels) == len(seeds) == len(figures):
            raise ValueError(
                f"{len(runs)} runs, {len(labels)} labels, {len(seeds)} seeds and "
                f"{len(figures)} figure switches"
            )
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.runs, self.labels, self.seeds = list(runs), list(labels), list(seeds)
        self.data, self.hidden_dims = data, list(hidden_dims)
        self.diagnostics = diagnostics
        self.n_classes = n_classes
        self.figures = figures
        self._panels: dict[int, dict] = {}  # per member that draws, built at its first evaluation
        self._reliability: plots.ReliabilityPanel | None = None

    @torch.no_grad()
    def on_evaluation(self, evaluation: Evaluation) -> None:
        for e, run in enumerate(self.runs):
            if self.figures[e]:
                run.events.write_images(evaluation.step, self._figures(evaluation, e))
            elif evaluation.step == 0 or evaluation.last:
                data = self.data
                image = plots.map_pixels(
                    evaluation.grid[e], evaluation.grid_p[e], data.train_X[e], data.train_y[e]
                )
                run.events.write_images(evaluation.step, {"boundary/map": image})

    def _figures(self, evaluation: Evaluation, e: int) -> dict:
        """Member e's figures at this evaluation (and at step 0 its test data's and the true
        posterior's), as images by tag."""
        step, data, run, seed = evaluation.step, self.data, self.runs[e], self.seeds[e]
        images = {}
        if step == 0:  # the test data never change: drawn once, at the start
            title = f"test data · {self.labels[e]} · seed {seed}"
            fig = plots.data_figure(data.test_X[e], data.test_y[e], title, self.n_classes)
            run.experiment.add_figure("boundary/test_data", fig, 0)
            if evaluation.grid_truth is not None:  # the generator's p*(y | x): fixed too
                images["boundary/true_posterior"] = plots.probability_map(
                    evaluation.grid[e], evaluation.grid_truth[e],
                    f"true posterior · {self.labels[e]} · seed {seed}",
                    data.train_X[e], data.train_y[e],
                )  # fmt: skip
        if e not in self._panels:
            if self._reliability is None:
                # Every member's reliability diagram has the same axes: one figure draws all.
                self._reliability = plots.ReliabilityPanel(evaluation.reliability["edges"])
            self._panels[e] = self._make_panels(evaluation, e, self._reliability)
        panels = self._panels[e]
        title = f"{self.labels[e]} · seed {seed} · step {step:,}"
        grid_p = evaluation.grid_p[e]
        images["boundary/probability"] = panels["probability"].render(grid_p, title)
        images["boundary/probability_train"] = panels["train"].render(grid_p, title)
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
        return images

    def _make_panels(
        self, evaluation: Evaluation, e: int, reliability: plots.ReliabilityPanel
    ) -> dict:
        grid, K = evaluation.grid[e], self.n_classes
        X, y = self.data.train_X[e], self.data.train_y[e]
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
            "spectrum": plots.SpectrumPanel([X.shape[-1], *self.hidden_dims], K),
        }
        if evaluation.hidden_codes is not None:  # the last hidden layer has 2 units
            panels["bottleneck"] = plots.BottleneckPanel(grid, X, y)
        return panels


class HparamsWithResults(pl.Callback):
    """At the end, log each member's flat config as hparams, with the test metrics as its
    results, so TensorBoard's HPARAMS tab compares runs (and seeds) side by side.

    The HPARAMS tab shows the columns in the order of ``member_hparams`` (put what differs
    between runs first) and reads each result from the run's own ``test/*`` scalars (their
    last value), so no extra one-point charts are written.
    """

    def __init__(self, runs: Sequence[RunLogger], member_hparams: Sequence[dict]) -> None:
        if len(runs) != len(member_hparams):
            raise ValueError(f"{len(runs)} runs and {len(member_hparams)} members' hparams")
        self.runs, self.member_hparams = list(runs), list(member_hparams)
        self._final: dict[str, torch.Tensor] = {}

    def on_evaluation(self, evaluation: Evaluation) -> None:
        self._final = evaluation.metrics

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for e, (run, params) in enumerate(zip(self.runs, self.member_hparams)):
            results = {k: v[e].item() for k, v in self._final.items() if k.startswith("test/")}
            writer = event_file_writer(run.experiment)
            for summary in hparams_summaries(params, results):  # experiment, start, end
                writer.add_summary(summary, trainer.global_step)


class RunProgress(pl.Callback):
    """One progress bar over all steps (steps/s, time left, latest test accuracy).

    On a terminal it is a live bar; otherwise (logs, sweeps) it prints one line per
    evaluation, so log files stay readable. The speed is measured from the start of
    training in this process; the evaluation at a run's first step has none either way.
    """

    def __init__(self, max_steps: int, interactive: bool | None = None) -> None:
        self.max_steps = max_steps
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._bar: tqdm | None = None
        self._start: tuple[float, int] | None = None  # (time, step) training started at

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter(), trainer.global_step
        if self.interactive:
            self._bar = tqdm(
                total=self.max_steps,
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

    def on_evaluation(self, evaluation: Evaluation) -> None:
        step, latest = evaluation.step, {k: v.tolist() for k, v in evaluation.metrics.items()}
        accs = latest["test/acc"]
        acc = f"{sum(accs) / len(accs):.3f}" + (" (mean)" if len(accs) > 1 else "")
        if self._bar is not None:
            self._bar.set_postfix_str(f"test acc {acc}")
            return
        speed = ""
        if self._start is not None and step > self._start[1]:
            rate = (step - self._start[1]) / (time.perf_counter() - self._start[0])
            speed = f"  {rate:,.0f} steps/s  {(self.max_steps - step) / rate:,.0f} s left"
        log.info(
            f"step {step:>7,}/{self.max_steps:,}  test acc {acc}  "
            f"test loss {sum(latest['test/loss']) / len(accs):.3f}{speed}"
        )
