"""The report on the calibration metrics of the literature, temperature scaling and the true
posterior: hand-made sweeps whose statistics are worked out by hand, and older sweeps without
these metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spiralmix.report import collect, write_report
from spiralmix.report.figures import boundaries_figure
from spiralmix.report.stats import TRUTH_COLUMNS, summarize
from tests.test_report import read_csv, write_job, write_run

SEEDS = range(1, 8)  # 7 seeds: two comparisons reach Holm p = 2 · 2/2⁷ = 0.03125


def newer_metrics(regularizer: str, seed: int) -> dict[str, float]:
    """By regularizer: the distance to the truth orders mixup < dropout < none, the binned ECE
    dropout < mixup < none; none's T sits at its bound for seed 1; dropout ran without
    temperature scaling; mixup's seed 7 has no temperature metrics."""
    truth = {"none": 0.30 + seed / 100, "mixup": 0.20, "dropout": 0.25}[regularizer]
    out = {
        "calibration/ece": {"none": 0.20, "mixup": 0.10, "dropout": 0.05}[regularizer],
        "truth/calibration_error": truth,
        "truth/excess_risk": 0.1,
        "truth/bayes_acc": 0.78,
    }
    if regularizer == "none":
        out |= {"temperature/T": 1e4 if seed == 1 else float(seed), "temperature/ece": 0.06}
    if regularizer == "mixup" and seed != 7:
        out |= {"temperature/T": 2.0, "temperature/ece": 0.05}
    return out


def write_sweep(sweep: Path, newer: bool = True, truth_maps: bool = False) -> None:
    """One job per (regularizer, seed) with metrics.json; boundary.pt with grid_truth when
    truth_maps (the true posterior: p = 0.5 everywhere)."""
    for regularizer in ("none", "dropout", "mixup"):
        for seed in SEEDS:
            overrides = [f"regularizer={regularizer}", f"seed={seed}"]
            job = sweep / ",".join(overrides)
            write_job(job, regularizer, overrides, seed=seed)
            write_run(job, regularizer, seed, 0.8, 1.0, boundary=truth_maps)
            path = job / "metrics.json"
            metrics = json.loads(path.read_text())
            if newer:
                metrics["final"] |= newer_metrics(regularizer, seed)
            path.write_text(json.dumps(metrics))
            if truth_maps:
                boundary = torch.load(job / "boundary.pt", weights_only=True)
                boundary["grid_truth"] = torch.full((len(boundary["grid"]),), 0.5)
                torch.save(boundary, job / "boundary.pt")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("calibration")
    write_sweep(sweep)
    write_report(sweep)
    return sweep


def test_truth_is_paired_with_holm_and_stated_in_the_verdict(sweep):
    paired = {(r["regularizer"], r["metric"]): r for r in read_csv(sweep / "report_paired.csv")}
    truth = paired["mixup", "truth_calibration_error"]
    # 0.20 − (0.30 + s/100) over s = 1..7: mean −0.14, all 7 negative: p = 2/2⁷, Holm × 2.
    assert float(truth["mean_difference"]) == pytest.approx(-0.14)
    assert float(truth["p"]) == pytest.approx(2 / 128)
    assert float(truth["p_holm"]) == pytest.approx(2 * 2 / 128) and truth["significant"] == "1"
    assert ("mixup", "truth_bayes_acc") not in paired  # a reference, the same for all
    # Left out of the pairs where a run lacks the metric: mixup seed 7, dropout entirely.
    assert paired["mixup", "temperature_T"]["n_pairs"] == "6"
    assert ("dropout", "temperature_T") not in paired
    md = (sweep / "report.md").read_text()
    assert "against the true posterior: lowers the true calibration error against none by " in md
    assert "(better, p = 0.031)" in md


def test_temperature_median_and_missing_cells(sweep):
    rows = {r["regularizer"]: r for r in read_csv(sweep / "report.csv")}
    # none's T: 2, 3, 4, 5, 6, 7 and 10⁴ → median 5, mean (27 + 10⁴)/7.
    assert float(rows["none"]["temperature_T_median"]) == 5.0
    assert float(rows["none"]["temperature_T_mean"]) == pytest.approx((1e4 + 27) / 7)
    assert rows["dropout"]["temperature_T_mean"] == ""
    assert "temperature_T_best" not in rows["none"]  # no better direction
    assert rows["dropout"]["truth_calibration_error_best"] == "0"
    assert rows["mixup"]["truth_calibration_error_best"] == "1"  # lower is better
    md = (sweep / "report.md").read_text()
    assert "median 5.00" in md
    section = md.split("## Temperature scaling")[1].split("##")[0]
    dropout_row = next(line for line in section.splitlines() if line.startswith("| dropout"))
    assert dropout_row.count("| – ") == 2  # T and ECE after T


