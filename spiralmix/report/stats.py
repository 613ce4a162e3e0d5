"""Statistics over seeds: summaries per row and paired comparisons against a baseline.

Runs with the same seed share the data set, its split and the initial weights, so a
regularizer is compared with the baseline *per seed*: d_s = metric(regularizer, s) −
metric(baseline, s). For the mean of d: a seeded percentile-bootstrap 95 % interval, the
exact two-sided Wilcoxon signed-rank p-value, and Holm's correction over the comparisons
of one metric (one family per metric, facet and axis value).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from spiralmix.report.runs import CANONICAL, Run

ALPHA = 0.05  # significance level of every test in the report
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # the report is reproducible: the same sweep gives the same intervals


@dataclass(frozen=True)
class Column:
    """One reported metric: where it lives in metrics.json and which direction is better."""

    name: str  # CSV name
    label: str  # table header
    section: str  # "final" or "best" in metrics.json
    key: str
    better: str | None  # "max", "min", or None for descriptive metrics
    digits: int = 3
    paired: bool = False  # compared per seed against the baseline
    median: bool = False  # shown beside the mean: a value that can sit at a bound (T)


@dataclass(frozen=True)
class Stat:
    """Summary of one metric over seeds; std is the sample std (ddof=1), None for n=1."""

    n: int
    mean: float
    std: float | None
    min: float
    max: float
    median: float = math.nan


def describe(values: Sequence[float]) -> Stat | None:
    """Mean, sample std, min and max of values; None for no values."""
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(len(values), statistics.fmean(values), std, min(values), max(values),
                statistics.median(values))  # fmt: skip


ACCURACY_COLUMNS = [
    Column("test_acc", "test acc", "final", "test/acc", "max", paired=True),
    Column("test_loss", "test loss", "final", "test/loss", "min", paired=True),
    Column("best_test_acc", "best test acc", "best", "test/acc", "max"),
]
VAL_COLUMNS = [
    Column("val_acc", "val acc", "final", "val/acc", "max"),
    Column("val_loss", "val loss", "final", "val/loss", "min"),
]
CALIBRATION_COLUMNS = [
    Column("test_ece", "ECE", "final", "test/ece", "min", paired=True),
    Column("test_brier", "Brier", "final", "test/brier", "min", paired=True),
    Column(
        "uncertain_fraction",
        "uncertain",
        "final",
        "boundary/uncertain_fraction",
        None,
        paired=True,
    ),  # fmt: skip
    Column("ood_confidence", "OOD conf", "final", "ood/confidence", None),
]


# Calibration binned as the literature bins it, selective prediction and the far ring.
LITERATURE_COLUMNS = [
    Column("calibration_ece", "ECE [0, 1]", "final", "calibration/ece", "min", paired=True),
    Column("calibration_ece_adaptive", "adaptive ECE", "final", "calibration/ece_adaptive",
           "min", paired=True),
    Column("calibration_mce", "MCE", "final", "calibration/mce", "min", paired=True),
    Column("calibration_classwise_ece", "class-wise ECE", "final", "calibration/classwise_ece",
           "min"),
    # Signed: nearer 0 is better, so neither direction of a difference is.
    Column("calibration_confidence_gap", "conf − acc", "final", "calibration/confidence_gap",
           None, paired=True),
    Column("selective_aurc", "AURC", "final", "selective/aurc", "min", paired=True),
    Column("ood_auroc_confidence", "far-ring AUROC", "final", "ood/auroc_confidence", "max",
           paired=True),
    Column("ood_fpr95_confidence", "far-ring FPR@95", "final", "ood/fpr95_confidence", "min"),
]  # fmt: skip
# Only in runs with evaluation.temperature_scaling=true.
TEMPERATURE_COLUMNS = [
    # T hits its search bound where a member is best predicting chance: the median says more.
    Column("temperature_T", "T", "final", "temperature/T", None, 2, paired=True, median=True),
    Column("temperature_ece", "ECE after T", "final", "temperature/ece", "min", paired=True),
    Column("temperature_nll", "NLL after T", "final", "temperature/nll", "min", paired=True),
    Column("temperature_truth_calibration_error", "true cal. error after T", "final",
           "temperature/truth_calibration_error", "min", paired=True),
]  # fmt: skip
# Only where the generator's posterior is not degenerate (no truth/ keys at noise 0).
TRUTH_COLUMNS = [
    Column("truth_calibration_error", "true cal. error", "final", "truth/calibration_error",
           "min", paired=True),
    Column("truth_calibration_error_grid", "true cal. error (grid)", "final",
           "truth/calibration_error_grid", "min", paired=True),
    Column("truth_excess_risk", "excess risk", "final", "truth/excess_risk", "min", paired=True),
    # The data's, the same for every regularizer: a reference, never compared.
    Column("truth_bayes_acc", "Bayes acc", "final", "truth/bayes_acc", None),
    Column("truth_bayes_nll", "Bayes NLL", "final", "truth/bayes_nll", None),
]  # fmt: skip


def present(columns: Sequence[Column], runs: Sequence[Run]) -> list[Column]:
    """The columns that at least one run has a value of (older runs lack newer metrics)."""
    return [c for c in columns if any(run.value(c.section, c.key) is not None for run in runs)]


def flatten_columns(runs: Sequence[Run]) -> list[Column]:
    """n_significant and effective rank per layer that any run has (layer 0 = the input)."""
    layers = sorted(
        {
            int(key.split("/")[1].removeprefix("layer"))
            for run in runs
            for key, value in run.metrics.get("final", {}).items()
            if key.startswith("flatten/layer") and value is not None
        }
    )
    columns = []
    for k in layers:
        columns.append(
            Column(
                f"n_sig_layer{k}",
                f"n significant, layer {k}",
                "final",
                f"flatten/layer{k}/n_significant",
                None,
                1,
                paired=k > 0,
            )  # fmt: skip
        )
        columns.append(
            Column(
                f"erank_layer{k}",
                f"effective rank, layer {k}",
                "final",
                f"flatten/layer{k}/effective_rank",
                None,
                2,
                paired=k > 0,
            )  # fmt: skip
        )
    return present(columns, runs)


@dataclass
class Group:
    """One row of the summary: a regularizer (and any other swept setting) over seeds."""

    name: str
    regularizer: str
    runs: list[Run]
    facet: str = ""  # the categorical settings it shares with its facet, e.g. "data.name=moons"
    x: float | None = None  # its value on the curve axis, None without one
    stats: dict[str, Stat | None] = field(default_factory=dict)  # column name → stat
    best: set[str] = field(default_factory=set)  # names of columns where this row is best

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    def values(self, column: Column) -> dict[int, float]:
        """seed → the column's value, for the runs that have it."""
        out = {}
        for run in self.runs:
            value = run.value(column.section, column.key)
            if value is not None and math.isfinite(value):
                out[run.seed] = value
        return out


