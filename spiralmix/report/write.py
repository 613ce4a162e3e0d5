"""write_report(sweep_dir): find the runs, compute the statistics, write every file."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from spiralmix.atomic import write_atomic
from spiralmix.config import config_dir, register
from spiralmix.report import figures, html, tables
from spiralmix.report.across import AcrossMetric, across_tasks
from spiralmix.report.runs import (
    Job,
    Problem,
    ReportError,
    Run,
    collect,
    is_regularizer_key,
    saved_settings,
    split_settings,
)
from spiralmix.report.stats import (
    ACCURACY_COLUMNS,
    CALIBRATION_COLUMNS,
    LITERATURE_COLUMNS,
    TEMPERATURE_COLUMNS,
    TRUTH_COLUMNS,
    VAL_COLUMNS,
    Column,
    Comparison,
    Group,
    flatten_columns,
    paired_comparisons,
    present,
    summarize,
)
from spiralmix.report.verdict import verdict

DPI = 100


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
    comparisons: list[Comparison]
    verdict: str
    axis: str | None = None
    facets: tuple[str, ...] = ()
    across: list[AcrossMetric] | None = None


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _setting(jobs: Sequence[Job], key: str) -> Any:
    """An evaluation setting from the first job config that has it (None without jobs)."""
    for job in jobs:
        value = OmegaConf.select(job.config, key, default=None)
        if value is not None:
            return value
    return None


def command_line(sweep_dir: Path, jobs: Sequence[Job]) -> str | None:
    """The command that made the sweep, from Hydra's multirun.yaml (else a job's hydra.yaml),
    as typed: interpolations such as ${hydra.job.num} are kept, not resolved."""
    candidates = [sweep_dir / "multirun.yaml"] + [j.path / ".hydra" / "hydra.yaml" for j in jobs]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            overrides = OmegaConf.select(OmegaConf.load(path), "hydra.overrides")
            overrides = OmegaConf.to_container(overrides, resolve=False) if overrides else {}
        except Exception:  # an unreadable file: try the next one
            continue
        hydra_args = [str(o) for o in overrides.get("hydra") or []]
        hydra_args = [o for o in hydra_args if o != "hydra.mode=MULTIRUN"]
        task = [str(o) for o in overrides.get("task") or []]
        flag = ["-m"] if path.name == "multirun.yaml" else []
        return " ".join(["python -m spiralmix", *flag, *task, *hydra_args])
    return None


def default_settings() -> dict[str, Any]:
    """The composed defaults (conf/config.yaml, no overrides) as dotted keys; {} when they
    cannot be composed."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()  # the schema and resolvers the configs use
    try:
        if GlobalHydra.instance().is_initialized():  # inside a running sweep (the callback)
            cfg = compose("config")
        else:
            with initialize_config_dir(str(config_dir()), version_base="1.3"):
                cfg = compose("config")
        return saved_settings({"config": OmegaConf.to_container(cfg, resolve=True)})
    except Exception:  # a report without this line is still a report
        return {}


def changed_settings(runs: Sequence[Run], keys: Sequence[str]) -> list[str]:
    """'key=value' for every saved setting that differs from the defaults, the same in all
    runs; the settings that tell runs apart (keys) as 'key: a, b'. Left out: a regularizer
    preset's own keys (regularizer.*), named by the regularizer, and keys that follow a
    swept setting (data=moons sets data.n_classes, ...)."""
    defaults = default_settings()
    saved = [saved_settings(run.metrics) for run in runs]
    if not defaults or not any(saved):
        return []
    out = []
    for key in dict.fromkeys(k for s in saved for k in s):
        if is_regularizer_key(key) or key.endswith("_target_"):
            continue
        values = list(dict.fromkeys(str(s[key]) for s in saved if key in s))
        if len(values) > 1:  # a facet or the axis; keys that follow a swept one are left out
            if key in keys:
                out.append(f"{key}: {', '.join(values)}")
        elif key in defaults and values[0] != str(defaults[key]):
            out.append(f"{key}={values[0]}")
    return out


