"""Tables of a report as data (title, header, rows of marked cells), rendered as Markdown,
CSV and plain text; html.py renders the same tables as HTML."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spiralmix.report.across import AcrossMetric
from spiralmix.report.runs import MISSING, Problem, Run
from spiralmix.report.stats import Column, Comparison, Group, Stat, min_pairs_for, smallest_p


@dataclass(frozen=True)
class Cell:
    """A table cell: ``main`` is emphasised when marked, ``rest`` follows it plainly.

    mark is what bold means in its table: "best" (the best mean of a summary column) or
    "significant" (a paired difference, Holm p < 0.05; a Bayesian verdict). tone is the
    direction against the baseline: "better" (green), "worse" (red) or "".
    """

    main: str
    rest: str = ""
    mark: str = ""
    tone: str = ""

    @property
    def markdown(self) -> str:
        return (f"**{self.main}**" if self.mark else self.main) + self.rest

    @property
    def plain(self) -> str:
        """For the terminal: the main part only (narrow), * when marked."""
        return self.main + (" *" if self.mark else "")


@dataclass
class Table:
    """One titled table with an explanation above it."""

    title: str
    explanation: str
    header: list[str]
    rows: list[list[Cell]]


def fmt(value: float | None, digits: int) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


def signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def p_text(p: float) -> str:
    """p-values as people read them: 0.031, 0.0039, < 0.001."""
    if math.isnan(p):
        return MISSING
    return "< 0.001" if p < 0.001 else f"{p:.3f}" if p >= 0.01 else f"{p:.4f}"


def tone(difference: float, column: Column) -> str:
    """ "better" or "worse" for a difference against the baseline in column's direction."""
    if column.better is None or difference == 0 or math.isnan(difference):
        return ""
    return "better" if (difference > 0) == (column.better == "max") else "worse"


def stat_cell(stat: Stat | None, col: Column, best: bool) -> Cell:
    """ "0.829 ± 0.025 (0.802–0.852)", the mean ± std part emphasised when best; columns
    with a median: "2.93 ± 1.10 (1.80–5.02), median 2.61"."""
    if stat is None:
        return Cell(MISSING)
    main = f"{fmt(stat.mean, col.digits)} ± {fmt(stat.std, col.digits)}"
    rest = f" ({fmt(stat.min, col.digits)}–{fmt(stat.max, col.digits)})" if stat.n > 1 else ""
    if col.median:
        rest += f", median {fmt(stat.median, col.digits)}"
    return Cell(main, rest, "best" if best else "")


def one_line(text: str, limit: int = 300) -> str:
    """A table cell: a multi-line error (a traceback) on one line, pipes escaped, shortened."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _key_cells(group: Group, axis: str | None, facets: Sequence[str]) -> list[Cell]:
    """The row's name: the group name, or its facets, axis value and regularizer."""
    if axis is None and not facets:
        return [Cell(group.name)]
    run = group.runs[0]
    cells = [Cell(run.settings.get(k, MISSING)) for k in facets]
    if axis is not None:
        cells.append(Cell(run.settings.get(axis, MISSING)))
    return [*cells, Cell(group.regularizer)]


def key_header(axis: str | None, facets: Sequence[str]) -> list[str]:
    if axis is None and not facets:
        return ["regularizer"]
    return [*facets, *([axis] if axis else []), "regularizer"]


def summary_table(
    title: str, explanation: str, groups: Sequence[Group], columns: Sequence[Column],
    axis: str | None, facets: Sequence[str],
) -> Table:  # fmt: skip
    rows = [
        _key_cells(g, axis, facets)
        + [Cell(str(len(g.runs)))]
        + [stat_cell(g.stats[c.name], c, c.name in g.best) for c in columns]
        for g in groups
    ]
    header = [*key_header(axis, facets), "seeds", *[c.label for c in columns]]
    return Table(title, explanation, header, rows)


def paired_cell(c: Comparison) -> Cell:
    """ "−0.950 [−1.138, −0.762] p=0.0078", emphasised when significant, toned by direction."""
    d = c.column.digits
    main = f"{signed(c.mean, d)} [{signed(c.ci[0], d)}, {signed(c.ci[1], d)}]"
    if c.column.median:  # its mean is set by the runs at the bound: the medians say more
        before, after = c.baseline.stats[c.column.name], c.group.stats[c.column.name]
        main = f"median {fmt(before.median, d)} → {fmt(after.median, d)}"
    mark = "significant" if c.significant else ""
    return Cell(main, f" p={p_text(c.p_holm)}", mark, tone(c.mean, c.column))


