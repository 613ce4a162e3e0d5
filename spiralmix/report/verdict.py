"""The verdict: what the paired comparisons say, in words, as a short list, and nothing else.

Every sentence is generated from a Comparison: a difference is called a raise or a drop only
when it is significant after Holm's correction; everything else is named "not significant".
"""

from __future__ import annotations

from collections.abc import Sequence

from spiralmix.report.across import Across, AcrossMetric
from spiralmix.report.stats import ALPHA, Comparison, min_pairs_for, smallest_p
from spiralmix.report.tables import p_text

WORDS = {
    "test_acc": "test accuracy",
    "test_loss": "test loss",
    "test_ece": "calibration error (ECE)",
    "test_brier": "Brier score",
    "uncertain_fraction": "uncertain area",
    "calibration_ece": "ECE over [0, 1]",
    "calibration_ece_adaptive": "adaptive ECE",
    "calibration_mce": "maximum calibration error",
    "calibration_confidence_gap": "confidence − accuracy",
    "selective_aurc": "AURC",
    "ood_auroc_confidence": "far-ring AUROC",
    "temperature_T": "temperature T",
    "temperature_ece": "ECE after temperature scaling",
    "temperature_nll": "NLL after temperature scaling",
    "temperature_truth_calibration_error": "true calibration error after temperature scaling",
    "truth_calibration_error": "true calibration error",
    "truth_calibration_error_grid": "true calibration error on the grid",
    "truth_excess_risk": "excess risk",
}


# The newer metrics get a line of their own per topic under the regularizer's line, by the
# prefix of their name; a sentence over every metric at once would be too long to read.
TOPICS = {
    "calibration_": "calibration as the literature computes it",
    "selective_": "calibration as the literature computes it",
    "ood_": "calibration as the literature computes it",
    "temperature_": "after temperature scaling",
    "truth_": "against the true posterior",
}


def topic(name: str) -> str:
    """The topic of a metric's sub-line, "" for the metrics of the main line."""
    return next((t for prefix, t in TOPICS.items() if name.startswith(prefix)), "")


def _topic_lines(family: Sequence[Comparison], baseline: str) -> list[str]:
    """'against the true posterior: lowers the true calibration error against none by …
    (better, p = 0.0098); not significant: excess risk', a line per topic with a finding."""
    out = []
    for name in dict.fromkeys(topic(c.column.name) for c in family if topic(c.column.name)):
        mine = [c for c in family if topic(c.column.name) == name]
        found = [_finding(c, f" against {baseline}" if i == 0 else "")
                 for i, c in enumerate(c for c in mine if c.significant)]  # fmt: skip
        rest = [metric_words(c.column.name) for c in mine if not c.significant]
        if not found:
            continue
        out.append(f"{name}: {_join(found)}"
                   + (f"; not significant: {_join(rest)}" if rest else ""))  # fmt: skip
    return out


def metric_words(name: str) -> str:
    """'n_sig_layer2' → 'count of significant directions at hidden layer 2'."""
    if name.startswith("n_sig_layer"):
        return f"count of significant directions at hidden layer {name[11:]}"
    if name.startswith("erank_layer"):
        return f"effective rank at hidden layer {name[11:]}"
    return WORDS.get(name, name)


