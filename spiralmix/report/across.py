"""One verdict across data sets (or any other categorical facet): is a regularizer better than
the baseline over these problems, and by how much?

Each facet value is a *task* (a data set). Per metric:

- **Normalised score** per run, so that tasks of different difficulty can be pooled:
  ``(value − chance) / (best − chance)``, where ``chance`` is what a uniform prediction over
  the task's K classes gets (accuracy 1/K, test loss log K, Brier ½(1 − 1/K)) and ``best`` is
  the best value of any run on that task. 1 = the task's best run, 0 = chance, higher is
  better for every metric (a loss above log K scores below 0).
- **IQM** (interquartile mean, the mean of the middle 50 % of all runs' scores; Agarwal et
  al. 2021) with a 95 % stratified-bootstrap interval: seeds resampled within each task.
- **Paired probability of improvement** over the baseline: per task the share of seeds on
  which the regularizer beats the baseline (ties ½), averaged over tasks; its interval
  resamples seed indices within each task, the same indices for both, so pairs stay pairs.
  (rliable's version compares every run with every other run, unpaired.)
- **Performance profile**: the share of runs whose score exceeds τ, for τ over [0, 1].
- **Average ranks** of the per-task means (1 = best), the **Friedman** test and **Nemenyi's
  critical difference** (Demšar 2006): two regularizers whose average ranks differ by less
  than the CD are not told apart at α = 0.05.
- **Bayesian signed-rank test** (Benavoli et al. 2014, 2017) of the per-task mean
  differences against the baseline with a region of practical equivalence (ROPE, in the
  metric's own units): the posterior probabilities that the regularizer is worse, practically
  equivalent or better. A verdict needs one of them ≥ 0.95; otherwise it is "undecided".

Every random number comes from a seeded torch generator, so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from spiralmix.report.stats import BOOTSTRAP_SEED, Column, Group

RESAMPLES = 2_000  # stratified-bootstrap resamples (as rliable's default)
POSTERIOR_SAMPLES = 50_000  # Dirichlet-process samples of the Bayesian signed-rank test
PRIOR_STRENGTH = 0.5  # weight of the prior pseudo-observation at 0 (Benavoli et al., baycomp)
DECISION = 0.95  # posterior probability a Bayesian verdict needs
ALPHA = 0.05
# Regions of practical equivalence in each metric's units (python -m spiralmix.report --rope).
DEFAULT_ROPE = {"test_acc": 0.01, "test_loss": 0.02, "test_brier": 0.005}
# q_0.05 of the studentized range for k = 2 … 10 groups and infinite degrees of freedom,
# divided by √2 (Demšar 2006, table 5a).
NEMENYI_Q = (1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164)


def chance(column: Column, n_classes: int) -> float | None:
    """What a uniform prediction over K classes scores; None for metrics without one."""
    k = n_classes
    return {
        "test_acc": 1 / k,
        "test_loss": math.log(k),
        "test_brier": 0.5 * (1 - 1 / k),
    }.get(column.name)


def normalise(values: torch.Tensor, chance_value: float, best: float) -> torch.Tensor:
    """(value − chance) / (best − chance): 1 at the best value, 0 at chance."""
    span = best - chance_value
    return (values - chance_value) / span if span != 0 else torch.zeros_like(values)


# --------------------------------------------------------------------------------------
# Aggregates of runs × tasks


def iqm(scores: torch.Tensor) -> torch.Tensor:
    """Interquartile mean over the last dimension: sort, drop ⌊n/4⌋ values at each end, mean
    (scipy.stats.trim_mean(x, 0.25), as rliable). Batched: (..., n) → (...)."""
    n = scores.shape[-1]
    cut = int(0.25 * n)
    return scores.sort(-1).values[..., cut : n - cut].mean(-1)


def stratified_resample(
    tasks: Sequence[torch.Tensor], resamples: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Per task (n_t,) or (n_t, m): ``resamples`` draws of n_t seed indices with replacement,
    gathered as (resamples, n_t[, m]); the same indices for every column of a task."""
    out = []
    for values in tasks:
        index = torch.randint(len(values), (resamples, len(values)), generator=generator)
        out.append(values[index])
    return out