def paired_table(
    comparisons: Sequence[Comparison], baseline: str, axis: str | None, facets: Sequence[str],
    subject: str = "",
) -> Table | None:  # fmt: skip
    """Rows = regularizers (per facet and axis value), columns = metrics: mean paired
    difference [95 % CI], Holm-adjusted p; emphasised when significant. subject: what a
    further table of the same kind holds (its title; its explanation refers to the first)."""
    if not comparisons:
        return None
    columns = list(dict.fromkeys(c.column for c in comparisons))
    by_group: dict[str, dict[str, Comparison]] = {}
    groups: dict[str, Group] = {}
    for c in comparisons:
        by_group.setdefault(c.group.name, {})[c.column.name] = c
        groups[c.group.name] = c.group
    rows = []
    for name, cells in by_group.items():
        n = max(c.n for c in cells.values())
        row = [*_key_cells(groups[name], axis, facets), Cell(str(n))]
        for col in columns:
            c = cells.get(col.name)
            row.append(Cell(MISSING) if c is None else paired_cell(c))
        rows.append(row)
    header = [*key_header(axis, facets), "pairs", *[c.label for c in columns]]
    families: dict[tuple, set[str]] = {}
    for c in comparisons:
        families.setdefault((c.column.name, c.group.facet, c.group.x), set()).add(c.group.name)
    m = max(len(names) for names in families.values())
    if subject:
        explanation = (
            f"As above: per seed, the regularizer's value minus {baseline}'s, mean [95 % "
            "bootstrap interval], Holm-corrected exact Wilcoxon p; green better, red worse, "
            "**bold** significant."
        )
        for col in columns:
            if col.better is None:
                explanation += f" {col.label}: no better direction"
                explanation += " (nearer 0 is better)." if "gap" in col.name else "."
            if col.median:
                explanation += (
                    f" {col.label}: {baseline}'s median → the regularizer's, with the paired p "
                    "(the mean difference, set by the runs at the bound, is in "
                    "report_paired.csv)."
                )
    else:
        explanation = (
            f"Per seed, the regularizer's value minus {baseline}'s (same seed: same data, split "
            "and initial weights): the mean difference, its 95 % bootstrap interval "
            "(10,000 resamples, seeded) and the two-sided exact Wilcoxon signed-rank p-value, "
            "Holm-corrected over the regularizers compared on that metric. Colour "
            f"(report.html): green better than {baseline}, red worse; **bold**: significant, "
            f"p < 0.05 after correction. With {m} comparison{'s' if m > 1 else ''} per "
            f"metric, fewer than {min_pairs_for(comparisons=m)} pairs can make no difference "
            "significant."
        )
    split = [c for c in comparisons if not c.significant and (c.ci[0] > 0 or c.ci[1] < 0)]
    if split:
        c = split[0]
        n, family = c.n_nonzero, len(families[c.column.name, c.group.facet, c.group.x])
        explanation += (
            f" Where an interval excludes 0 but p ≥ 0.05 ({len(split)} cell"
            f"{'s' if len(split) > 1 else ''}, e.g. {c.group.name} on {c.column.label}): "
            "the interval is a percentile bootstrap of the mean, approximate (too narrow "
            "with few seeds) and not corrected for the comparisons, while the p-value is exact "
            f"and Holm-corrected over {family} comparisons; with {n} pairs its smallest "
            f"possible value is {smallest_p(n, family):.2g}"
            + (
                ": it cannot reach 0.05 whatever the seeds say."
                if smallest_p(n, family) >= 0.05
                else ", so a seed or two against the difference keeps it above 0.05."
            )
            + " Trust the p-value."
        )
    title = f"Paired differences against {baseline}" + (f": {subject}" if subject else "")
    return Table(title, explanation, header, rows)