def _finding(c: Comparison, against: str = "") -> str:
    """'lowers the test loss[ against none] by 0.120 [0.050, 0.200] (better, p = 0.004)'."""
    verb = "raises" if c.mean > 0 else "lowers"
    d = c.column.digits
    if c.column.median:  # its mean is set by the runs at the bound: the medians say more
        before, after = c.baseline.stats[c.column.name], c.group.stats[c.column.name]
        return (
            f"{verb} the {metric_words(c.column.name)}{against} (median "
            f"{before.median:.{d}f} → {after.median:.{d}f}, p = {p_text(c.p_holm)})"
        )
    direction = "" if c.column.better is None else (
        "better, " if (c.mean > 0) == (c.column.better == "max") else "worse, ")  # fmt: skip
    return (
        f"{verb} the {metric_words(c.column.name)}{against} by {abs(c.mean):.{d}f} "
        f"[{abs(c.ci[0]) if c.mean > 0 else abs(c.ci[1]):.{d}f}, "
        f"{abs(c.ci[1]) if c.mean > 0 else abs(c.ci[0]):.{d}f}] "
        f"({direction}p = {p_text(c.p_holm)})"
    )


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def too_few_seeds(n: int, comparisons: int = 1) -> str | None:
    """The warning for n paired seeds and ``comparisons`` regularizers compared per metric
    (Holm's family), None when a difference can reach significance."""
    needed = min_pairs_for(ALPHA, comparisons)
    if n >= needed:
        return None
    holm_text = (
        f", Holm-corrected over {comparisons} comparisons per metric," if comparisons > 1 else ""
    )
    return (
        f"With {n} paired seed{'s' if n != 1 else ''} no difference can be significant: the "
        f"smallest two-sided exact Wilcoxon p-value{holm_text} is "
        f"{smallest_p(n, comparisons):.3g} ≥ {ALPHA:g} (it takes at least {needed} seeds), "
        "so read the numbers as descriptive."
    )


def _cell_name(c: Comparison, axis: str | None) -> str:
    """Where a comparison was made: 'data=moons', 'mixup.alpha=0.5', or '' for the sweep."""
    where = [c.group.facet] if c.group.facet else []
    if c.group.x is not None and axis is not None:
        where.append(f"{axis}={c.group.runs[0].settings.get(axis)}")
    return ", ".join(where)


def _regularizer_line(
    family: Sequence[Comparison], baseline: str, prefix: str, with_name: bool
) -> str | None:
    """'`mixup` lowers the test loss against none by … (better) over 10 seeds; its
    differences in … are not significant'; None when nothing about it is significant."""
    significant = [c for c in family if c.significant]
    if not significant:
        return None
    n = max(c.n for c in family)
    found = [_finding(c, f" against {baseline}" if i == 0 else "")
             for i, c in enumerate(significant)]  # fmt: skip
    rest = [metric_words(c.column.name) for c in family
            if not c.significant and "layer" not in c.column.name]  # fmt: skip
    flat = [c for c in family if "layer" in c.column.name]
    quiet_flat = sum(not c.significant for c in flat)
    if quiet_flat:  # counted, not listed: there are two per hidden layer
        rest.append(f"{quiet_flat} of its {len(flat)} flattening measures")
    label = f"`{family[0].group.regularizer}` " if with_name else ""
    text = f"{prefix}{label}{_join(found)} over {n} seeds"
    if rest:
        text += f"; its differences in {_join(rest)} are not significant"
    return text


def _across_line(rows: Sequence[Across]) -> str:
    """'across 6 data sets: test accuracy undecided, test loss better (P = 0.99)'."""
    parts = []
    for r in rows:
        if r.posterior is None:
            continue
        worse, equivalent, better = r.posterior
        p = {"better": better, "worse": worse, "practically equivalent": equivalent}
        certainty = f" (P = {p[r.verdict]:.2f})" if r.verdict in p else ""
        parts.append(f"{metric_words(r.column.name)} **{r.verdict}**{certainty}")
    if not parts:
        return ""
    return f"across {len(rows[0].tasks)} data sets: " + ", ".join(parts)


def _facet_findings(family: Sequence[Comparison], baseline: str) -> list[str]:
    """'better than none: test loss on spirals (−2.67), moons (−0.36); worse: test accuracy on
    spirals3 (−0.131)': the significant differences in a direction, by metric."""
    out = []
    for word in ("better", "worse"):
        by_metric: dict[str, list[str]] = {}
        for c in family:
            if (
                c.significant
                and c.column.better is not None
                and ((c.mean > 0) == (c.column.better == "max")) == (word == "better")
            ):
                value = f"{c.mean:+.{c.column.digits}f}".replace("-", "−")
                by_metric.setdefault(metric_words(c.column.name), []).append(
                    f"{c.group.facet.split('=', 1)[-1]} ({value})"
                )
        if by_metric:
            found = "; ".join(f"{m} on {_join(w)}" for m, w in by_metric.items())
            out.append(f"{word} than {baseline}: {found}")
    return out


