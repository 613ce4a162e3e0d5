"""The report's figures, one function each, from groups of runs (matplotlib, no files).

Drawings that also appear live in TensorBoard come from spiralmix.plots: the decision map
(draw_boundary), the reliability diagram (reliability_axes) and the spectrum panels
(spectrum_axes).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    NullFormatter,
    NullLocator,
)

from spiralmix.metrics import reliability  # noqa: E402
from spiralmix.plots import (  # noqa: E402
    draw_boundary,
    reliability_axes,
    set_reliability,
    spectrum_axes,
)
from spiralmix.report.across import AcrossMetric, performance_profile  # noqa: E402
from spiralmix.report.runs import Problem, Run  # noqa: E402
from spiralmix.report.stats import Column, Comparison, Group, bootstrap_ci  # noqa: E402
from spiralmix.report.tables import fmt, p_text  # noqa: E402

# One colour per regularizer in every figure of every report, whichever subset a sweep holds;
# another name gets a spare colour chosen by a hash of the name, so it too keeps its colour.
COLORS = {
    "none": "#4d4d4d",
    "weight_decay": "tab:orange",
    "dropout": "tab:green",
    "mixup": "tab:blue",
    "input_mixup": "tab:purple",
    "hidden_mixup": "tab:red",
}
SPARE_COLORS = ("tab:brown", "tab:olive", "tab:cyan", "tab:pink", "#1b9e77", "#e7298a")
LINESTYLES = ("-", "--", ":", "-.")


def color_of(regularizer: str) -> str:
    """The regularizer's colour, the same in every figure and every report."""
    if regularizer in COLORS:
        return COLORS[regularizer]
    return SPARE_COLORS[zlib.crc32(regularizer.encode()) % len(SPARE_COLORS)]


def colors(groups: Sequence[Group]) -> dict[str, str]:
    """Group name → its regularizer's colour."""
    return {g.name: color_of(g.regularizer) for g in groups}


def _figure_rows(groups: Sequence[Group]) -> list[tuple[Group, dict[int, Run] | None]]:
    """The rows of boundaries.png: (group, None) per group and, leading each facet and axis
    value's groups where any of its runs saved the true posterior (grid_truth in
    boundary.pt), (its first group, seed → such a run) for the Bayes map."""
    rows: list[tuple[Group, dict[int, Run] | None]] = []
    seen: set[tuple] = set()
    for group in groups:
        cell = (group.facet, group.x)
        if cell not in seen:
            seen.add(cell)
            truth = {
                run.seed: run
                for g in groups
                if (g.facet, g.x) == cell
                for run in g.runs
                if run.boundary is not None and "grid_truth" in run.boundary
            }
            if truth:
                rows.append((group, truth))
        rows.append((group, None))
    return rows