def truth_ranking_table(
    groups: Sequence[Group], comparisons: Sequence[Comparison], truth: Column, ece: Column | None,
    after: Column | None, baseline: str, axis: str | None, facets: Sequence[str],
) -> Table | None:  # fmt: skip
    """The regularizers of each facet and axis value ordered by their mean distance to the
    true posterior (column truth), nearest first, with the paired difference against the
    baseline, the distance after temperature scaling and the rank the binned ECE gives;
    None when no run has the truth."""
    found = {(c.group.name, c.column.name): c for c in comparisons}
    cells: dict[tuple, list[Group]] = {}
    for g in groups:
        if g.stats.get(truth.name) is not None:
            cells.setdefault((g.facet, g.x), []).append(g)
    if not cells:
        return None
    rows = []
    for members in cells.values():
        members = sorted(members, key=lambda g: g.stats[truth.name].mean)
        ranked = [g for g in members if ece is not None and g.stats.get(ece.name)]
        by_ece = sorted(ranked, key=lambda g: g.stats[ece.name].mean)
        for rank, g in enumerate(members, 1):
            c = found.get((g.name, truth.name))
            if c is None:
                versus = Cell("(baseline)" if g.regularizer == baseline else MISSING)
            else:
                versus = paired_cell(c)
            stat = g.stats[truth.name]
            row = [*_key_cells(g, axis, facets), Cell(str(rank)),
                   Cell(f"{fmt(stat.mean, truth.digits)} ± {fmt(stat.std, truth.digits)}"),
                   versus]  # fmt: skip
            if after is not None:
                scaled = g.stats.get(after.name)
                row.append(Cell(MISSING if scaled is None else fmt(scaled.mean, after.digits)))
            if ece is not None:
                row.append(Cell(str(by_ece.index(g) + 1) if g in by_ece else MISSING))
            rows.append(row)
    header = [*key_header(axis, facets), "rank", "true cal. error", f"against {baseline}"]
    header += ["after T"] if after is not None else []
    header += ["rank by ECE [0, 1]"] if ece is not None else []
    where = f" at each {axis}" if axis else ""
    explanation = (
        f"The regularizers{where} ordered by their distance to the true posterior p* of the "
        "generator, E|p̂(x) − p*(x)| on the test points (no bins; mean ± std over seeds), "
        f"nearest first; against {baseline}: the paired difference as in the paired tables."
        + (" after T: the same distance after temperature scaling." if after else "")
        + (
            " rank by ECE [0, 1]: the rank the binned calibration error gives (1 = lowest): "
            "where it differs from the first, the bins and the truth disagree."
            if ece
            else ""
        )
    )
    return Table("Distance to the truth", explanation, header, rows)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table_markdown(table: Table) -> str:
    rows = [[cell.markdown for cell in row] for row in table.rows]
    body = markdown_table(table.header, rows)
    return f"## {table.title}\n\n{table.explanation}\n\n{body}\n"


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def per_seed_table(groups: Sequence[Group], columns: Sequence[Column]) -> Table:
    rows = []
    for g in groups:
        for run in g.runs:
            values = [Cell(fmt(run.value(c.section, c.key), c.digits)) for c in columns]
            steps = run.metrics.get("steps")
            steps = f"{steps:,}" if isinstance(steps, int) else MISSING
            rows.append([Cell(g.name), Cell(str(run.seed)), Cell(steps), *values])
    header = ["regularizer", "seed", "steps", *[c.label for c in columns]]
    return Table("Per seed", "", header, rows)


def problems_table(problems: Sequence[Problem]) -> Table:
    rows = [
        [Cell(f"`{p.name}`"), Cell(p.regularizer), Cell(p.seed), Cell(one_line(p.reason))]
        for p in problems
    ]
    return Table("Failed or unfinished runs", "", ["run", "regularizer", "seed", "reason"], rows)


def problems_markdown(problems: Sequence[Problem]) -> str:
    if not problems:
        return "None: every job finished with status completed.\n"
    table = problems_table(problems)
    return markdown_table(table.header, [[c.markdown for c in row] for row in table.rows]) + "\n"


def _setting_values(group: Group, keys: Sequence[str]) -> list[str]:
    return [group.runs[0].settings.get(k, "") for k in keys]


def summary_csv(
    groups: Sequence[Group], columns: Sequence[Column], keys: Sequence[str] = ()
) -> str:
    """One row per group; keys: the swept settings (facets, axis) as their own columns."""
    header = ["regularizer", *keys, "n_seeds", "seeds", "steps_min", "steps_max"]
    for col in columns:
        header += [f"{col.name}_{s}" for s in ("mean", "std", "min", "max")]
        header += [f"{col.name}_median"] if col.median else []
        header += [f"{col.name}_best"] if col.better else []
    rows = []
    for g in groups:
        steps = [int(run.metrics.get("steps", -1)) for run in g.runs]
        row: list[object] = [g.name, *_setting_values(g, keys), len(g.runs)]
        row.append(" ".join(map(str, g.seeds)))
        row += [min(steps), max(steps)]
        for col in columns:
            stat = g.stats[col.name]
            values = [None] * 4 if stat is None else [stat.mean, stat.std, stat.min, stat.max]
            values += [None if stat is None else stat.median] if col.median else []
            row += ["" if v is None else repr(v) for v in values]
            row += [int(col.name in g.best)] if col.better else []
        rows.append(row)
    return csv_text(header, rows)


def paired_csv(comparisons: Sequence[Comparison], keys: Sequence[str] = ()) -> str:
    header = ["regularizer", *keys, "baseline", "metric", "n_pairs", "seeds", "mean_difference",
              "ci_low", "ci_high", "p", "p_holm", "significant"]  # fmt: skip
    rows = [
        [
            c.group.name,
            *_setting_values(c.group, keys),
            c.baseline.name,
            c.column.name,
            c.n,
            " ".join(map(str, c.seeds)),
            repr(c.mean),
            repr(c.ci[0]),
            repr(c.ci[1]),
            repr(c.p),
            repr(c.p_holm),
            int(c.significant),
        ]  # fmt: skip
        for c in comparisons
    ]
    return csv_text(header, rows)