def verdict(
    comparisons: Sequence[Comparison], baseline: str, axis: str | None = None,
    across: Sequence[AcrossMetric] = (),
) -> str:  # fmt: skip
    """The verdict as a short Markdown list: a line per regularizer (its verdict across data
    sets, then what is significant where), or, for a sweep with an axis, a line per value."""
    if not comparisons:
        return (
            f"No paired comparison: the sweep has no completed {baseline} run sharing a seed "
            "with another regularizer."
        )
    lines = []
    cells: dict[tuple, list[Comparison]] = {}
    for c in comparisons:
        cells.setdefault((c.group.facet, c.group.x), []).append(c)
    n_max = max(c.n for c in comparisons)
    family = max(len({c.group.name for c in family}) for family in cells.values())
    warning = too_few_seeds(n_max, family)
    if warning:
        lines.append(warning)
    quiet = [(_cell_name(f[0], axis), max(c.n for c in f)) for f in cells.values()
             if not any(c.significant for c in f)]  # fmt: skip
    if axis is not None:  # a summary per swept value
        for family in cells.values():
            where = _cell_name(family[0], axis)
            found = []
            subs = []
            for name in dict.fromkeys(c.group.name for c in family):
                mine = [c for c in family if c.group.name == name]
                found.append(_regularizer_line(
                    [c for c in mine if not topic(c.column.name)], baseline, "", True))  # fmt: skip
                label = f"`{mine[0].group.regularizer}`, "
                subs += [label + t for t in _topic_lines(mine, baseline)]
            found = [f for f in found if f]
            if found or subs:
                main = "; ".join(found) if found else "no significant difference in the above"
                lines.append(f"- At {where}, {main}.")
                lines += [f"  - {sub}" for sub in subs]
    elif len(cells) == 1:  # one comparison per regularizer: the full sentence
        for name in dict.fromkeys(c.group.name for c in comparisons):
            mine = [c for c in comparisons if c.group.name == name]
            line = _regularizer_line([c for c in mine if not topic(c.column.name)], baseline,
                                     "", True)  # fmt: skip
            subs = _topic_lines(mine, baseline)
            if line or subs:
                regularizer = mine[0].group.regularizer
                lines.append(f"- {line or f'`{regularizer}`: no other significant difference'}.")
                lines += [f"  - {sub}" for sub in subs]
    else:  # data sets (facets): a line per regularizer, significant differences by metric
        rows: dict[str, list[Across]] = {}
        for m in across:
            for r in m.rows:
                rows.setdefault(r.regularizer, []).append(r)
        for name in dict.fromkeys(c.group.regularizer for c in comparisons):
            mine = [c for c in comparisons if c.group.regularizer == name]
            parts = [_across_line(rows.get(name, [])), *_facet_findings(mine, baseline)]
            parts = [p for p in parts if p]
            if not parts:
                parts = [f"no significant difference from {baseline}"]
            lines.append(f"- **`{name}`**")
            lines += [f"  - {part}" for part in parts]
    if quiet:
        n = max(n for _, n in quiet)
        places = [where for where, _ in quiet if where]
        at = f" at {_join(places)}" if places and len(quiet) < len(cells) else ""
        at = " at any of the swept values" if places and len(quiet) == len(cells) else at
        lines.append(
            f"- No regularizer differs significantly from {baseline} on any metric{at} "
            f"(up to {n} paired seeds)."
        )
    lines.append(
        "\nIntervals: 95 % bootstrap of the mean paired difference; p: two-sided Wilcoxon "
        "signed-rank, Holm-corrected per metric"
        + (
            "; across data sets: Bayesian signed-rank test of the per-data-set mean "
            "differences with a region of practical equivalence (ROPE), a verdict at P ≥ 0.95."
            if across
            else "."
        )
    )
    return "\n".join(lines)
