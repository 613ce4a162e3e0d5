"""Multi-seed comparison report of a sweep: tables and figures, one row per regularizer.

    python -m spiralmix -m experiment=compare            # writes the report when it ends
    python -m spiralmix.report outputs/multirun/2026-11-25/13-19-35

Writes into the sweep directory, each file atomically: ``report.md`` (summary tables,
per-seed table, failed or unfinished runs), ``report.csv`` (one row per regularizer: mean,
sample std, min and max over seeds), ``report_runs.csv`` (one row per run), and
``boundaries.png``, ``curves.png``, ``calibration.png``, ``flattening.png``; prints the
summary table. ``ReportOnMultirunEnd`` (a Hydra callback, see conf/config.yaml) writes it at
the end of every multirun.

A sweep directory holds one Hydra job directory per job (it has ``.hydra/config.yaml``). A
job trains one seed (``<job>/metrics.json``) or several side by side
(``<job>/seed=<N>/metrics.json``). Jobs still running, crashed or never started are listed
by name, never dropped silently.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from spiralmix.atomic import write_atomic  # noqa: E402
from spiralmix.metrics import reliability  # noqa: E402
from spiralmix.plan import member_dirs  # noqa: E402
from spiralmix.plots import draw_boundary  # noqa: E402

log = logging.getLogger(__name__)

# Rows follow the order of the reference table; other names come after, alphabetically.
CANONICAL = ("none", "weight_decay", "dropout", "mixup", "input_mixup", "hidden_mixup")
# One colour per regularizer in every figure, whichever subset a sweep holds.
COLORS = {
    "none": "#4d4d4d",
    "weight_decay": "tab:orange",
    "dropout": "tab:green",
    "mixup": "tab:blue",
    "input_mixup": "tab:purple",
    "hidden_mixup": "tab:red",
}
SPARE_COLORS = ("tab:brown", "tab:olive", "tab:cyan", "tab:pink", "#1b9e77", "#e7298a")
DPI = 100
MISSING = "–"
# Overrides that name a run's seed or regularizer rather than a different configuration.
NOT_A_VARIANT = ("seed", "seeds", "regularizer", "regularizers", "regularizer_name", "resume")


class ReportError(Exception):
    """The sweep directory holds nothing to report on (the message says why)."""


# --------------------------------------------------------------------------------------
# Finding runs


@dataclass
class Run:
    """One seed's completed training run: a metrics.json with status "completed"."""

    name: str  # its directory relative to the sweep directory
    group: str  # the row it belongs to: regularizer, plus other settings that differ
    regularizer: str
    seed: int
    metrics: dict[str, Any]
    boundary: dict[str, Any] | None  # boundary.pt's tensors; None when missing or unreadable

    def value(self, section: str, key: str) -> float | None:
        """metrics[section][key] as a float, None when absent (older runs, no val split)."""
        value = self.metrics.get(section, {}).get(key)
        return None if value is None else float(value)


@dataclass
class Problem:
    """A run without usable results: failed, unfinished or crashed, or never started."""

    name: str  # its directory (or, never started, its overrides) relative to the sweep
    status: str  # "failed", "unfinished" or "never started"
    regularizer: str
    seed: str  # a seed, a list of seeds or "–"
    reason: str
    group: str | None = None


@dataclass
class Job:
    """A Hydra job directory: its config and its command-line overrides."""

    path: Path
    config: DictConfig
    overrides: dict[str, str]  # key → value as given on the command line

    def expected_metrics(self) -> list[tuple[Path, int | None]]:
        """Where each of the job's runs writes metrics.json, with that run's seed."""
        cfg = OmegaConf.merge({"seed": None, "seeds": None, "regularizers": None}, self.config)
        seeds = list(cfg.seeds) if cfg.seeds is not None else [cfg.seed]
        # member_dirs lists regularizers × seeds with the seed varying fastest.
        dirs = member_dirs(cfg, self.path)
        return [(d / "metrics.json", seeds[i % len(seeds)]) for i, d in enumerate(dirs)]


def _parse_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def _load_jobs(sweep_dir: Path) -> list[Job]:
    jobs = []
    for config_path in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        job_dir = config_path.parent.parent
        try:
            config = OmegaConf.load(config_path)
        except Exception as err:  # a half-written config still marks a job that started
            log.warning("cannot read %s: %s", config_path, err)
            config = OmegaConf.create({})
        overrides_path = job_dir / ".hydra" / "overrides.yaml"
        overrides = {}
        if overrides_path.is_file():
            overrides = dict(_parse_override(str(o)) for o in OmegaConf.load(overrides_path))
        jobs.append(Job(job_dir, config, overrides))
    return jobs