def _notes(runs: Sequence[Run], groups: Sequence[Group], baseline: str) -> list[str]:
    """Warnings printed above the tables: unequal lengths, missing files, no baseline."""
    notes = []
    steps_warning = tables.steps_text(runs)[1]
    if steps_warning:
        notes.append(steps_warning)
    short = [
        f"{run.name} ({run.metrics['steps']:,} of {run.metrics['max_steps']:,})"
        for run in runs
        if run.metrics.get("max_steps") not in (None, run.metrics.get("steps"))
    ]
    if short:
        notes.append(f"Completed before max_steps: {', '.join(short)}.")
    without_boundary = [run.name for run in runs if run.boundary is None]
    if without_boundary:
        notes.append(f"No readable boundary.pt (left out of the figures): {without_boundary}.")
    seen = [(run.group, run.seed) for run in runs]
    duplicates = sorted({f"{g} seed {s}" for g, s in seen if seen.count((g, s)) > 1})
    if duplicates:
        notes.append(f"Seeds present more than once (all counted): {', '.join(duplicates)}.")
    if groups and not any(g.regularizer == baseline for g in groups):
        present = ", ".join(dict.fromkeys(g.regularizer for g in groups))
        notes.append(
            f"No completed run of the baseline `{baseline}` (present: {present}): no paired "
            "comparisons; choose another with `python -m spiralmix.report <sweep> --baseline "
            "<name>`."
        )
    return notes


