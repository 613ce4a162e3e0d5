"""The verdict paragraph: what the paired comparisons say, in words, and nothing else.

Every sentence is generated from a Comparison: a difference is called a raise or a drop only
when it is significant after Holm's correction; everything else is named "not significant".
"""

from __future__ import annotations

from collections.abc import Sequence

from spiralmix.report.stats import ALPHA, Comparison, min_pairs_for, smallest_p
from spiralmix.report.tables import p_text

WORDS = {
    "test_acc": "test accuracy",
    "test_loss": "test loss",
    "test_ece": "calibration error (ECE)",
    "test_brier": "Brier score",
    "uncertain_fraction": "uncertain area",
}


def metric_words(name: str) -> str:
    """'n_sig_layer2' → 'count of significant directions at hidden layer 2'."""
    if name.startswith("n_sig_layer"):
        return f"count of significant directions at hidden layer {name[11:]}"
    if name.startswith("erank_layer"):
        return f"effective rank at hidden layer {name[11:]}"
    return WORDS.get(name, name)


def _finding(c: Comparison, against: str = "") -> str:
    """'lowers the test loss[ against none] by 0.120 [0.050, 0.200] (p = 0.004)'."""
    verb = "raises" if c.mean > 0 else "lowers"
    d = c.column.digits
    return (
        f"{verb} the {metric_words(c.column.name)}{against} by {abs(c.mean):.{d}f} "
        f"[{abs(c.ci[0]) if c.mean > 0 else abs(c.ci[1]):.{d}f}, "
        f"{abs(c.ci[1]) if c.mean > 0 else abs(c.ci[0]):.{d}f}] (p = {p_text(c.p_holm)})"
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


def verdict(comparisons: Sequence[Comparison], baseline: str, axis: str | None = None) -> str:
    """One paragraph (Markdown) from the paired comparisons, grouped by facet and axis value."""
    if not comparisons:
        return (
            f"No paired comparison: the sweep has no completed {baseline} run sharing a seed "
            "with another regularizer."
        )
    sentences = []
    cells: dict[tuple, list[Comparison]] = {}
    for c in comparisons:
        cells.setdefault((c.group.facet, c.group.x), []).append(c)
    n_max = max(c.n for c in comparisons)
    family = max(len({c.group.name for c in family}) for family in cells.values())
    warning = too_few_seeds(n_max, family)
    if warning:
        sentences.append(warning)
    quiet = []  # (where, n): the cells where nothing is significant, said once
    for (facet, x), family in cells.items():
        where = [facet] if facet else []
        where += [f"{axis}={family[0].group.runs[0].settings.get(axis)}"] if x is not None else []
        prefix = f"At {', '.join(where)}, " if where else ""
        regularizers = list(dict.fromkeys(c.group.name for c in family))
        if not any(c.significant for c in family):
            quiet.append((where, max(c.n for c in family)))
            continue
        parts = []
        for name in regularizers:
            mine = [c for c in family if c.group.name == name]
            n = max(c.n for c in mine)
            significant = [c for c in mine if c.significant]
            found = [_finding(c, f" against {baseline}" if i == 0 else "")
                     for i, c in enumerate(significant)]  # fmt: skip
            rest = [metric_words(c.column.name) for c in mine
                    if not c.significant and "layer" not in c.column.name]  # fmt: skip
            flat = [c for c in mine if "layer" in c.column.name]
            quiet_flat = sum(not c.significant for c in flat)
            if quiet_flat:  # counted, not listed: there are two per hidden layer
                rest.append(f"{quiet_flat} of its {len(flat)} flattening measures")
            label = f"`{mine[0].group.regularizer}`"
            if found:
                text = f"{label} {_join(found)} over {n} seeds"
                if rest:
                    text += f"; its differences in {_join(rest)} are not significant"
            else:
                text = f"{label} differs significantly from {baseline} on no metric ({n} seeds)"
            parts.append(text)
        sentences.append(prefix + "; ".join(parts) + ".")
    if quiet:
        n = max(n for _, n in quiet)
        places = [", ".join(where) for where, _ in quiet if where]
        at = f" at {_join(places)}" if places and len(quiet) < len(cells) else ""
        at = " at any of the swept values" if places and len(quiet) == len(cells) else at
        sentences.append(
            f"No regularizer differs significantly from {baseline} on any metric{at} "
            f"(up to {n} paired seeds)."
        )
    sentences.append(
        "Intervals: 95 % bootstrap of the mean paired difference; p: two-sided Wilcoxon "
        "signed-rank, Holm-corrected per metric."
    )
    return " ".join(sentences)
