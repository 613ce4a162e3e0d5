"""ReportOnMultirunEnd: the Hydra callback that writes a sweep's report when it ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from spiralmix.report.write import write_report

log = logging.getLogger(__name__)


class ReportOnMultirunEnd(Callback):
    """Hydra callback: write the sweep's report when a multirun ends (never fails it).

    baseline: the regularizer the others are compared with, e.g. on the command line
    ``+hydra.callbacks.report.baseline=dropout``; ropes: metric → region of practical
    equivalence across data sets (``+hydra.callbacks.report.ropes.test_acc=0.02``).
    """

    def __init__(self, baseline: str = "none", ropes: dict[str, float] | None = None) -> None:
        self.baseline = baseline
        self.ropes = dict(ropes or {})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            report = write_report(sweep_dir, self.baseline, ropes=self.ropes)
        except Exception as err:  # the sweep's results are on disk; the report can be redone
            log.warning(
                "spiralmix.report: no report for %s (%s); retry with "
                "`python -m spiralmix.report %s`",
                sweep_dir,
                err,
                sweep_dir,
            )
            return
        print(report.summary, flush=True)
        log.info("Report: %s", sweep_dir / "report.html")