def _varying_keys(
    override_sets: Sequence[dict[str, str]], exclude: Sequence[str] = ()
) -> list[str]:
    """Override keys whose value differs between jobs, in command-line order."""
    keys = list(dict.fromkeys(k for o in override_sets for k in o))
    return [
        k
        for k in keys
        if k not in exclude
        and not k.startswith("hydra")
        and len({o.get(k) for o in override_sets}) > 1
    ]


def _group_name(regularizer: str, job: Job | None, varying: Sequence[str]) -> str:
    """The row name: the regularizer, with any other swept setting (mixup (mixup.alpha=1))."""
    if job is None:
        return regularizer
    extra = [f"{k}={job.overrides[k]}" for k in varying if k in job.overrides]
    return f"{regularizer} ({', '.join(extra)})" if extra else regularizer


def _planned_jobs(sweep_dir: Path) -> list[dict[str, str]] | None:
    """Every job's overrides as Hydra's basic sweeper plans them; None when unknown.

    multirun.yaml is written before the first job starts, so this also names jobs that an
    interrupted sweep never reached. Other sweepers (Optuna) plan as they go: None.
    """
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        # Hydra's own planning, so that the strings match each job's overrides.yaml exactly.
        from spiralmix.compat import plan_basic_sweep

        hydra_cfg = OmegaConf.load(path).hydra
        if not str(hydra_cfg.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None
        params = hydra_cfg.sweeper.get("params")
        params = {} if params is None else OmegaConf.to_container(params)
        arguments = [f"{k}={v}" for k, v in params.items()] + list(hydra_cfg.overrides.task)
        batch = plan_basic_sweep(arguments)
    except Exception as err:  # without a plan only the "never started" list is lost
        log.debug("cannot re-plan the sweep from %s: %s", path, err)
        return None
    return [dict(_parse_override(o) for o in job) for job in batch]


def _relative(path: Path, root: Path) -> str:
    name = path.relative_to(root).as_posix()
    return root.name if name == "." else name


def _nearest_job(path: Path, jobs_by_dir: dict[Path, Job], root: Path) -> Job | None:
    for parent in (path, *path.parents):
        if parent in jobs_by_dir:
            return jobs_by_dir[parent]
        if parent == root:
            return None
    return None


def _load_boundary(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:  # a broken file costs one figure panel, not the report
        log.warning("cannot read %s: %s", path, err)
        return None


def _failure_reason(metrics: dict[str, Any]) -> str:
    reason = f"status {metrics.get('status', 'missing')!r}"
    if metrics.get("error"):
        reason += f": {metrics['error']}"
    step = metrics.get("failed_step")
    if step is not None and f"step {step}" not in reason:
        reason += f" (at step {step})"
    return reason


def collect(sweep_dir: Path) -> tuple[list[Run], list[Problem], list[Job]]:
    """Completed runs, problems (failed, unfinished, never started) and jobs of a sweep."""
    jobs = _load_jobs(sweep_dir)
    jobs_by_dir = {job.path: job for job in jobs}
    planned = _planned_jobs(sweep_dir)
    varying = _varying_keys(planned or [job.overrides for job in jobs], NOT_A_VARIANT)

    runs, problems = [], []
    for path in sorted(sweep_dir.rglob("metrics.json")):
        name = _relative(path.parent, sweep_dir)
        job = _nearest_job(path.parent, jobs_by_dir, sweep_dir)
        try:
            metrics = json.loads(path.read_text())
            regularizer = str(metrics["regularizer"])
            seed = int(metrics["seed"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            problems.append(
                Problem(name, "failed", MISSING, MISSING, f"unreadable metrics.json: {err}")
            )
            continue
        group = _group_name(regularizer, job, varying)
        if metrics.get("status") != "completed":
            reason = _failure_reason(metrics)
            problems.append(Problem(name, "failed", regularizer, str(seed), reason, group))
            continue
        boundary = _load_boundary(path.parent / "boundary.pt")
        runs.append(Run(name, group, regularizer, seed, metrics, boundary))

    for job in jobs:
        regularizer = str(job.config.get("regularizer_name", MISSING))
        for path, seed in job.expected_metrics():
            if not path.is_file():
                problems.append(
                    Problem(
                        _relative(path.parent, sweep_dir),
                        "unfinished",
                        regularizer,
                        MISSING if seed is None else str(seed),
                        "no metrics.json (unfinished or crashed)",
                        _group_name(regularizer, job, varying),
                    )
                )

    if planned is not None:
        started = [job.overrides for job in jobs]
        swept = _varying_keys(planned)
        for overrides in planned:
            if overrides not in started:
                name = ",".join(f"{k}={overrides[k]}" for k in swept or overrides)
                seed = overrides.get("seeds", overrides.get("seed", MISSING))
                regularizer = overrides.get("regularizer", MISSING)
                problems.append(Problem(name, "never started", regularizer, seed, "never started"))
    return runs, problems, jobs


# --------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class Column:
    """One reported metric: where it lives in metrics.json and which direction is better."""

    name: str  # CSV name
    label: str  # table header
    section: str  # "final" or "best" in metrics.json
    key: str
    better: str | None  # "max", "min", or None for descriptive metrics
    digits: int = 3


@dataclass(frozen=True)
class Stat:
    """Summary of one metric over seeds; std is the sample std (ddof=1), None for n=1."""

    n: int
    mean: float
    std: float | None
    min: float
    max: float


def describe(values: Sequence[float]) -> Stat | None:
    """Mean, sample std, min and max of values; None for no values."""
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(len(values), statistics.fmean(values), std, min(values), max(values))


ACCURACY_COLUMNS = [
    Column("test_acc", "test acc", "final", "test/acc", "max"),
    Column("test_loss", "test loss", "final", "test/loss", "min"),
    Column("best_test_acc", "best test acc", "best", "test/acc", "max"),
]
VAL_COLUMNS = [
    Column("val_acc", "val acc", "final", "val/acc", "max"),
    Column("val_loss", "val loss", "final", "val/loss", "min"),
]
CALIBRATION_COLUMNS = [
    Column("test_ece", "ECE", "final", "test/ece", "min"),
    Column("test_brier", "Brier", "final", "test/brier", "min"),
    Column("uncertain_fraction", "uncertain", "final", "boundary/uncertain_fraction", None),
    Column("ood_confidence", "OOD conf", "final", "ood/confidence", None),
]


def _flatten_columns(runs: Sequence[Run]) -> list[Column]:
    layers = sorted(
        {
            int(key.split("/")[1].removeprefix("layer"))
            for run in runs
            for key in run.metrics.get("final", {})
            if key.startswith("flatten/layer") and key.endswith("/n_significant")
        }
    )
    return [
        Column(
            f"n_sig_layer{k}", f"n_sig L{k}", "final", f"flatten/layer{k}/n_significant", None, 1
        )
        for k in layers
    ]


@dataclass
class Group:
    """One row of the summary: a regularizer (and any other swept setting) over seeds."""

    name: str
    regularizer: str
    runs: list[Run]
    stats: dict[str, Stat | None] = field(default_factory=dict)  # column name → stat
    best: set[str] = field(default_factory=set)  # names of columns where this row is best

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]


def _group_order(name: str, regularizer: str) -> tuple:
    rank = CANONICAL.index(regularizer) if regularizer in CANONICAL else len(CANONICAL)
    return (rank, regularizer, name)


def summarize(runs: Sequence[Run], columns: Sequence[Column]) -> list[Group]:
    """Group runs into rows (canonical order), compute each column's stats, mark the best."""
    by_name: dict[str, Group] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        by_name.setdefault(run.group, Group(run.group, run.regularizer, [])).runs.append(run)
    groups = sorted(by_name.values(), key=lambda g: _group_order(g.name, g.regularizer))
    for group in groups:
        for col in columns:
            values = [run.value(col.section, col.key) for run in group.runs]
            group.stats[col.name] = describe([v for v in values if v is not None])
    for col in columns:
        means = {
            g.name: g.stats[col.name].mean
            for g in groups
            if g.stats[col.name] is not None and math.isfinite(g.stats[col.name].mean)
        }
        # A single row, or all rows equal, is not "best" of anything.
        if col.better is None or len(set(means.values())) < 2:
            continue
        target = max(means.values()) if col.better == "max" else min(means.values())
        for g in groups:
            if means.get(g.name) == target:
                g.best.add(col.name)
    return groups


# --------------------------------------------------------------------------------------
# Tables


def _fmt(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _cell(stat: Stat | None, col: Column, best: bool) -> str:
    """Markdown "0.829 ± 0.025 (0.802–0.852)", the mean ± std part in bold when best."""
    if stat is None:
        return MISSING
    text = f"{_fmt(stat.mean, col.digits)} ± {_fmt(stat.std, col.digits)}"
    text = f"**{text}**" if best else text
    if stat.n > 1:
        text += f" ({_fmt(stat.min, col.digits)}–{_fmt(stat.max, col.digits)})"
    return text


def _one_line(text: str, limit: int = 300) -> str:
    """A table cell: a multi-line error (a traceback) on one line, pipes escaped, shortened."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _steps_text(runs: Sequence[Run]) -> tuple[str, str | None]:
    """When the metrics were taken ("after 2,000 training steps"), and a warning when runs
    differ in length (then their numbers are not comparable)."""
    counts: dict[int, int] = {}
    for run in runs:
        steps = int(run.metrics.get("steps", -1))
        counts[steps] = counts.get(steps, 0) + 1
    if len(counts) <= 1:
        return f"after {next(iter(counts), 0):,} training steps", None
    listing = ", ".join(
        f"{s:,} steps ({n} run{'s' if n > 1 else ''})" for s, n in sorted(counts.items())
    )
    return "at the end of each run", f"Runs differ in length: {listing}. Compare with care."


@dataclass
class Report:
    """What write_report found and wrote."""

    sweep_dir: Path
    groups: list[Group]
    problems: list[Problem]
    columns: list[Column]
    notes: list[str]
    files: list[Path]
    summary: str  # the plain-text summary table printed to the terminal


def _markdown(
    sweep_dir: Path,
    groups: Sequence[Group],
    problems: Sequence[Problem],
    sections: Sequence[tuple[str, str, Sequence[Column]]],
    notes: Sequence[str],
    steps: str,
) -> str:
    out = [f"# Sweep report: `{sweep_dir}`", ""]
    if not groups:
        out += ["No completed run yet.", "", "## Failed or unfinished runs", ""]
        return "\n".join(out) + "\n" + _problems_markdown(problems)
    runs = [run for g in groups for run in g.runs]
    n_seeds = sorted({len(g.runs) for g in groups})
    seeds_text = "–".join(map(str, sorted({n_seeds[0], n_seeds[-1]})))  # "3" or "2–3"
    out += [
        f"Final test metrics {steps}, over seeds: **mean ± sample std** (min–max). "
        "The best mean of each comparative column is **bold** (accuracy: highest; loss, ECE, "
        f"Brier: lowest). {len(groups)} regularizers, "
        f"{seeds_text} seeds each, {len(runs)} completed runs, "
        f"{len(problems)} failed or unfinished (listed at the end).",
        "",
    ]
    out += [f"- **Note:** {note}" for note in notes]
    if notes:
        out.append("")
    for title, explanation, columns in sections:
        rows = [
            [g.name, str(len(g.runs))]
            + [_cell(g.stats[c.name], c, c.name in g.best) for c in columns]
            for g in groups
        ]
        out += [f"## {title}", "", explanation, ""]
        out += [_markdown_table(["regularizer", "seeds", *[c.label for c in columns]], rows), ""]

    per_seed = [c for _, _, cols in sections for c in cols]
    rows = []
    for g in groups:
        for run in g.runs:
            values = [_fmt(run.value(c.section, c.key), c.digits) for c in per_seed]
            steps = run.metrics.get("steps")
            steps = f"{steps:,}" if isinstance(steps, int) else MISSING
            rows.append([g.name, str(run.seed), steps, *values])
    out += ["## Per seed", ""]
    out += [_markdown_table(["regularizer", "seed", "steps", *[c.label for c in per_seed]], rows)]
    out += ["", "## Failed or unfinished runs", ""]
    return "\n".join(out) + "\n" + _problems_markdown(problems)


def _problems_markdown(problems: Sequence[Problem]) -> str:
    if not problems:
        return "None: every job finished with status completed.\n"
    rows = [[f"`{p.name}`", p.regularizer, p.seed, _one_line(p.reason)] for p in problems]
    return _markdown_table(["run", "regularizer", "seed", "reason"], rows) + "\n"


def _summary_csv(groups: Sequence[Group], columns: Sequence[Column]) -> str:
    header = ["regularizer", "n_seeds", "seeds", "steps_min", "steps_max"]
    for col in columns:
        header += [f"{col.name}_{s}" for s in ("mean", "std", "min", "max")]
        header += [f"{col.name}_best"] if col.better else []
    rows = []
    for g in groups:
        steps = [int(run.metrics.get("steps", -1)) for run in g.runs]
        row: list[object] = [g.name, len(g.runs), " ".join(map(str, g.seeds))]
        row += [min(steps), max(steps)]
        for col in columns:
            stat = g.stats[col.name]
            values = [None] * 4 if stat is None else [stat.mean, stat.std, stat.min, stat.max]
            row += ["" if v is None else repr(v) for v in values]
            row += [int(col.name in g.best)] if col.better else []
        rows.append(row)
    return _csv_text(header, rows)


def _runs_csv(
    groups: Sequence[Group], problems: Sequence[Problem], columns: Sequence[Column]
) -> str:
    header = ["regularizer", "seed", "status", "steps", "wall_time_s", "run", "reason"]
    header += [col.name for col in columns] + ["best_test_acc_step"]
    rows = []
    for g in groups:
        for run in g.runs:
            m = run.metrics
            values = [run.value(c.section, c.key) for c in columns]
            row = [g.name, run.seed, "completed", m.get("steps", ""), m.get("wall_time_s", "")]
            row += [run.name, ""] + ["" if v is None else repr(v) for v in values]
            row.append(m.get("best", {}).get("test/acc_step", ""))
            rows.append(row)
    for p in problems:
        row = [p.group or p.regularizer, p.seed, p.status, "", "", p.name, p.reason]
        rows.append(row + [""] * (len(columns) + 1))
    return _csv_text(header, rows)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _terminal_summary(
    sweep_dir: Path,
    groups: Sequence[Group],
    sections: Sequence[tuple[str, str, Sequence[Column]]],
    steps: str,
) -> str:
    """One aligned plain-text table per section (narrow enough for a terminal)."""
    if not groups:
        return f"{sweep_dir}: no completed run yet"
    out = [f"{sweep_dir}: final test metrics {steps}, mean ± sample std; * = best mean"]
    for title, _, columns in sections:
        header = ["regularizer", "n", *[c.label for c in columns]]
        rows = []
        for g in groups:
            row = [g.name, str(len(g.runs))]
            for c in columns:
                stat = g.stats[c.name]
                text = MISSING
                if stat is not None:
                    text = f"{_fmt(stat.mean, c.digits)} ± {_fmt(stat.std, c.digits)}"
                row.append(text + (" *" if c.name in g.best else ""))
            rows.append(row)
        out += ["", f"{title}:", _plain_table(header, rows)]
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Figures


def _colors(groups: Sequence[Group]) -> dict[str, str]:
    spare = iter(SPARE_COLORS * (1 + len(groups) // len(SPARE_COLORS)))
    return {g.name: COLORS.get(g.name) or next(spare) for g in groups}


def boundaries_figure(groups: Sequence[Group], problems: Sequence[Problem]) -> Figure:
    """Final decision boundaries with training points: rows = regularizers, columns = seeds."""
    status = {(p.group, p.seed): p.status for p in problems}
    names = {g.name for g in groups}
    # Seeds that failed or are unfinished get a column too: the gap is visible, not hidden.
    seeds = sorted(
        {run.seed for g in groups for run in g.runs}
        | {int(p.seed) for p in problems if p.group in names and p.seed.isdigit()}
    )
    size = 1.9
    width = max(size * len(seeds) + 1.4, 4.6)  # room for the title with a single seed
    fig = Figure(figsize=(width, size * len(groups) + 0.5), layout="constrained")
    axes = fig.subplots(len(groups), len(seeds), squeeze=False)
    mappable = None
    for row, group in zip(axes, groups):
        runs = {run.seed: run for run in group.runs}
        for ax, seed in zip(row, seeds):
            run = runs.get(seed)
            b = run.boundary if run is not None else None
            if b is None:
                text = status.get((group.name, str(seed)), "no run")
                text = "no boundary.pt" if run is not None else text
                ax.text(0.5, 0.5, text, ha="center", va="center", color="grey", fontsize=10)
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1)
                ax.set_frame_on(False)
                ax.set_title(f"seed {seed}", fontsize=10)
            else:
                mappable = draw_boundary(ax, b["grid"], b["grid_p"], b["train_X"], b["train_y"])
                acc = run.value("final", "test/acc")
                ax.set_title(f"seed {seed} · acc {_fmt(acc, 3)}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.set_aspect("equal")
        row[0].set_ylabel(group.name, fontsize=12, fontweight="bold")
    if mappable is not None:
        fig.colorbar(
            mappable,
            ax=axes,
            label="p(class 1)   (white = 0.5: uncertain)",
            ticks=[0, 0.25, 0.5, 0.75, 1],
            shrink=min(1.0, 3.5 / (size * len(groups))),
        )
    fig.suptitle("Final decision boundaries with the training points", fontsize=12)
    return fig


def _history_array(runs: Sequence[Run], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps (T,) and values (S, T) over seeds, NaN where a seed has no evaluation."""
    steps = sorted({int(h["step"]) for run in runs for h in run.metrics.get("history", [])})
    index = {s: i for i, s in enumerate(steps)}
    values = np.full((len(runs), len(steps)), np.nan)
    for r, run in enumerate(runs):
        for h in run.metrics.get("history", []):
            if h.get(key) is not None:
                values[r, index[int(h["step"])]] = h[key]
    return np.array(steps), values


def curves_figure(groups: Sequence[Group]) -> Figure:
    """Test loss (log scale) and accuracy against step: mean over seeds, min–max band."""
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    colors = _colors(groups)
    for group in groups:
        for ax, key in ((ax_loss, "test/loss"), (ax_acc, "test/acc")):
            steps, values = _history_array(group.runs, key)
            if not np.isfinite(values).any():
                continue
            has = np.isfinite(values).any(0)
            steps, values = steps[has], values[:, has]
            color = colors[group.name]
            label = f"{group.name} (n={len(group.runs)})"
            ax.plot(steps, np.nanmean(values, 0), color=color, linewidth=2, label=label)
            ax.fill_between(
                steps, np.nanmin(values, 0), np.nanmax(values, 0), color=color, alpha=0.15
            )
    # Unregularized test loss grows by orders of magnitude while mixup stays near 0.5.
    ax_loss.set_yscale("log")
    low, high = ax_loss.get_ylim()
    # Label enough values to read a narrow range, not so many that a wide one is cluttered.
    subs = (1, 1.5, 2, 3, 5, 7) if high / low < 30 else (1, 2, 5)
    ax_loss.yaxis.set_major_locator(LogLocator(subs=subs))
    ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax_loss.yaxis.set_minor_formatter(NullFormatter())
    ax_loss.set_title("test loss (log scale)", fontsize=11)
    ax_acc.set_title("test accuracy", fontsize=11)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("training step")
        ax.grid(True, which="major", alpha=0.3)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    # Outside the axes: with six regularizers any inside corner hides some lines.
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="outside right center", fontsize=9)
    fig.suptitle("Test metrics during training: mean over seeds, band = min–max", fontsize=12)
    return fig


def calibration_figure(groups: Sequence[Group], n_bins: int) -> Figure:
    """Reliability diagram per regularizer from the pooled final test predictions of its seeds."""
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(max(3.6 * ncols, 4.6), 3.9 * nrows + 0.6), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(nrows, ncols, squeeze=False)).ravel()
    colors = _colors(groups)
    for subfig, group in zip(subfigs, groups):
        ax, ax_count = subfig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
        ax.plot([0.5, 1], [0.5, 1], color="grey", linestyle="--", linewidth=1)
        ece = group.stats.get("test_ece")
        ece_text = "" if ece is None else f" · ECE {_fmt(ece.mean, 3)}"
        ax.set_title(f"{group.name}{ece_text}", fontsize=10)
        with_p = [r.boundary for r in group.runs if r.boundary is not None]
        if with_p:
            p = torch.cat([b["test_p"].flatten() for b in with_p]).unsqueeze(0)
            y = torch.cat([b["test_y"].flatten() for b in with_p]).unsqueeze(0)
            stats = {k: v[0] if k != "edges" else v for k, v in reliability(p, y, n_bins).items()}
            filled = stats["count"] > 0
            ax.plot(
                stats["confidence"][filled],
                stats["accuracy"][filled],
                marker="o",
                markersize=4,
                color=colors[group.name],
            )
            edges = stats["edges"]
            ax_count.bar(
                edges[:-1],
                stats["count"] / stats["count"].sum(),
                width=edges[1] - edges[0],
                align="edge",
                color=colors[group.name],
                alpha=0.6,
            )
        else:
            ax.text(0.75, 0.5, "no boundary.pt", ha="center", va="center")
        ax.set_xlim(0.5, 1)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.grid(True, alpha=0.3)
        ax_count.set_ylim(0, 1)
        ax_count.set_ylabel("share")
        ax_count.set_xlabel("confidence max(p, 1−p)")
    for subfig in subfigs[len(groups) :]:
        subfig.set_visible(False)
    fig.suptitle(
        f"Reliability of the final test predictions\n(seeds pooled, {n_bins} bins; "
        "dashed = perfectly calibrated)",
        fontsize=11,
    )
    return fig


def _mean_spectrum(runs: Sequence[Run], layer: int) -> np.ndarray | None:
    """(S, D): each seed's singular values, normalised per class by the largest, class mean."""
    spectra = []
    for run in runs:
        b = run.boundary
        if b is None or layer >= len(b.get("spectra", [])):
            continue
        sv = b["spectra"][layer].double()  # (2 classes, D), descending
        sv = sv / sv[:, :1].clamp_min(1e-12)
        spectra.append(sv.mean(0).numpy())
    if not spectra:
        return None
    width = min(len(s) for s in spectra)
    return np.stack([s[:width] for s in spectra])


def flattening_figure(groups: Sequence[Group], fraction: float | None) -> Figure:
    """Normalised singular-value spectra of each hidden layer's class representations.

    Layer 0 (the input) is left out: it depends on the data only, not on the regularizer.
    """
    n_layers = max(
        (len(r.boundary.get("spectra", [])) for g in groups for r in g.runs if r.boundary),
        default=0,
    )
    layers = list(range(1, n_layers)) or [0]
    fig = Figure(figsize=(max(3.6 * len(layers) + 1.8, 7.0), 4.2), layout="constrained")
    axes = fig.subplots(1, len(layers), squeeze=False, sharey=True)[0]
    colors = _colors(groups)
    lowest = 1.0
    for ax, layer in zip(axes, layers):
        for group in groups:
            spectra = _mean_spectrum(group.runs, layer)
            if spectra is None:
                continue
            index = np.arange(1, spectra.shape[1] + 1)
            color = colors[group.name]
            ax.plot(index, spectra.mean(0), color=color, linewidth=2, label=group.name)
            ax.fill_between(index, spectra.min(0), spectra.max(0), color=color, alpha=0.15)
            lowest = min(lowest, float(spectra.mean(0)[-1]))
        if fraction is not None:
            ax.axhline(fraction, color="black", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_title("input" if layer == 0 else f"after hidden layer {layer}", fontsize=11)
        ax.set_xlabel("singular value index")
        ax.grid(True, which="major", alpha=0.3)
    # Near-zero tail values would stretch the axis over decades nobody needs to read.
    axes[0].set_ylim(max(lowest / 2, 1e-4), 1.3)
    axes[0].set_ylabel("singular value / largest")
    handles, labels = axes[0].get_legend_handles_labels()
    if fraction is not None:
        handles.append(Line2D([], [], color="black", linestyle=":"))
        labels.append(f"significance ({fraction:g} × largest)")
    fig.legend(handles, labels, loc="outside right center", fontsize=9)
    fig.suptitle(
        "Class-wise singular values of the training points' hidden representations\n"
        "(mean over seeds and classes, band = min–max over seeds; lower tail = flatter)",
        fontsize=11,
    )
    return fig


# --------------------------------------------------------------------------------------
# Writing


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_figure(path: Path, fig: Figure) -> None:
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _setting(jobs: Sequence[Job], key: str) -> Any:
    """An evaluation setting from the first job config that has it (None without jobs)."""
    for job in jobs:
        value = OmegaConf.select(job.config, key, default=None)
        if value is not None:
            return value
    return None


def write_report(sweep_dir: Path | str) -> Report:
    """Write the comparison report of a sweep directory into it and return what it holds.

    Raises ReportError when the directory does not exist or holds no runs at all.
    Figures need at least one completed run; tables are written regardless.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"no such sweep directory: {sweep_dir}")
    runs, problems, jobs = collect(sweep_dir)
    if not runs and not problems:
        raise ReportError(f"no runs in {sweep_dir} (no metrics.json, no .hydra job directory)")

    flatten = _flatten_columns(runs)
    hidden = [c for c in flatten if c.name != "n_sig_layer0"]  # the input is the same for all
    has_val = any(run.value("final", "val/acc") is not None for run in runs)
    accuracy = ACCURACY_COLUMNS + (VAL_COLUMNS if has_val else [])
    columns = accuracy + CALIBRATION_COLUMNS + flatten
    groups = summarize(runs, columns)
    steps, steps_warning = _steps_text(runs)
    notes = [steps_warning] if steps_warning else []
    short = [
        f"{run.name} ({run.metrics['steps']:,} of {run.metrics['max_steps']:,})"
        for run in runs
        if run.metrics.get("max_steps") not in (None, run.metrics.get("steps"))
    ]
    if short:
        notes.append(f"Completed before max_steps: {', '.join(short)}.")
    fraction = _setting(jobs, "evaluation.flatten_fraction")
    n_bins = int(_setting(jobs, "evaluation.ece_bins") or 15)
    without_boundary = [run.name for run in runs if run.boundary is None]
    if without_boundary:
        notes.append(f"No readable boundary.pt (left out of the figures): {without_boundary}.")
    seen = [(run.group, run.seed) for run in runs]
    duplicates = sorted({f"{g} seed {s}" for g, s in seen if seen.count((g, s)) > 1})
    if duplicates:
        notes.append(f"Seeds present more than once (all counted): {', '.join(duplicates)}.")

    threshold = f"{fraction:g} ×" if fraction is not None else "a set share of"
    sections = [
        (
            "Accuracy and loss",
            "Final: at the last evaluation. Best: the highest test accuracy at any evaluation "
            "(chosen on the test set, so optimistic).",
            accuracy,
        ),
        (
            "Calibration and uncertainty",
            "ECE: expected calibration error and Brier: mean squared error of p, both on the "
            "test set (lower is better). uncertain: share of the plotting grid with "
            "0.25 ≤ p ≤ 0.75. OOD conf: mean max(p, 1−p) on a ring outside the data "
            "(0.5 = unsure there, 1 = confident where it has seen nothing).",
            CALIBRATION_COLUMNS,
        ),
        (
            "Flattening",
            f"n_sig Lk: singular values of a class's representation after hidden layer k "
            f"above {threshold} the largest, averaged over the two classes; fewer = flatter "
            "(Verma et al. 2019). The input (layer 0) is the same for every regularizer and "
            "is only in report.csv.",
            hidden,
        ),
    ]
    sections = [section for section in sections if section[2]]  # older runs: no flattening
    texts = {
        "report.md": _markdown(sweep_dir, groups, problems, sections, notes, steps),
        "report.csv": _summary_csv(groups, columns),
        "report_runs.csv": _runs_csv(groups, problems, columns),
    }
    for name, text in texts.items():
        _write_text(sweep_dir / name, text)
    # Built one at a time, so that only one figure is in memory.
    figures: dict[str, Callable[[], Figure]] = {
        "boundaries.png": lambda: boundaries_figure(groups, problems),
        "curves.png": lambda: curves_figure(groups),
        "calibration.png": lambda: calibration_figure(groups, n_bins),
        "flattening.png": lambda: flattening_figure(groups, fraction),
    }
    if not groups:  # nothing completed yet: tables only
        figures = {}
    for name, build in figures.items():
        _write_figure(sweep_dir / name, build())
    files = [sweep_dir / name for name in [*texts, *figures]]

    summary = _terminal_summary(sweep_dir, groups, sections, steps)
    if problems:
        summary += f"\n\n{len(problems)} failed or unfinished runs: see report.md"
    return Report(sweep_dir, groups, problems, columns, notes, files, summary)


class ReportOnMultirunEnd(Callback):
    """Hydra callback: write the sweep's report when a multirun ends (never fails it)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            report = write_report(sweep_dir)
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
        log.info("Report: %s", sweep_dir / "report.md")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m spiralmix.report <sweep dir>``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="spiralmix.report",
        description="Write the multi-seed comparison report of a spiralmix sweep directory.",
    )
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.sweep_dir)
    except ReportError as err:
        print(f"spiralmix.report: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a read-only sweep directory
        print(f"spiralmix.report: error: cannot write the report: {err}", file=sys.stderr)
        return 1
    print(report.summary)
    print("wrote " + ", ".join(p.name for p in report.files) + f" in {report.sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