def boundaries_figure(groups: Sequence[Group], problems: Sequence[Problem]) -> Figure:
    """Final decision boundaries with training points: rows = regularizers, columns = seeds;
    where the runs saved the generator's true posterior, a row of it (the Bayes map, in the
    same colours) above each data set's or swept value's regularizers."""
    status = {(p.group, p.seed): p.status for p in problems}
    names = {g.name for g in groups}
    # Seeds that failed or are unfinished get a column too: the gap is visible, not hidden.
    seeds = sorted(
        {run.seed for g in groups for run in g.runs}
        | {int(p.seed) for p in problems if p.group in names and p.seed.isdigit()}
    )
    rows = _figure_rows(groups)
    size = 1.9
    width = max(size * len(seeds) + 1.4, 4.6)  # room for the title with a single seed
    fig = Figure(figsize=(width, size * len(rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows), len(seeds), squeeze=False)
    mappable = None
    for row_axes, (group, truth) in zip(axes, rows):
        for ax, seed in zip(row_axes, seeds):
            if truth is not None:  # the Bayes map of this seed's data
                run = truth.get(seed)
                b = None if run is None else run.boundary
                p, key = (None if b is None else b["grid_truth"]), "truth/bayes_acc"
                name = "Bayes acc"
            else:
                run = {r.seed: r for r in group.runs}.get(seed)
                b = run.boundary if run is not None else None
                p, key, name = (None if b is None else b["grid_p"]), "test/acc", "acc"
            if p is None:
                text = status.get((group.name, str(seed)), "no run") if truth is None else "–"
                text = "no boundary.pt" if run is not None else text
                ax.text(0.5, 0.5, text, ha="center", va="center", color="grey", fontsize=10)
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1)
                ax.set_frame_on(False)
                ax.set_title(f"seed {seed}", fontsize=10)
            else:
                found = draw_boundary(ax, b["grid"], p, b["train_X"], b["train_y"])
                mappable = mappable or found
                ax.set_title(f"seed {seed} · {name} {fmt(run.value('final', key), 3)}",
                             fontsize=10)  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.set_aspect("equal")
        # The other settings (data set, swept value) on their own line keep the label within
        # its row.
        name = group.regularizer if truth is None else "true posterior"
        where = group.name.removeprefix(group.regularizer).strip(" ()")
        label = f"{where}\n{name}" if where else name
        row_axes[0].set_ylabel(label, fontsize=11 if where else 12, fontweight="bold")
    if mappable is not None:
        fig.colorbar(
            mappable,
            ax=axes,
            label="p(class 1)   (white = 0.5: uncertain)",
            ticks=[0, 0.25, 0.5, 0.75, 1],
            shrink=min(1.0, 3.5 / (size * len(rows))),
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
    """Test loss (log scale) and accuracy against step: mean over seeds, min–max band; a row
    of two panels per facet (data set), one colour per regularizer, a line style per axis
    value."""
    facets = list(dict.fromkeys(g.facet for g in groups))
    fig = Figure(figsize=(12, 3.6 * len(facets) + 0.6), layout="constrained")
    axes = fig.subplots(len(facets), 2, squeeze=False)
    xs = sorted({g.x for g in groups if g.x is not None})
    handles: dict[str, Line2D] = {}
    for (ax_loss, ax_acc), facet in zip(axes, facets):
        for group in (g for g in groups if g.facet == facet):
            style = LINESTYLES[xs.index(group.x) % len(LINESTYLES)] if group.x in xs else "-"
            label = group.name if not facet else group.name.replace(f"{facet}, ", "")
            label = label.replace(f" ({facet})", "")
            for ax, key in ((ax_loss, "test/loss"), (ax_acc, "test/acc")):
                steps, values = _history_array(group.runs, key)
                if not np.isfinite(values).any():
                    continue
                has = np.isfinite(values).any(0)
                steps, values = steps[has], values[:, has]
                c = color_of(group.regularizer)
                (line,) = ax.plot(steps, np.nanmean(values, 0), color=c, linewidth=2,
                                  linestyle=style)  # fmt: skip
                ax.fill_between(steps, np.nanmin(values, 0), np.nanmax(values, 0), color=c,
                                alpha=0.12)  # fmt: skip
                handles.setdefault(label, line)
        # Unregularized test loss grows by orders of magnitude while mixup stays near 0.5.
        ax_loss.set_yscale("log")
        low, high = ax_loss.get_ylim()
        # Label enough values to read a narrow range, not so many that a wide one is cluttered.
        subs = (1, 1.5, 2, 3, 5, 7) if high / low < 30 else (1, 2, 5)
        ax_loss.yaxis.set_major_locator(LogLocator(subs=subs))
        ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax_loss.yaxis.set_minor_formatter(NullFormatter())
        where = f" · {facet}" if facet else ""
        ax_loss.set_title(f"test loss (log scale){where}", fontsize=11)
        ax_acc.set_title(f"test accuracy{where}", fontsize=11)
        for ax in (ax_loss, ax_acc):
            ax.grid(True, which="major", alpha=0.3)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    # Outside the axes: with six regularizers any inside corner hides some lines.
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize=9)
    fig.suptitle("Test metrics during training: mean over seeds, band = min–max", fontsize=12)
    return fig