def runs_csv(
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
    return csv_text(header, rows)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def steps_text(runs: Sequence[Run]) -> tuple[str, str | None]:
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


def terminal_summary(sweep_dir: Path, tables: Sequence[Table], steps: str) -> str:
    """One aligned plain-text table per table (narrow enough for a terminal)."""
    out = [f"{sweep_dir}: final test metrics {steps}; * = best mean or significant"]
    for table in tables:
        rows = [[cell.plain for cell in row] for row in table.rows]
        out += ["", f"{table.title}:", plain_table(table.header, rows)]
    return "\n".join(out)


def interval(ci: tuple[float, float] | None, digits: int = 3) -> str:
    return MISSING if ci is None else f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def _task_names(tasks: Sequence[str]) -> list[str]:
    """'data=moons' → 'moons' when the facet is one setting; several stay as they are."""
    return [t.split("=", 1)[1] if "=" in t and ", " not in t else t for t in tasks]


def across_table(metric: AcrossMetric, baseline: str) -> Table:
    """One metric across the tasks: a row per regularizer, the baseline first."""
    rows = []
    for r in metric.rows:
        poi = MISSING if r.poi is None else fmt(r.poi, 2)
        if r.posterior is None:
            posterior, verdict = MISSING, Cell("(baseline)" if r.regularizer == baseline else "")
        else:
            posterior = " / ".join(fmt(p, 2) for p in r.posterior)
            decided = r.verdict in ("better", "worse")
            tone_ = r.verdict if decided else ""
            verdict = Cell(r.verdict, mark="significant" if r.verdict != "undecided" else "",
                           tone=tone_)  # fmt: skip
        poi_tone = "" if r.poi_ci is None else (
            "better" if r.poi_ci[0] > 0.5 else "worse" if r.poi_ci[1] < 0.5 else "")  # fmt: skip
        rows.append([
            Cell(r.regularizer),
            Cell(str(r.n_runs)),
            Cell(fmt(r.iqm, 3), f" {interval(r.iqm_ci)}"),
            Cell(poi, "" if r.poi_ci is None else f" {interval(r.poi_ci, 2)}",
                 "significant" if poi_tone else "", poi_tone),
            Cell(fmt(r.average_rank, 2)),
            Cell(posterior),
            verdict,
        ])  # fmt: skip
    rope = next((r.rope for r in metric.rows if r.rope is not None), None)
    cd = MISSING if metric.cd is None else fmt(metric.cd, 2)
    header = ["regularizer", "runs", "IQM [95 % CI]", f"P(better than {baseline}) [95 % CI]",
              "average rank", "P(worse / equivalent / better)", "verdict"]  # fmt: skip
    explanation = (
        f"{len(metric.tasks)} data sets ({', '.join(_task_names(metric.tasks))}). "
        f"Normalised scores (0 = chance, 1 = the data set's best run). Friedman p = "
        f"{p_text(metric.friedman_p)} (average ranks, 1 = best; a difference below the "
        f"Nemenyi critical difference {cd} is not significant)."
        + ("" if rope is None else f" Bayesian signed-rank ROPE: ±{rope:g}.")
    )
    return Table(f"Across data sets: {metric.column.label}", explanation, header, rows)


def across_csv(metrics: Sequence[AcrossMetric]) -> str:
    """One row per (metric, regularizer) of the cross-task comparison."""
    header = ["metric", "regularizer", "baseline", "n_tasks", "tasks", "n_runs", "iqm",
              "iqm_ci_low", "iqm_ci_high", "probability_of_improvement", "poi_ci_low",
              "poi_ci_high", "n_pairs", "mean_difference", "average_rank", "friedman_chi2",
              "friedman_p", "nemenyi_cd", "rope", "p_worse", "p_equivalent", "p_better",
              "verdict"]  # fmt: skip
    rows = []
    for m in metrics:
        for r in m.rows:
            posterior = r.posterior or (None, None, None)
            values = [
                m.column.name, r.regularizer, r.baseline, len(m.tasks), " ".join(m.tasks),
                r.n_runs, r.iqm, *r.iqm_ci, r.poi, *(r.poi_ci or (None, None)), r.n_pairs,
                r.mean_difference, r.average_rank, m.friedman_chi2, m.friedman_p, m.cd, r.rope,
                *posterior, r.verdict,
            ]  # fmt: skip
            rows.append(["" if v is None else repr(v) if isinstance(v, float) else v
                         for v in values])  # fmt: skip
    return csv_text(header, rows)
