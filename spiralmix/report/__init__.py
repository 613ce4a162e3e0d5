"""Multi-seed comparison report of a sweep: verdict, paired statistics, tables, figures.

    python -m spiralmix -m experiment=compare            # writes the report when it ends
    python -m spiralmix.report outputs/multirun/2026-11-25/13-19-35 [--baseline none] [--rope 0.01]

Writes into the sweep directory, each file atomically: ``report.md`` and ``report.html``
(the same report, self-contained: verdict, tables, every figure embedded, failed or
unfinished runs, run folders), ``report.csv`` (one row per regularizer: mean, sample std,
min and max over seeds), ``report_paired.csv`` (paired differences against the baseline),
``report_runs.csv`` (one row per run), ``report_across.csv`` (across data sets, when the
runs span several) and the figures as PNG files; prints the summary.
``ReportOnMultirunEnd`` (a Hydra callback, see conf/config.yaml) writes it at the end of
every multirun.

Modules, one job each: runs (find and load runs and problems, compare their settings),
stats (summaries and paired tests), across (one verdict across data sets), tables, figures,
verdict (the list in words), html, write (write_report), callback (the Hydra callback),
__main__ (the command line).
"""

from spiralmix.report.callback import ReportOnMultirunEnd
from spiralmix.report.runs import ReportError, collect
from spiralmix.report.write import Report, write_report

__all__ = ["Report", "ReportError", "ReportOnMultirunEnd", "collect", "write_report"]