def test_regularizers_ranked_by_distance_to_the_truth(sweep):
    md = (sweep / "report.md").read_text()
    table = md.split("## Distance to the truth")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")][1:]
    # regularizer, rank, distance, against none, after T (absent: no run has it), ECE rank
    assert [r[0].strip("| ") for r in rows] == ["mixup", "dropout", "none"]
    assert [r[1] for r in rows] == ["1", "2", "3"]
    assert [r[-1].strip(" |") for r in rows] == ["2", "1", "3"]  # the bins disagree at the top
    assert rows[2][3] == "(baseline)"
    assert rows[0][3].startswith("**−0.140 [") and "p=0.031" in rows[0][3]
    header = next(line for line in table.splitlines() if line.startswith("| regularizer"))
    assert "after T" not in header  # no run has the scaled distance


def test_older_runs_without_the_newer_metrics(tmp_path):
    write_sweep(tmp_path, newer=False)
    report = write_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    for title in ("Distance to the truth", "Temperature scaling", "The true posterior",
                  "Paired differences against none: the true posterior"):  # fmt: skip
        assert title not in md
    header = (tmp_path / "report.csv").read_text().splitlines()[0]
    assert "truth_" not in header and "temperature_" not in header and "test_ece_mean" in header
    assert {c.column.name for c in report.comparisons} >= {"test_acc", "test_ece"}


def _rows_of(fig) -> list[str]:
    """The row labels of boundaries.png's first column."""
    labels = [ax.get_ylabel() for ax in fig.axes]
    return [label for label in labels if label and not label.startswith("p(class 1)")]


def test_bayes_map_leads_the_learned_maps_where_saved(tmp_path):
    write_sweep(tmp_path / "with", truth_maps=True)
    runs, problems, _ = collect(tmp_path / "with")
    groups = summarize(runs, TRUTH_COLUMNS)
    fig = boundaries_figure(groups, problems)
    assert _rows_of(fig) == ["true posterior", "none", "dropout", "mixup"]
    titles = [ax.get_title() for ax in fig.axes[:7]]
    assert titles[0] == "seed 1 · Bayes acc 0.780"
    # The Bayes map in the learned maps' colours: the same colour map over the same [0, 1].
    truth, learned = fig.axes[0].collections[0], fig.axes[7].collections[0]
    assert truth.get_cmap().name == learned.get_cmap().name
    assert truth.get_clim() == learned.get_clim() == (0, 1)
    # Runs whose boundary.pt lacks grid_truth: no Bayes row, no error.
    for run in runs:
        del run.boundary["grid_truth"]
    assert _rows_of(boundaries_figure(groups, problems)) == ["none", "dropout", "mixup"]


def test_boundary_file_holds_the_members_own_true_posterior(tmp_path, tiny_config):
    """grid_truth in boundary.pt: a member's own p* on its own grid, equal to its run alone
    and no larger (a copy, not a view of every member's); absent without noise."""
    from spiralmix.train import train

    train(tiny_config("seeds=[7,8]", "data.noise=0.2"), tmp_path / "e")
    train(tiny_config("seed=8", "data.noise=0.2"), tmp_path / "s")
    train(tiny_config("seed=8", "data.noise=0.0"), tmp_path / "clean")
    member = torch.load(tmp_path / "e" / "seed=8" / "boundary.pt", weights_only=True)
    alone = torch.load(tmp_path / "s" / "boundary.pt", weights_only=True)
    assert member["grid_truth"].shape == member["grid_p"].shape == (30 * 30,)
    assert torch.equal(member["grid_truth"], alone["grid_truth"])
    assert member["grid_truth"].untyped_storage().nbytes() == 30 * 30 * 4
    assert 0 <= float(member["grid_truth"].min()) < 0.5 < float(member["grid_truth"].max()) <= 1
    clean = torch.load(tmp_path / "clean" / "boundary.pt", weights_only=True)
    assert "grid_truth" not in clean