def _group_order(group: Group) -> tuple:
    rank = CANONICAL.index(group.regularizer) if group.regularizer in CANONICAL else len(CANONICAL)
    x = -math.inf if group.x is None else group.x
    # By facet, then axis value: the rows compared with each other (best mean) sit together.
    return (group.facet, x, rank, group.regularizer, group.name)


def summarize(
    runs: Sequence[Run],
    columns: Sequence[Column],
    axis: str | None = None,
    facets: Sequence[str] = (),
) -> list[Group]:
    """Group runs into rows (facet, canonical order, axis), compute each column's stats, and
    mark the best mean of each column within a facet and axis value."""
    by_name: dict[str, Group] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        if run.group not in by_name:
            facet = ", ".join(f"{k}={run.settings[k]}" for k in facets if k in run.settings)
            x = float(run.settings[axis]) if axis in run.settings else None
            by_name[run.group] = Group(run.group, run.regularizer, [], facet, x)
        by_name[run.group].runs.append(run)
    groups = sorted(by_name.values(), key=_group_order)
    for group in groups:
        for col in columns:
            group.stats[col.name] = describe(list(group.values(col).values()))
    for col in columns:
        if col.better is None:
            continue
        for cell in {(g.facet, g.x) for g in groups}:
            members = [g for g in groups if (g.facet, g.x) == cell]
            means = {g.name: g.stats[col.name].mean for g in members if g.stats[col.name]}
            # A single row, or all rows equal, is not "best" of anything.
            if len(set(means.values())) < 2:
                continue
            target = max(means.values()) if col.better == "max" else min(means.values())
            for g in members:
                if means.get(g.name) == target:
                    g.best.add(col.name)
    return groups


# --------------------------------------------------------------------------------------
# Paired tests


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:  # fmt: skip
    """Percentile-bootstrap interval of the mean of values (n,): resample n of them with
    replacement ``resamples`` times from a seeded torch generator; the (1 ± level) / 2
    quantiles of the resampled means. Constant values give (c, c)."""
    x = torch.tensor(list(values), dtype=torch.float64)
    if len(x) == 0:
        return (math.nan, math.nan)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(x), (resamples, len(x)), generator=generator)
    means = x[index].mean(1)  # (resamples,)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return (float(low), float(high))