def write_report(
    sweep_dir: Path | str, baseline: str = "none", strict: bool = False,
    ropes: dict[str, float] | None = None,
) -> Report:  # fmt: skip
    """Write the comparison report of a sweep directory into it and return what it holds.

    baseline: the regularizer every other one is compared with, seed by seed. ropes: metric
    name → region of practical equivalence of the cross-data-set verdict, in the metric's
    units (defaults: spiralmix.report.across.DEFAULT_ROPE). Raises
    ReportError when the directory does not exist or holds no runs at all, or (strict) when
    no completed run has the baseline regularizer. Figures need at least one completed run;
    tables are written regardless.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ReportError(f"no such sweep directory: {sweep_dir}")
    runs, problems, jobs = collect(sweep_dir)
    if not runs and not problems:
        raise ReportError(f"no runs in {sweep_dir} (no metrics.json, no .hydra job directory)")
    if strict and runs and baseline not in {run.regularizer for run in runs}:
        names = ", ".join(sorted({run.regularizer for run in runs}))
        raise ReportError(
            f"--baseline={baseline} is invalid: no completed run of it (present: {names})"
        )

    axis, facets = split_settings(runs)
    keys = [*facets, *([axis] if axis else [])]  # their own columns in the CSV tables
    flatten = flatten_columns(runs)
    hidden = [c for c in flatten if not c.name.endswith("layer0")]  # the input: same for all
    has_val = any(run.value("final", "val/acc") is not None for run in runs)
    accuracy = ACCURACY_COLUMNS + (VAL_COLUMNS if has_val else [])
    # Newer metrics, each where some run has it: older sweeps' reports stay as they were.
    literature = present(LITERATURE_COLUMNS, runs)
    temperature = present(TEMPERATURE_COLUMNS, runs)
    truth = present(TRUTH_COLUMNS, runs)
    columns = accuracy + CALIBRATION_COLUMNS + flatten + literature + temperature + truth
    groups = summarize(runs, columns, axis, facets)
    comparisons = paired_comparisons(groups, columns, baseline)
    steps = tables.steps_text(runs)[0]
    notes = _notes(runs, groups, baseline)
    fraction = _setting(jobs, "evaluation.flatten_fraction")
    n_bins = int(_setting(jobs, "evaluation.ece_bins") or 15)
    across = across_tasks(groups, columns, baseline, ropes) if facets else []
    the_verdict = "No completed run yet."
    if groups:
        the_verdict = verdict(comparisons, baseline, axis, across)

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
            f"n significant, layer k: singular values of a class's representation after "
            f"hidden layer k above {threshold} the largest; effective rank, layer k: exp of "
            "the entropy of the normalised singular values, Roy & Vetterli 2007, no "
            "threshold); both "
            "averaged over the classes, fewer = flatter (Verma et al. 2019). The input "
            "(layer 0) is the same for every regularizer and is only in report.csv.",
            hidden,
        ),
        (
            "Calibration as the literature computes it",
            f"On the test set. ECE [0, 1]: top-label confidence in {n_bins} equal-width bins "
            "over [0, 1], as torchmetrics and Guo et al. 2017 bin it (ECE above bins over "
            "[1/K, 1]); adaptive ECE: equal-mass bins; MCE: the largest gap of a bin; "
            "class-wise ECE: per class, averaged; conf − acc: mean confidence minus accuracy "
            "(> 0 overconfident, nearer 0 is better). AURC: area under the risk–coverage "
            "curve (lower is better). far-ring AUROC, FPR@95: telling the test points from "
            "the far ring's by top-label confidence (AUROC: higher is better, 0.5 = chance).",
            literature,
        ),
        (
            "Temperature scaling",
            "T fitted per run on its validation points (never the test points) by minimising "
            "their NLL; the test metrics of the logits divided by T (lower is better). T > 1 "
            "softens; a run best predicting chance drives T to the bound of its search, so "
            "read the median of T rather than its mean.",
            temperature,
        ),
        (
            "The true posterior",
            "The generator's posterior p* is known: true cal. error is E|p̂(x) − p*(x)| on the "
            "test points (no bins), on the decision maps' grid in brackets; excess risk: the "
            "expected error above the Bayes classifier's (all lower is better). Bayes acc and "
            "NLL: the Bayes classifier's on the test labels, the data's ceiling and floor, the "
            "same for every regularizer (a reference, not compared). Absent at noise 0 (the "
            "posterior is degenerate).",
            truth,
        ),
    ]
    summary_tables = [
        tables.summary_table(title, text, groups, cols, axis, facets)
        for title, text, cols in sections
        if cols
    ]
    # The newer metrics' pairs in a table per topic: one table would be too wide to read.
    topics = {"": accuracy + CALIBRATION_COLUMNS + flatten}
    topics |= {title.lower(): cols for title, _, cols in sections[3:]}
    paired = [
        tables.paired_table([c for c in comparisons if c.column in cols], baseline, axis,
                            facets, subject)
        for subject, cols in topics.items()
    ]  # fmt: skip
    ranking = None
    if truth and truth[0].name == "truth_calibration_error":
        ranking = tables.truth_ranking_table(
            groups, comparisons, truth[0], next(iter(literature), None),
            next((c for c in temperature if c.name.endswith("truth_calibration_error")), None),
            baseline, axis, facets,
        )  # fmt: skip
    across_shown = [tables.across_table(m, baseline) for m in across]
    shown = across_shown + [t for t in (ranking, *paired) if t] + summary_tables
    per_seed = tables.per_seed_table(groups, [c for _, _, cols in sections for c in cols])

    # Built one at a time, so that only one figure is in memory.
    builders: dict[str, Callable[[], Figure]] = {}
    if groups:
        if across:
            builders["profiles.png"] = lambda: figures.profiles_figure(across)
            builders["critical_difference.png"] = lambda: figures.critical_difference_figure(across)
        if comparisons:
            # T's mean difference is set by the runs at its bound: its medians are in the table.
            drawn = [c for c in comparisons if not c.column.median]
            builders["paired.png"] = lambda: figures.paired_figure(drawn, baseline)
        if axis is not None:
            # The compared metrics, flattening as the deepest layer's effective rank only.
            eranks = [c for c in columns if c.paired and c.name.startswith("erank")]
            curve_columns = [c for c in columns if c.paired and "layer" not in c.name]
            curve_columns += eranks[-1:]
            builders["sweep_curves.png"] = lambda: figures.axis_figure(
                groups, curve_columns, axis, facets
            )
        builders |= {
            "boundaries.png": lambda: figures.boundaries_figure(groups, problems),
            "curves.png": lambda: figures.curves_figure(groups),
            "calibration.png": lambda: figures.calibration_figure(groups, n_bins),
            "flattening.png": lambda: figures.flattening_figure(groups, fraction),
        }
    pngs = {}
    for name, build in builders.items():
        pngs[name] = _png(build())
        write_atomic(sweep_dir / name, lambda tmp, data=pngs[name]: tmp.write_bytes(data))

    title = f"Sweep report: `{sweep_dir}`"
    about = _about(runs, groups, problems, facets, keys, jobs, sweep_dir, steps)
    markdown = _markdown(
        title, groups, runs, problems, shown, per_seed, notes, steps, the_verdict, list(pngs),
        about,
    )  # fmt: skip
    texts = {
        "report.md": markdown,
        "report.csv": tables.summary_csv(groups, columns, keys),
        "report_runs.csv": tables.runs_csv(groups, problems, columns),
    }
    if comparisons:
        texts["report_paired.csv"] = tables.paired_csv(comparisons, keys)
    if across:
        texts["report_across.csv"] = tables.across_csv(across)
    texts["report.html"] = html.page(
        title, the_verdict, notes, shown if groups else [], pngs,
        tables.problems_table(problems), [run.path for run in runs if run.path], sweep_dir,
        about, [per_seed] if groups else [],
    )  # fmt: skip
    for name, text in texts.items():
        _write_text(sweep_dir / name, text)
    files = [sweep_dir / name for name in [*texts, *pngs]]

    if groups:
        summary = tables.terminal_summary(sweep_dir, shown, steps) + "\n\n" + the_verdict
    else:
        summary = f"{sweep_dir}: no completed run yet"
    if problems:
        summary += f"\n\n{len(problems)} failed or unfinished runs: see report.md"
    return Report(sweep_dir, groups, problems, columns, notes, files, summary, comparisons,
                  the_verdict, axis, tuple(facets), across)  # fmt: skip


def _about(
    runs: Sequence[Run], groups: Sequence[Group], problems: Sequence[Problem],
    facets: Sequence[str], keys: Sequence[str], jobs: Sequence[Job], sweep_dir: Path,
    steps: str,
) -> list[tuple[str, str]]:  # fmt: skip
    """What the sweep is, line by line: (label, Markdown text)."""
    if not groups:
        return []
    seeds = sorted({run.seed for run in runs})
    seed_text = f"{len(seeds)} ({seeds[0]}–{seeds[-1]})" if len(seeds) > 1 else str(seeds[0])
    about = [
        ("Runs", f"{len(runs)} completed, {len(problems)} failed or unfinished; "
                 f"{seed_text} seeds; {steps}"),
    ]  # fmt: skip
    data = sorted({str(run.metrics.get("config", {}).get("data", {}).get("name", ""))
                   for run in runs} - {""})  # fmt: skip
    if data:
        about.append(("Data set" + ("s" if len(data) > 1 else ""), ", ".join(data)))
    command = command_line(sweep_dir, jobs)
    if command:
        about.append(("Command", f"`{command}`"))
    changed = changed_settings(runs, keys)
    if changed:
        about.append(("Not the defaults", ", ".join(f"`{c}`" for c in changed)))
    return about


def _markdown(
    title: str,
    groups: Sequence[Group],
    runs: Sequence[Run],
    problems: Sequence[Problem],
    shown: Sequence[tables.Table],
    per_seed: tables.Table,
    notes: Sequence[str],
    steps: str,
    the_verdict: str,
    figure_names: Sequence[str],
    about: Sequence[tuple[str, str]] = (),
) -> str:
    out = [f"# {title}", ""]
    out += [f"- **{label}:** {text}" for label, text in about] + ([""] if about else [])
    if not groups:
        out += ["No completed run yet.", "", "## Failed or unfinished runs", ""]
        return "\n".join(out) + "\n" + tables.problems_markdown(problems)
    n_seeds = sorted({len(g.runs) for g in groups})
    seeds_text = "–".join(map(str, sorted({n_seeds[0], n_seeds[-1]})))  # "3" or "2–3"
    out += [
        f"Final test metrics {steps}, over seeds: **mean ± sample std** (min–max). "
        "The best mean of each comparative column is **bold** (accuracy: highest; loss, ECE, "
        f"Brier: lowest). {len(groups)} rows, "
        f"{seeds_text} seeds each, {len(runs)} completed runs, "
        f"{len(problems)} failed or unfinished (listed at the end). The same report with "
        "every figure embedded: report.html.",
        "",
        "## Verdict",
        "",
        the_verdict,
        "",
    ]
    out += [f"- **Note:** {note}" for note in notes]
    if notes:
        out.append("")
    out += [tables.table_markdown(t) for t in shown]
    out += ["## Figures", ""] + [f"![{name}]({name})" for name in figure_names] + [""]
    out += [tables.table_markdown(per_seed)]
    out += ["## Failed or unfinished runs", ""]
    return "\n".join(out) + "\n" + tables.problems_markdown(problems)