def calibration_figure(groups: Sequence[Group], n_bins: int) -> Figure:
    """Reliability diagram per regularizer from the pooled final test predictions of its seeds."""
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(max(3.6 * ncols, 4.6), 3.9 * nrows + 0.6), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(nrows, ncols, squeeze=False)).ravel()
    palette = colors(groups)
    edges = torch.linspace(0.5, 1.0, n_bins + 1)
    for subfig, group in zip(subfigs, groups):
        ax, ax_count = subfig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
        line, bars = reliability_axes(ax, ax_count, edges, palette[group.name])
        ece = group.stats.get("test_ece")
        ece_text = "" if ece is None else f" · ECE {fmt(ece.mean, 3)}"
        ax.set_title(f"{group.name}{ece_text}", fontsize=10)
        # Binary predictions only (test_p of shape (N,)); K-class runs are left to TensorBoard.
        with_p = [r.boundary for r in group.runs
                  if r.boundary is not None and r.boundary["test_p"].ndim == 1]  # fmt: skip
        if with_p:
            p = torch.cat([b["test_p"].flatten() for b in with_p]).unsqueeze(0)
            y = torch.cat([b["test_y"].flatten() for b in with_p]).unsqueeze(0)
            stats = {k: v[0] for k, v in reliability(p, y, n_bins).items() if k != "edges"}
            set_reliability(line, bars, stats)
        else:
            ax.text(0.75, 0.5, "no boundary.pt", ha="center", va="center")
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
    palette = colors(groups)
    lowest = 1.0
    for ax, layer in zip(axes, layers):
        for group in groups:
            spectra = _mean_spectrum(group.runs, layer)
            if spectra is None:
                continue
            index = np.arange(1, spectra.shape[1] + 1)
            color = palette[group.name]
            ax.plot(index, spectra.mean(0), color=color, linewidth=2, label=group.name)
            ax.fill_between(index, spectra.min(0), spectra.max(0), color=color, alpha=0.15)
            lowest = min(lowest, float(spectra.mean(0)[-1]))
        if fraction is not None:
            ax.axhline(fraction, color="black", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        spectrum_axes(ax, layer)
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


def paired_figure(comparisons: Sequence[Comparison], baseline: str) -> Figure:
    """Mean paired difference and its 95 % interval per regularizer, one panel per metric;
    filled markers are significant after Holm's correction. Rows = facets and axis values."""
    columns = list(dict.fromkeys(c.column for c in comparisons))
    cells = list(dict.fromkeys((c.group.facet, c.group.x) for c in comparisons))
    names = list(dict.fromkeys(c.group.regularizer for c in comparisons))
    ncols = min(4, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    height = 0.32 * len(names) * len(cells) + 1.2
    fig = Figure(figsize=(3.4 * ncols + 2.0, height * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    rows = [(cell, name) for cell in cells for name in names]
    labels = []
    for cell, name in rows:
        parts = [cell[0]] if cell[0] else []
        parts += [f"{cell[1]:g}"] if cell[1] is not None else []
        labels.append(name + (f" ({', '.join(parts)})" if parts else ""))
    for ax, column in zip(axes, columns):
        for y, (cell, name) in enumerate(rows):
            key = (column, cell, name)
            found = [
                c
                for c in comparisons
                if (c.column, (c.group.facet, c.group.x), c.group.regularizer) == key
            ]
            if not found:
                continue
            c = found[0]
            color = color_of(name)
            ax.plot(c.ci, [y, y], color=color, linewidth=2)
            ax.plot([c.mean], [y], marker="o", markersize=7, color=color,
                    markerfacecolor=color if c.significant else "white")  # fmt: skip
        ax.axvline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(column.label + (" (↓ better)" if column.better == "min" else
                                     " (↑ better)" if column.better == "max" else ""),
                     fontsize=10)  # fmt: skip
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_xlabel(f"difference to {baseline}")
    axes[0].set_yticks(range(len(rows)), labels)
    axes[0].invert_yaxis()
    fig.suptitle(
        f"Paired differences against {baseline} per seed: mean and 95 % bootstrap interval "
        "(filled = significant, Holm-corrected Wilcoxon p < 0.05)",
        fontsize=11,
    )
    return fig


def axis_figure(
    groups: Sequence[Group], columns: Sequence[Column], axis: str, facets: Sequence[str]
) -> Figure:
    """Each metric against the swept setting: one line per regularizer, mean over seeds with
    a 95 % bootstrap band; log x when the values span more than 10×. Rows = facets."""
    facet_names = list(dict.fromkeys(g.facet for g in groups))
    # One facet: the metrics wrap, three to a row. Several: a row of metrics per facet.
    ncols = min(3, len(columns)) if len(facet_names) == 1 else len(columns)
    nrows = math.ceil(len(columns) / ncols) * len(facet_names)
    fig = Figure(figsize=(3.8 * ncols + 1.8, 3.0 * nrows + 0.8), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[len(columns) * len(facet_names) :]:
        ax.set_visible(False)
    per_facet = math.ceil(len(columns) / ncols) * ncols
    axes = [grid[i * per_facet : i * per_facet + len(columns)] for i in range(len(facet_names))]
    xs = [g.x for g in groups if g.x is not None]
    log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) > 10
    for row, facet in zip(axes, facet_names):
        mine = [g for g in groups if g.facet == facet and g.x is not None]
        regularizers = list(dict.fromkeys(g.regularizer for g in mine))
        for ax, column in zip(row, columns):
            for name in regularizers:
                points = sorted((g.x, list(g.values(column).values())) for g in mine
                                if g.regularizer == name)  # fmt: skip
                points = [(x, v) for x, v in points if v]
                if not points:
                    continue
                x = np.array([p[0] for p in points])
                mean = np.array([np.mean(p[1]) for p in points])
                band = np.array([bootstrap_ci(p[1]) for p in points])
                color = color_of(name)
                ax.plot(x, mean, marker="o", markersize=4, color=color, label=name)
                ax.fill_between(x, band[:, 0], band[:, 1], color=color, alpha=0.15)
            if log_x:
                ax.set_xscale("log")
            # Ticks at the swept values themselves, and nowhere else.
            ax.set_xticks(sorted(set(xs)))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlabel(axis)
            ax.set_title(column.label + (f" · {facet}" if facet else ""), fontsize=10)
            ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=9)
    fig.suptitle(f"Final test metrics against {axis}: mean over seeds, band = 95 % bootstrap "
                 "interval of the mean", fontsize=11)  # fmt: skip
    return fig


def profiles_figure(metrics: Sequence[AcrossMetric]) -> Figure:
    """Performance profiles: the share of all runs (every data set, every seed) whose
    normalised score exceeds τ; one panel per metric, the higher curve is better."""
    fig = Figure(figsize=(4.6 * len(metrics) + 1.8, 3.9), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        low = min(0.0, min(float(v.min()) for v in metric.scores.values()))
        taus = torch.linspace(max(low, -1.0), 1.0, 201, dtype=torch.float64)
        for name, scores in metric.scores.items():
            ax.plot(taus, performance_profile(scores, taus), color=color_of(name), linewidth=2,
                    label=name)  # fmt: skip
        ax.set_title(f"{metric.column.label} (normalised)", fontsize=10)
        ax.set_xlabel("τ (0 = chance, 1 = best run of its data set)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("share of runs with score > τ")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=9)
    fig.suptitle(f"Performance profiles over {len(metrics[0].tasks)} data sets", fontsize=11)
    return fig


def _cliques(ranks: Sequence[float], cd: float) -> list[tuple[int, int]]:
    """Maximal runs (i, j) of the sorted ranks whose spread is below the CD: the groups the
    Nemenyi test cannot tell apart, as index ranges into the sorted order."""
    found = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in found):
            found.append((i, j))
    return found


def critical_difference_figure(metrics: Sequence[AcrossMetric]) -> Figure:
    """Demšar's critical-difference diagram per metric: the average ranks on a line (1 =
    best, left), a bar joining regularizers whose ranks differ by less than Nemenyi's CD."""
    fig = Figure(figsize=(9.0, 2.6 * len(metrics) + 0.4), layout="constrained")
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics):
        rows = sorted(metric.rows, key=lambda r: r.average_rank)
        k = len(rows)
        ax.set_xlim(-1.0, k + 2.0)  # room for the names left and right of the scale
        ax.set_ylim(0.5 - 0.16 * math.ceil(k / 2), 1.12)
        ax.hlines(0.8, 1, k, color="black", linewidth=1)
        for tick in range(1, k + 1):
            ax.vlines(tick, 0.76, 0.84, color="black", linewidth=1)
            ax.text(tick, 0.9, str(tick), ha="center", fontsize=9)
        for i, r in enumerate(rows):
            left = i < math.ceil(k / 2)
            y = 0.55 - 0.16 * (i if left else k - 1 - i)
            x_end = 0.8 if left else k + 0.2
            c = color_of(r.regularizer)
            ax.plot([r.average_rank, r.average_rank, x_end], [0.8, y, y], color=c, linewidth=1.5)
            ax.text(x_end + (-0.05 if left else 0.05), y, f"{r.regularizer} ({r.average_rank:.2f})",
                    color=c, ha="right" if left else "left", va="center", fontsize=9)  # fmt: skip
        if metric.cd is not None:
            ranks = [r.average_rank for r in rows]
            for n, (i, j) in enumerate(_cliques(ranks, metric.cd)):
                y = 0.7 - 0.05 * n
                ax.hlines(y, ranks[i] - 0.03, ranks[j] + 0.03, color="black", linewidth=3)
            ax.hlines(1.02, 1, 1 + metric.cd, color="black", linewidth=2)
            ax.text(1 + metric.cd / 2, 1.05, f"CD = {metric.cd:.2f}", ha="center", fontsize=9)
        ax.set_axis_off()
        ax.set_title(f"{metric.column.label}: average rank over {len(metric.tasks)} data sets, "
                     f"Friedman p = {p_text(metric.friedman_p)}", fontsize=10)  # fmt: skip
    fig.suptitle("Critical differences (Nemenyi, α = 0.05): a bar joins regularizers that "
                 "are not told apart", fontsize=11)  # fmt: skip
    return fig