def _signed_rank_counts(doubled_ranks: Sequence[int]) -> list[int]:
    """counts[w] = number of the 2^n sign assignments whose positive doubled ranks sum to w."""
    counts = [1] + [0] * sum(doubled_ranks)
    for r in doubled_ranks:
        for w in range(len(counts) - 1, r - 1, -1):
            counts[w] += counts[w - r]
    return counts


def wilcoxon_signed_rank(differences: Sequence[float]) -> tuple[float, int]:
    """Exact two-sided Wilcoxon signed-rank p-value of paired differences, and the number of
    non-zero differences it used.

    Zero differences are dropped (Wilcoxon's convention); ties share their average rank, and
    the null distribution is enumerated exactly over all 2^n sign flips (doubled ranks are
    integers, so ties stay exact). p = min(1, 2 · P(W+ as extreme as observed)); NaN for n = 0.
    """
    d = [x for x in differences if x != 0]
    n = len(d)
    if n == 0:
        return (math.nan, 0)
    order = sorted(range(n), key=lambda i: abs(d[i]))
    doubled = [0] * n  # 2 × average rank, an integer
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for k in range(i, j + 1):
            doubled[order[k]] = i + j + 2  # ranks i+1 … j+1, average (i+j+2)/2
        i = j + 1
    w_plus = sum(r for r, x in zip(doubled, d) if x > 0)
    counts = _signed_rank_counts(doubled)
    total = 2**n
    lower = sum(counts[: w_plus + 1]) / total
    upper = sum(counts[w_plus:]) / total
    return (min(1.0, 2 * min(lower, upper)), n)


def smallest_p(n: int, comparisons: int = 1) -> float:
    """The smallest two-sided exact signed-rank p-value n pairs can give (all signs alike),
    after Holm's correction over ``comparisons`` tests (the smallest one is multiplied by it)."""
    return min(1.0, comparisons * 2 / 2**n) if n > 0 else 1.0


def min_pairs_for(alpha: float = ALPHA, comparisons: int = 1) -> int:
    """The fewest non-zero pairs for which the signed-rank test can reach p < alpha after
    Holm's correction over ``comparisons`` tests: 6 for one test at 0.05, 8 for five."""
    n = 1
    while smallest_p(n, comparisons) >= alpha:
        n += 1
    return n


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order (NaN stays NaN, not counted).

    Sorted ascending p_(1) ≤ … ≤ p_(m): adjusted p_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)).
    """
    finite = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(finite)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(finite, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class Comparison:
    """One regularizer against the baseline on one metric, paired by seed."""

    column: Column
    group: Group
    baseline: Group
    seeds: list[int]  # seeds both have
    differences: list[float]  # group − baseline, per seed
    mean: float
    ci: tuple[float, float]
    p: float  # Wilcoxon signed-rank, two-sided, exact
    n_nonzero: int
    p_holm: float = math.nan

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm < ALPHA


def compare(group: Group, baseline: Group, column: Column) -> Comparison | None:
    """The paired comparison of group against baseline on column; None without common seeds."""
    mine, theirs = group.values(column), baseline.values(column)
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    d = [mine[s] - theirs[s] for s in seeds]
    p, n_nonzero = wilcoxon_signed_rank(d)
    return Comparison(column, group, baseline, seeds, d, statistics.fmean(d), bootstrap_ci(d),
                      p, n_nonzero)  # fmt: skip


def paired_comparisons(
    groups: Sequence[Group], columns: Sequence[Column], baseline: str
) -> list[Comparison]:
    """Every group against the baseline group of its facet and axis value (or of its facet
    when the baseline was not swept along the axis), one metric at a time, Holm-corrected
    within each (metric, facet, axis value)."""
    bases = {(g.facet, g.x): g for g in groups if g.regularizer == baseline}
    out = []
    for column in columns:
        if not column.paired:
            continue
        families: dict[tuple, list[Comparison]] = {}
        for group in groups:
            base = bases.get((group.facet, group.x)) or bases.get((group.facet, None))
            if group.regularizer == baseline or base is None:
                continue
            comparison = compare(group, base, column)
            if comparison is not None:
                families.setdefault((group.facet, group.x), []).append(comparison)
        for family in families.values():
            for comparison, adjusted in zip(family, holm([c.p for c in family])):
                comparison.p_holm = adjusted
            out += family
    return out