def percentile_interval(samples: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    tail = (1 - level) / 2
    q = torch.quantile(samples.double(), torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return (float(q[0]), float(q[1]))


def iqm_interval(
    tasks: Sequence[torch.Tensor], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95 % stratified-bootstrap interval of the IQM of all tasks' scores pooled."""
    generator = torch.Generator().manual_seed(seed)
    pooled = torch.cat(stratified_resample(tasks, resamples, generator), dim=1)
    return percentile_interval(iqm(pooled))


def _beats(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 where x > y, ½ where equal, 0 where lower."""
    return (x > y).double() + 0.5 * (x == y).double()


def probability_of_improvement(
    x: Sequence[torch.Tensor], y: Sequence[torch.Tensor], paired: bool = True
) -> float:
    """P(X > Y) averaged over tasks, ties ½; x[t], y[t]: task t's scores over seeds.

    Paired: seed s of x against seed s of y only (same data, split and initial weights).
    Unpaired (rliable, Mann–Whitney): every seed of x against every seed of y.
    """
    per_task = []
    for xt, yt in zip(x, y):
        if paired:
            per_task.append(_beats(xt, yt).mean())
        else:
            per_task.append(_beats(xt[:, None], yt[None, :]).mean())
    return float(torch.stack(per_task).mean())


def paired_poi_interval(
    x: Sequence[torch.Tensor], y: Sequence[torch.Tensor], resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:  # fmt: skip
    """95 % interval of the paired probability of improvement: seed indices resampled within
    each task, jointly for x and y."""
    generator = torch.Generator().manual_seed(seed)
    joint = [torch.stack([xt, yt], dim=1) for xt, yt in zip(x, y)]  # (n_t, 2)
    per_task = [_beats(d[..., 0], d[..., 1]).mean(1) for d in
                stratified_resample(joint, resamples, generator)]  # fmt: skip
    return percentile_interval(torch.stack(per_task).mean(0))


def performance_profile(scores: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
    """Share of the scores (n,) above each threshold τ (T,) → (T,)."""
    return (scores[None, :] > taus[:, None]).double().mean(1)


# --------------------------------------------------------------------------------------
# Ranks over tasks (Demšar 2006)


def average_ranks(table: torch.Tensor) -> torch.Tensor:
    """table (N tasks, k methods), higher = better → each method's mean rank (1 = best), tied
    values sharing their average rank."""
    n, k = table.shape
    ranks = torch.empty(n, k, dtype=torch.float64)
    for i, row in enumerate(table.tolist()):
        order = sorted(range(k), key=lambda j: -row[j])
        position = 0
        while position < k:
            end = position
            while end + 1 < k and row[order[end + 1]] == row[order[position]]:
                end += 1
            for j in order[position : end + 1]:
                ranks[i, j] = (position + end) / 2 + 1
            position = end + 1
    return ranks.mean(0)


def friedman(table: torch.Tensor) -> tuple[float, float]:
    """Friedman's χ² over table (N tasks, k methods) with the tie correction, and its p-value
    from the χ² distribution with k − 1 degrees of freedom (as scipy.stats.friedmanchisquare)."""
    n, k = table.shape
    ranks = torch.stack([average_ranks(row[None]) for row in table])  # (N, k)
    chi2 = 12 * n / (k * (k + 1)) * float(((ranks.mean(0) - (k + 1) / 2) ** 2).sum())
    ties = 0.0
    for row in table.tolist():
        for value in set(row):
            t = row.count(value)
            ties += t**3 - t
    correction = 1 - ties / (n * (k**3 - k))
    if correction <= 0:  # every task ties every method: nothing to tell apart
        return (0.0, 1.0)
    chi2 /= correction
    half = torch.tensor([(k - 1) / 2, chi2 / 2], dtype=torch.float64)
    p = torch.special.gammaincc(half[0], half[1])  # the χ² survival function
    return (chi2, float(p))


def nemenyi_cd(k: int, n: int) -> float | None:
    """Nemenyi's critical difference of average ranks at α = 0.05 for k methods on n tasks;
    None beyond the table (k > 10)."""
    if not 2 <= k <= len(NEMENYI_Q) + 1:
        return None
    return NEMENYI_Q[k - 2] * math.sqrt(k * (k + 1) / (6 * n))


# --------------------------------------------------------------------------------------
# Bayesian signed-rank test (Benavoli et al. 2014; the sampler of baycomp.SignedRankTest)


def bayesian_signed_rank(
    differences: Sequence[float], rope: float, samples: int = POSTERIOR_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:  # fmt: skip
    """Posterior probabilities that the difference lies below the ROPE, in it, or above it.

    The Dirichlet process over the n differences plus a pseudo-observation at 0 (weight
    PRIOR_STRENGTH): each posterior sample weighs the pairs (i, j) by w_i w_j and puts the
    mass of pairs with z_i + z_j < −2·rope below, > 2·rope above (ties ½ each way), the rest
    in the ROPE. Reported, as baycomp does: the share of samples in which each region has the
    largest mass. Dirichlet(a) = normalised Gamma(a_i) draws: Gamma(1) = −log U and
    Gamma(½) = Z² / 2, both from one seeded generator.
    """
    z = torch.tensor([0.0, *differences], dtype=torch.float64)
    sums = z[:, None] + z[None, :]
    above = _beats(sums, torch.full_like(sums, 2 * rope))
    below = _beats(-sums, torch.full_like(sums, 2 * rope))
    generator = torch.Generator().manual_seed(seed)
    counts = torch.zeros(3, dtype=torch.float64)
    for start in range(0, samples, 10_000):  # chunks: memory stays small for many tasks
        m = min(10_000, samples - start)
        data = -torch.log(torch.rand(m, len(z) - 1, generator=generator, dtype=torch.float64))
        prior = torch.randn(m, 1, generator=generator, dtype=torch.float64) ** 2 / 2
        w = torch.cat([prior * (PRIOR_STRENGTH / 0.5), data], dim=1)
        w = w / w.sum(1, keepdim=True)
        p_below = ((w @ below) * w).sum(1)
        p_above = ((w @ above) * w).sum(1)
        masses = torch.stack([p_below, 1 - p_below - p_above, p_above], dim=1)
        counts += torch.bincount(masses.argmax(1), minlength=3).double()
    probs = counts / samples
    return (float(probs[0]), float(probs[1]), float(probs[2]))


def bayesian_verdict(p_worse: float, p_equivalent: float, p_better: float) -> str:
    if p_better >= DECISION:
        return "better"
    if p_worse >= DECISION:
        return "worse"
    if p_equivalent >= DECISION:
        return "practically equivalent"
    return "undecided"


# --------------------------------------------------------------------------------------
# The report's cross-task comparison


@dataclass
class Across:
    """One regularizer on one metric over the tasks, against the baseline."""

    column: Column
    regularizer: str
    baseline: str
    tasks: list[str]
    n_runs: int
    iqm: float
    iqm_ci: tuple[float, float]
    average_rank: float
    poi: float | None = None  # paired probability of improvement over the baseline
    poi_ci: tuple[float, float] | None = None
    n_pairs: int = 0
    mean_difference: float | None = None  # mean over tasks of the per-task mean difference
    rope: float | None = None
    posterior: tuple[float, float, float] | None = None  # worse, equivalent, better
    verdict: str = ""


@dataclass
class AcrossMetric:
    """Every regularizer on one metric across the tasks, with the Friedman test."""

    column: Column
    tasks: list[str]
    rows: list[Across]
    friedman_chi2: float
    friedman_p: float
    cd: float | None
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # regularizer → all scores

    @property
    def regularizers(self) -> list[str]:
        return [r.regularizer for r in self.rows]


def _n_classes(group: Group) -> int:
    data = group.runs[0].metrics.get("config", {}).get("data", {})
    return int(data.get("n_classes") or 2) if isinstance(data, dict) else 2


def across_tasks(
    groups: Sequence[Group], columns: Sequence[Column], baseline: str,
    ropes: Mapping[str, float] | None = None,
) -> list[AcrossMetric]:  # fmt: skip
    """The cross-task comparison of every metric with a chance level, over the facets of
    ``groups`` (at least two); only regularizers present on every task are compared."""
    ropes = {**DEFAULT_ROPE, **(ropes or {})}
    tasks = list(dict.fromkeys(g.facet for g in groups))
    if len(tasks) < 2 or any(g.x is not None for g in groups):
        return []
    cells = {(g.facet, g.regularizer): g for g in groups}
    regularizers = [r for r in dict.fromkeys(g.regularizer for g in groups)
                    if all((t, r) in cells for t in tasks)]  # fmt: skip
    if baseline not in regularizers or len(regularizers) < 2:
        return []
    out = []
    for column in columns:
        if column.better is None or chance(column, 2) is None:
            continue
        scores = _scores(column, tasks, regularizers, cells, baseline)
        if scores is not None:
            rope = ropes.get(column.name)
            out.append(_across_metric(column, tasks, regularizers, baseline, scores, cells, rope))
    return out


def _scores(
    column: Column, tasks: list[str], regularizers: list[str],
    cells: dict[tuple[str, str], Group], baseline: str,
) -> dict[tuple[str, str], dict[int, float]] | None:  # fmt: skip
    """(task, regularizer) → seed → normalised score; None when a cell has no value."""
    scores = {}
    for t in tasks:
        values = {r: cells[t, r].values(column) for r in regularizers}
        if not all(values.values()):
            return None
        everything = [v for vals in values.values() for v in vals.values()]
        best = max(everything) if column.better == "max" else min(everything)
        level = chance(column, _n_classes(cells[t, baseline]))
        for r in regularizers:
            seeds = sorted(values[r])
            raw = torch.tensor([values[r][s] for s in seeds], dtype=torch.float64)
            scores[t, r] = dict(zip(seeds, normalise(raw, level, best).tolist()))
    return scores


def _across_metric(
    column: Column, tasks: list[str], regularizers: list[str], baseline: str,
    scores: dict[tuple[str, str], dict[int, float]], cells: dict[tuple[str, str], Group],
    rope: float | None,
) -> AcrossMetric:  # fmt: skip
    # Ranks and wins need only the order of the raw values: higher-is-better signed values.
    sign = 1.0 if column.better == "max" else -1.0
    raw = {(t, r): cells[t, r].values(column) for t in tasks for r in regularizers}
    means = torch.tensor(
        [[sign * sum(raw[t, r].values()) / len(raw[t, r]) for r in regularizers] for t in tasks],
        dtype=torch.float64,
    )
    ranks = average_ranks(means)
    chi2, p = friedman(means)
    rows = []
    pooled = {}
    for j, r in enumerate(regularizers):
        per_task = [torch.tensor(list(scores[t, r].values()), dtype=torch.float64) for t in tasks]
        pooled[r] = torch.cat(per_task)
        row = Across(column, r, baseline, tasks, len(pooled[r]), float(iqm(pooled[r])),
                     iqm_interval(per_task), float(ranks[j]))  # fmt: skip
        if r != baseline:
            _against_baseline(row, tasks, raw, r, baseline, sign, rope)
        rows.append(row)
    cd = nemenyi_cd(len(regularizers), len(tasks))
    return AcrossMetric(column, tasks, rows, chi2, p, cd, pooled)


def _against_baseline(
    row: Across, tasks: list[str], raw: dict[tuple[str, str], dict[int, float]], r: str,
    baseline: str, sign: float, rope: float | None,
) -> None:  # fmt: skip
    """Fill in the paired probability of improvement and the Bayesian verdict."""
    x, y, task_differences = [], [], []
    for t in tasks:
        common = sorted(set(raw[t, r]) & set(raw[t, baseline]))
        if not common:
            return
        x.append(torch.tensor([sign * raw[t, r][s] for s in common], dtype=torch.float64))
        y.append(torch.tensor([sign * raw[t, baseline][s] for s in common], dtype=torch.float64))
        # The ROPE is in the metric's units: the per-seed differences, mean per task.
        task_differences.append(sum(raw[t, r][s] - raw[t, baseline][s] for s in common)
                                / len(common))  # fmt: skip
    row.n_pairs = sum(len(xt) for xt in x)
    row.poi = probability_of_improvement(x, y)
    row.poi_ci = paired_poi_interval(x, y)
    row.mean_difference = sum(task_differences) / len(task_differences)
    if rope is None:
        return
    below, equivalent, above = bayesian_signed_rank(task_differences, rope)
    worse, better = (below, above) if sign > 0 else (above, below)
    row.rope = rope
    row.posterior = (worse, equivalent, better)
    row.verdict = bayesian_verdict(*row.posterior)
