"""The sweep report on hand-made sweep directories: exact statistics, listings, figures, CLI."""

from __future__ import annotations

import base64
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from spiralmix.metrics import effective_rank
from spiralmix.report import ReportOnMultirunEnd, collect, write_report
from spiralmix.report.__main__ import main
from spiralmix.report.figures import axis_figure

FIGURES = ("boundaries.png", "curves.png", "calibration.png", "flattening.png")
COMPARE_FIGURES = ("paired.png", *FIGURES)


def write_job(job_dir: Path, regularizer: str, overrides: list[str], **config) -> None:
    """A Hydra job directory: .hydra/config.yaml and .hydra/overrides.yaml."""
    hydra_dir = job_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    base = {"seed": 123, "seeds": None, "regularizer_name": regularizer}
    base["evaluation"] = {"ece_bins": 15, "flatten_fraction": 0.1}
    OmegaConf.save(OmegaConf.create({**base, **config}), hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")


def write_run(
    run_dir: Path,
    regularizer: str,
    seed: int,
    acc: float,
    loss: float,
    steps: int = 1000,
    status: str = "completed",
    optional: bool = True,
    boundary: bool = True,
    **extra,
) -> None:
    """metrics.json (and boundary.pt) as train.py writes them, with chosen test acc and loss."""
    run_dir.mkdir(parents=True, exist_ok=True)
    final = {
        "test/loss": loss,
        "test/acc": acc,
        "test/nll": loss,
        "test/brier": loss / 10,
        "test/ece": loss / 20,
        "train_clean/loss": 0.01,
        "train_clean/acc": 1.0,
    }
    if optional:
        final |= {
            "boundary/uncertain_fraction": 0.2,
            "ood/confidence": 0.9,
            "flatten/layer0/n_significant": 2.0,
            "flatten/layer1/n_significant": float(seed),
        }
    history = [
        {"step": s, **{k: v * (s + 1) / (steps + 1) for k, v in final.items()}}
        for s in range(0, steps + 1, steps // 2)
    ]
    metrics = {
        "status": status,
        "regularizer": regularizer,
        "seed": seed,
        "steps": steps,
        "wall_time_s": 1.0,
        "steps_per_s": float(steps),
        "members_in_process": 3,
        "final": final,
        "best": {"test/acc": acc, "test/acc_step": steps, "test/loss": loss, "test/loss_step": 0},
        "history": history,
    }
    metrics |= extra
    if status != "completed":
        metrics |= {"error": "training loss became non-finite at step 500", "failed_step": 500}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if boundary:
        g = torch.linspace(-2, 2, 10)
        grid = torch.cartesian_prod(g, g)  # (100, 2)
        gen = torch.Generator().manual_seed(seed)
        test_y = (torch.arange(60) % 2).float()
        torch.save(
            {
                "step": torch.tensor(steps),
                "grid": grid,
                "grid_p": torch.sigmoid(seed * grid[:, 0] - grid[:, 1]),
                "train_X": torch.randn(20, 2, generator=gen),
                "train_y": (torch.arange(20) % 2).float(),
                "val_X": torch.zeros(0, 2),
                "val_y": torch.zeros(0),
                "test_X": torch.randn(60, 2, generator=gen),
                "test_y": test_y,
                "test_p": (0.3 + 0.4 * test_y + 0.2 * torch.rand(60, generator=gen)).clamp(0, 1),
                "spectra": [
                    torch.tensor([[2.0, 1.0], [3.0, 1.0]]),
                    torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1, 0.05]).expand(2, 6) * seed,
                ],
            },
            run_dir / "boundary.pt",
        )


@pytest.fixture(scope="module")
def compare_sweep(tmp_path_factory) -> Path:
    """experiment=compare layout: one job per regularizer, its seeds in seed=<N>/ folders.

    none: acc 0.8, 0.9, 1.0 and loss 2, 3, 4. mixup: acc 0.6, 0.7, 0.8 and loss 0.5, 0.5,
    0.8, plus a failed seed 4 whose numbers must not count. dropout: seed 1 failed, seed 2
    never wrote metrics.json.
    """
    sweep = tmp_path_factory.mktemp("sweep")
    jobs = {
        "none": ([1, 2, 3], [0.8, 0.9, 1.0], [2.0, 3.0, 4.0]),
        "mixup": ([1, 2, 3], [0.6, 0.7, 0.8], [0.5, 0.5, 0.8]),
    }
    for regularizer, (seeds, accs, losses) in jobs.items():
        job = sweep / f"regularizer={regularizer}"
        write_job(
            job,
            regularizer,
            [f"regularizer={regularizer}", "experiment=compare"],
            seeds=[*seeds, 4],
        )
        for seed, acc, loss in zip(seeds, accs, losses):
            write_run(job / f"seed={seed}", regularizer, seed, acc, loss)
    # mixup seed 4 failed; none seed 4 never finished.
    write_run(sweep / "regularizer=mixup" / "seed=4", "mixup", 4, 0.0, 9.0, status="failed")
    overrides = ["regularizer=dropout", "experiment=compare"]
    write_job(sweep / "regularizer=dropout", "dropout", overrides, seeds=[1, 2])
    write_run(sweep / "regularizer=dropout" / "seed=1", "dropout", 1, 0.99, 0.1, status="failed")
    write_report(sweep)
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_summary_csv_has_exact_means_stds_and_canonical_order(compare_sweep):
    rows = read_csv(compare_sweep / "report.csv")
    assert [r["regularizer"] for r in rows] == ["none", "mixup"]  # canonical, not alphabetical
    none, mixup = rows
    assert none["n_seeds"] == mixup["n_seeds"] == "3"
    assert float(none["test_acc_mean"]) == pytest.approx(0.9)
    assert float(none["test_acc_std"]) == pytest.approx(0.1)
    assert (float(none["test_acc_min"]), float(none["test_acc_max"])) == (0.8, 1.0)
    assert float(none["test_loss_mean"]) == pytest.approx(3.0)
    assert float(none["test_loss_std"]) == pytest.approx(1.0)
    assert float(mixup["test_acc_mean"]) == pytest.approx(0.7)
    assert float(mixup["test_acc_std"]) == pytest.approx(0.1)
    # Losses 0.5, 0.5, 0.8: mean 0.6, squared deviations 0.01 + 0.01 + 0.04, ddof=1.
    assert float(mixup["test_loss_mean"]) == pytest.approx(0.6)
    assert float(mixup["test_loss_std"]) == pytest.approx((0.06 / 2) ** 0.5)
    assert float(mixup["n_sig_layer1_mean"]) == pytest.approx(2.0)
    assert none["steps_min"] == none["steps_max"] == "1000"


def test_best_column_is_flagged_by_direction(compare_sweep):
    none, mixup = read_csv(compare_sweep / "report.csv")
    assert (none["test_acc_best"], mixup["test_acc_best"]) == ("1", "0")  # highest
    assert (none["test_loss_best"], mixup["test_loss_best"]) == ("0", "1")  # lowest
    assert (none["test_ece_best"], mixup["test_ece_best"]) == ("0", "1")
    assert "uncertain_fraction_best" not in none  # descriptive: no best
    md = (compare_sweep / "report.md").read_text()
    assert "**0.900 ± 0.100** (0.800–1.000)" in md
    assert "**0.600 ± 0.173** (0.500–0.800)" in md
    assert "0.700 ± 0.100 (0.600–0.800)" in md  # mixup's accuracy: not bold


def test_per_seed_rows_list_completed_runs_only(compare_sweep):
    rows = read_csv(compare_sweep / "report_runs.csv")
    completed = [
        (r["regularizer"], r["seed"], r["test_acc"]) for r in rows if r["status"] == "completed"
    ]
    assert [(g, s, float(a)) for g, s, a in completed] == [
        ("none", "1", 0.8),
        ("none", "2", 0.9),
        ("none", "3", 1.0),
        ("mixup", "1", 0.6),
        ("mixup", "2", 0.7),
        ("mixup", "3", 0.8),
    ]
    md = (compare_sweep / "report.md").read_text()
    assert "| none | 2 | 1,000 | 0.900 | 3.000 |" in md


def test_failed_and_unfinished_runs_are_listed_not_averaged(compare_sweep):
    md = (compare_sweep / "report.md").read_text()
    failures = md.split("## Failed or unfinished runs")[1]
    assert "`regularizer=mixup/seed=4`" in failures
    assert "status 'failed': training loss became non-finite at step 500 |" in failures
    assert "`regularizer=dropout/seed=1`" in failures
    for name in ("regularizer=none/seed=4", "regularizer=dropout/seed=2"):
        assert f"| `{name}` |" in failures
        assert "no metrics.json (unfinished or crashed)" in failures
    statuses = {r["run"]: r["status"] for r in read_csv(compare_sweep / "report_runs.csv")}
    assert statuses["regularizer=mixup/seed=4"] == "failed"
    assert statuses["regularizer=dropout/seed=2"] == "unfinished"
    # dropout has no completed run: no summary row (its failed 0.99 counts nowhere).
    assert "dropout" not in [r["regularizer"] for r in read_csv(compare_sweep / "report.csv")]


@pytest.mark.parametrize("name", COMPARE_FIGURES)
def test_figures_are_nontrivial_images(compare_sweep, name):
    image = matplotlib.image.imread(compare_sweep / name)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    rgb = (image[..., :3] * 255).astype(np.int64)
    colors = np.unique(rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2])
    assert len(colors) > 20  # more than a blank canvas with a title


def test_plain_sweep_with_missing_optional_metrics_and_unstarted_job(tmp_path):
    """One seed per job dir; a job never started; older runs without the optional metrics."""
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n"
        "  sweeper:\n"
        "    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
        "    params: null\n"
        "  overrides:\n"
        "    task: ['regularizer=none,mixup', 'seed=1,2']\n"
    )
    runs = (("none", 1, 0.75, 1000), ("none", 2, 0.75, 500), ("mixup", 1, 0.7, 1000))
    for regularizer, seed, acc, steps in runs:
        job = tmp_path / f"regularizer={regularizer},seed={seed}"
        write_job(job, regularizer, [f"regularizer={regularizer}", f"seed={seed}"], seed=seed)
        write_run(job, regularizer, seed, acc, 0.5, steps, optional=False, boundary=seed == 1)

    report = write_report(tmp_path)

    assert [g.name for g in report.groups] == ["none", "mixup"]
    assert [(p.name, p.status) for p in report.problems] == [
        ("regularizer=mixup,seed=2", "never started")
    ]
    md = (tmp_path / "report.md").read_text()
    assert "Runs differ in length: 500 steps (1 run), 1,000 steps (2 runs)" in md
    assert "| none | 2 | **0.750 ± 0.000** (0.750–0.750) |" in md
    assert "| mixup | 1 | 0.700 ± – | 0.500 ± – |" in md  # one seed: no std; equal: no best
    assert "| none | 2 | 0.025 ± 0.000 (0.025–0.025) | 0.050 ± 0.000 (0.050–0.050) | – | – |" in md
    assert "No readable boundary.pt" in md and "regularizer=none,seed=2" in md
    row = read_csv(tmp_path / "report.csv")[1]
    assert row["test_acc_std"] == "" and row["ood_confidence_mean"] == ""
    for name in FIGURES:
        assert (tmp_path / name).is_file()


def test_cli_prints_summary_and_rejects_bad_arguments(compare_sweep, tmp_path, capsys):
    assert main([str(compare_sweep)]) == 0
    out = capsys.readouterr().out
    assert "0.900 ± 0.100 *" in out and "report.md" in out

    assert main([str(tmp_path)]) == 2  # exists, but holds no runs
    err = capsys.readouterr().err
    assert err.startswith("spiralmix.report: error: no runs in") and err.count("\n") == 1

    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_cli_on_missing_directory_fails_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "spiralmix.report", "/nonexistent/sweep"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "spiralmix.report: error: no such sweep directory: /nonexistent/sweep"
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_callback_writes_report_and_never_raises(tmp_path, caplog):
    sweep = tmp_path / "sweep"  # a job that has not finished: tables only, quick
    write_job(sweep / "regularizer=none", "none", ["regularizer=none"], seeds=[1])
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    ReportOnMultirunEnd().on_multirun_end(config)
    assert "`regularizer=none/seed=1`" in (sweep / "report.md").read_text()

    missing = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "gone")}}})
    ReportOnMultirunEnd().on_multirun_end(missing)  # logged, not raised
    assert "no report" in caplog.text


def test_no_completed_run_yet_lists_the_jobs_and_draws_nothing(tmp_path):
    write_job(tmp_path / "regularizer=none", "none", ["regularizer=none"], seeds=[1, 2])

    report = write_report(tmp_path)

    assert report.groups == [] and len(report.problems) == 2
    assert [p.name for p in report.files] == [
        "report.md",
        "report.csv",
        "report_runs.csv",
        "report.html",
    ]
    md = (tmp_path / "report.md").read_text()
    assert "No completed run yet." in md and "`regularizer=none/seed=2`" in md


def test_other_swept_settings_get_their_own_rows(tmp_path):
    """mixup.alpha=1 and mixup.alpha=2 are different configurations: never pooled."""
    for alpha in (1, 2):
        job = tmp_path / f"mixup.alpha={alpha},regularizer=mixup,seed=1"
        write_job(job, "mixup", ["regularizer=mixup", f"mixup.alpha={alpha}", "seed=1"])
        write_run(job, "mixup", 1, 0.5 + alpha / 10, 0.5, boundary=False)

    runs, problems, _ = collect(tmp_path)

    assert problems == []
    assert sorted(run.group for run in runs) == ["mixup (mixup.alpha=1)", "mixup (mixup.alpha=2)"]


def test_paired_differences_of_the_compare_sweep(compare_sweep):
    """mixup − none per seed: acc −0.2, −0.2, −0.2; loss −1.5, −2.5, −3.2 (seeds 1–3)."""
    rows = {r["metric"]: r for r in read_csv(compare_sweep / "report_paired.csv")}
    acc, loss = rows["test_acc"], rows["test_loss"]
    assert (acc["regularizer"], acc["baseline"], acc["n_pairs"]) == ("mixup", "none", "3")
    assert acc["seeds"] == "1 2 3"
    assert float(acc["mean_difference"]) == pytest.approx(-0.2)
    assert float(acc["ci_low"]) == pytest.approx(-0.2) == float(acc["ci_high"])
    assert float(loss["mean_difference"]) == pytest.approx(-7.2 / 3)
    assert -3.2 - 1e-9 <= float(loss["ci_low"]) < float(loss["ci_high"]) <= -1.5 + 1e-9
    # Three differences of one sign: exact two-sided p = 2 / 2³; one comparison, no Holm.
    assert float(loss["p"]) == float(loss["p_holm"]) == 0.25
    assert loss["significant"] == "0"
    md = (compare_sweep / "report.md").read_text()
    verdict = md.split("## Verdict")[1].split("##")[0]
    assert "With 3 paired seeds no difference can be significant" in verdict
    assert "at least 6 seeds" in verdict
    assert "| mixup | 3 | −0.200 [−0.200, −0.200] p=0.250 |" in md


def test_effective_rank_is_computed_from_spectra_when_metrics_lack_it(compare_sweep):
    # write_run's layer-1 spectrum is [4, 2, 1, 0.5, 0.1, 0.05] × seed for both classes.
    expected = float(effective_rank(torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1, 0.05])))
    none = read_csv(compare_sweep / "report.csv")[0]
    assert float(none["erank_layer1_mean"]) == pytest.approx(expected, rel=1e-6)
    assert "effective rank, layer 1" in (compare_sweep / "report.md").read_text()


def one_seed_jobs(sweep: Path, cells) -> None:
    """One job folder per (settings, regularizer, seed, acc, loss), as a plain multirun."""
    for settings, regularizer, seed, acc, loss, config in cells:
        overrides = [f"{k}={v}" for k, v in settings.items()]
        overrides += [f"regularizer={regularizer}", f"seed={seed}"]
        job = sweep / ",".join(overrides)
        write_job(job, regularizer, overrides, seed=seed)
        write_run(job, regularizer, seed, acc, loss, boundary=False, config=config)


def test_significant_difference_is_marked_and_stated(tmp_path):
    """8 seeds: mixup's loss is lower on every seed (p = 2/2⁸), its accuracy mixed."""
    cells = []
    for seed in range(1, 9):
        cells.append(({}, "none", seed, 0.8, 1.0 + seed / 10, {}))
        cells.append(({}, "mixup", seed, 0.8 + (0.01 if seed % 2 else -0.01), 0.5, {}))
    one_seed_jobs(tmp_path, cells)

    report = write_report(tmp_path)

    loss = next(c for c in report.comparisons if c.column.name == "test_loss")
    assert loss.p == pytest.approx(2 / 256) and loss.significant
    assert loss.mean == pytest.approx(-(0.5 + 0.45))
    assert "`mixup` lowers the test loss against none by 0.950 [" in report.verdict
    assert "(better, p = 0.0078)" in report.verdict and "over 8 seeds" in report.verdict
    assert "its differences in test accuracy" in report.verdict
    assert "not significant" in report.verdict and "can be significant" not in report.verdict
    # Differences −0.6 … −1.3: the interval lies inside their range, around the mean.
    assert -1.3 <= loss.ci[0] < -0.95 < loss.ci[1] <= -0.6
    cell = f"−0.950 [{loss.ci[0]:+.3f}, {loss.ci[1]:+.3f}]".replace("-", "−")
    assert f"**{cell}** p=0.0078" in (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert f'<td class="significant better">{cell} p=0.0078</td>' in html


def test_report_html_holds_every_figure_and_table(compare_sweep):
    html = (compare_sweep / "report.html").read_text()
    for name in COMPARE_FIGURES:
        data = base64.b64encode((compare_sweep / name).read_bytes()).decode()
        assert f'src="data:image/png;base64,{data}"' in html
    md = (compare_sweep / "report.md").read_text()
    titles = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert len(titles) >= 7
    for title in titles:
        assert f"<h2>{title}</h2>" in html
    # Every table of report.md, row for row (header rows included), is in report.html.
    lines = [line for line in md.splitlines() if line.startswith("|")]
    separators = [line for line in lines if line.startswith("|---")]
    assert html.count("<table>") == len(separators) >= 6
    assert html.count("<tr>") == len(lines) - len(separators)
    assert "regularizer=mixup/seed=4" in html  # failed runs listed
    assert str((compare_sweep / "regularizer=none" / "seed=1").resolve()) in html  # run folders
    assert "http://" not in html and "https://" not in html  # self-contained


def test_numeric_sweep_draws_curves_over_training_points(tmp_path):
    """data.n_samples swept with the test set fixed: the axis is the training points."""
    cells = []
    for n_samples in (920, 1000, 1700):
        data = {"n_samples": n_samples, "test_fraction": 900 / n_samples, "val_fraction": 0.0}
        for seed in (1, 2, 3):
            for regularizer, acc in (("none", 0.7), ("mixup", 0.75)):
                acc += n_samples / 10_000 + seed / 1000
                cells.append(({"data.n_samples": n_samples}, regularizer, seed, acc, 0.5,
                              {"data": data}))  # fmt: skip
    one_seed_jobs(tmp_path, cells)

    report = write_report(tmp_path)

    assert report.axis == "training points" and report.facets == ()
    assert sorted({g.x for g in report.groups}) == [20, 100, 800]
    assert len(report.groups) == 6 and all(len(g.runs) == 3 for g in report.groups)
    md = (tmp_path / "report.md").read_text()
    assert "| training points | regularizer | seeds | test acc |" in md
    assert "| 20 | mixup | 3 | **0.844 ± 0.001** (0.843–0.845) |" in md
    assert "from none on any metric at any of the swept values" in report.verdict
    rows = read_csv(tmp_path / "report.csv")
    assert [(r["training points"], r["regularizer"]) for r in rows][:2] == [
        ("20", "none (data.n_samples=920)"),
        ("20", "mixup (data.n_samples=920)"),
    ]
    image = matplotlib.image.imread(tmp_path / "sweep_curves.png")
    assert image.shape[1] > 600 and len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 20
    columns = [c for c in report.columns if c.name in ("test_acc", "test_loss")]
    fig = axis_figure(report.groups, columns, report.axis, report.facets)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"  # 20 to 800 spans more than 10×
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["mixup"].get_xdata()) == [20, 100, 800]
    assert lines["mixup"].get_ydata()[0] == pytest.approx(0.75 + 0.092 + 0.002)


def test_narrow_numeric_sweep_keeps_a_linear_axis(tmp_path):
    cells = [
        ({"mixup.alpha": alpha}, regularizer, seed, 0.7, 0.5, {})
        for alpha in (0.5, 1.0, 2.0)
        for regularizer in ("none", "mixup")
        for seed in (1, 2)
    ]
    one_seed_jobs(tmp_path, cells)
    report = write_report(tmp_path)
    assert report.axis == "mixup.alpha"
    columns = [c for c in report.columns if c.name == "test_acc"]
    assert axis_figure(report.groups, columns, report.axis, ()).axes[0].get_xscale() == "linear"


def test_categorical_setting_becomes_facets(tmp_path):
    """data.name varies: a table row block and a figure row per data set, paired within."""
    cells = []
    for name, shift in (("spirals", 0.0), ("moons", 0.2)):
        for seed in range(1, 7):
            cells.append(({"data.name": name}, "none", seed, 0.7 + shift, 1.0, {}))
            cells.append(({"data.name": name}, "mixup", seed, 0.7 + shift, 1.0 - seed / 100, {}))
    one_seed_jobs(tmp_path, cells)

    report = write_report(tmp_path)

    assert report.axis is None and report.facets == ("data.name",)
    assert [(g.facet, g.regularizer) for g in report.groups] == [
        ("data.name=moons", "none"),
        ("data.name=moons", "mixup"),
        ("data.name=spirals", "none"),
        ("data.name=spirals", "mixup"),
    ]
    for c in report.comparisons:  # each data set against its own baseline
        assert c.group.facet == c.baseline.facet and c.n == 6
    acc = [c for c in report.comparisons if c.column.name == "test_acc"]
    assert [c.mean for c in acc] == [pytest.approx(0.0), pytest.approx(0.0)]
    loss = [c for c in report.comparisons if c.column.name == "test_loss"]
    assert all(c.p == pytest.approx(2 / 64) and c.significant for c in loss)
    # An item for mixup: its verdict across the two data sets, then where it is better.
    lines = report.verdict.splitlines()
    start = lines.index("- **`mixup`**")
    assert lines[start + 1].startswith("  - across 2 data sets: test accuracy **practically")
    assert lines[start + 2].startswith(
        "  - better than none: test loss on moons (−0.035) and spirals (−0.035); "
        "calibration error (ECE) on moons (−0.002)"
    )
    page = (tmp_path / "report.html").read_text()
    assert "<li><b><code>mixup</code></b><ul><li>across 2 data sets" in page
    across = {(r["metric"], r["regularizer"]): r for r in read_csv(tmp_path / "report_across.csv")}
    loss = across["test_loss", "mixup"]
    # Lower loss than none on every paired seed of both data sets; none is the baseline.
    assert float(loss["probability_of_improvement"]) == 1.0 and loss["n_pairs"] == "12"
    assert (float(loss["poi_ci_low"]), float(loss["poi_ci_high"])) == (1.0, 1.0)
    assert (
        float(loss["average_rank"]) == 1.0
        and float(across["test_loss", "none"]["average_rank"]) == 2.0
    )
    assert across["test_acc", "mixup"]["verdict"] == "practically equivalent"
    assert float(across["test_acc", "mixup"]["rope"]) == 0.01
    assert across["test_loss", "none"]["probability_of_improvement"] == ""
    md = (tmp_path / "report.md").read_text()
    assert "| data.name | regularizer | seeds | test acc |" in md
    assert "| moons | mixup | 6 |" in md
    assert "| data.name | regularizer | pairs |" in md
    paired = read_csv(tmp_path / "report_paired.csv")
    assert {(r["data.name"], r["baseline"]) for r in paired} == {
        ("moons", "none (data.name=moons)"),
        ("spirals", "none (data.name=spirals)"),
    }


def test_cli_names_another_baseline(compare_sweep, capsys):
    assert main([str(compare_sweep), "--baseline", "mixup"]) == 0
    rows = read_csv(compare_sweep / "report_paired.csv")
    assert {(r["regularizer"], r["baseline"]) for r in rows} == {("none", "mixup")}
    acc = next(r for r in rows if r["metric"] == "test_acc")
    assert float(acc["mean_difference"]) == pytest.approx(0.2)
    assert main([str(compare_sweep), "--baseline", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "spiralmix.report: error: --baseline=nope is invalid: no completed run of it "
        "(present: mixup, none)"
    ]
    # The Hydra callback takes it too: +hydra.callbacks.report.baseline=mixup.
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(compare_sweep)}}})
    ReportOnMultirunEnd(baseline="mixup").on_multirun_end(config)
    assert read_csv(compare_sweep / "report_paired.csv")[0]["baseline"] == "mixup"
    assert main([str(compare_sweep)]) == 0  # back to none for the other tests


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_html_renders_in_a_browser(compare_sweep, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600",
         f"--screenshot={shot}", (compare_sweep / "report.html").resolve().as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (1600, 1200)
    assert len(np.unique((image[..., :3] * 255).astype(int).reshape(-1, 3), axis=0)) > 50


def config_of(lr: float, regularizer: str, legacy: bool = False) -> dict:
    """The part of a saved config these tests vary: model.lr, and one regularizer key
    (regularizer.p; model.p in runs from before regularizers were plugins)."""
    p = 0.2 if regularizer == "dropout" else 0.0
    config = {"seed": 0, "regularizer_name": regularizer, "data": {"name": "spirals"},
              "model": {"lr": lr}, "regularizer": {"p": p}}  # fmt: skip
    if legacy:
        config["model"]["p"] = config.pop("regularizer")["p"]
    return config


@pytest.mark.parametrize("legacy", [False, True], ids=["plugins", "before_plugins"])
def test_two_sweeps_with_different_lr_in_one_folder_are_never_paired(tmp_path, legacy):
    """Two sweeps into one folder: none and input_mixup at lr 0.001, then at lr 0.01, given
    by an experiment preset (so the command lines look alike). The saved configs differ."""
    for sweep, lr in (("first", 0.001), ("second", 0.01)):
        for regularizer in ("none", "input_mixup", "dropout"):
            job = tmp_path / sweep / f"regularizer={regularizer}"
            write_job(job, regularizer, [f"regularizer={regularizer}", "experiment=x"],
                      seeds=list(range(1, 7)))  # fmt: skip
            for seed in range(1, 7):
                acc = 0.9 - (0.2 if lr == 0.01 and regularizer == "none" else 0) + seed / 1000
                write_run(job / f"seed={seed}", regularizer, seed, acc, 1.0, boundary=False,
                          config=config_of(lr, regularizer, legacy))  # fmt: skip

    report = write_report(tmp_path)

    assert report.axis == "model.lr"  # numeric: drawn as an axis, a row per value
    rows = {g.name: len(g.runs) for g in report.groups}
    assert rows == {f"{r} (model.lr={lr})": 6 for r in ("none", "input_mixup", "dropout")
                    for lr in ("0.001", "0.01")}  # fmt: skip
    # p differs between dropout and the others: that is what dropout is, not a setting.
    assert all(".p" not in g.name for g in report.groups)
    for c in report.comparisons:
        assert c.group.x == c.baseline.x and c.n == 6
    acc = {c.group.name: c.mean for c in report.comparisons if c.column.name == "test_acc"}
    assert acc["input_mixup (model.lr=0.001)"] == pytest.approx(0.0)
    assert acc["input_mixup (model.lr=0.01)"] == pytest.approx(0.2)
    # The page says what differs from the defaults (conf/): the varying model.lr; data.name
    # is the default and p is dropout's own, so neither is listed.
    page = (tmp_path / "report.html").read_text()
    assert "<dt>Runs</dt><dd>36 completed, 0 failed or unfinished; 6 (1–6) seeds;" in page
    assert "<dt>Data set</dt><dd>spirals</dd>" in page
    assert "<dt>Not the defaults</dt><dd><code>model.lr: 0.001, 0.01</code></dd>" in page


def test_too_many_differing_settings_are_refused_in_one_line(tmp_path, capsys):
    for i, (lr, noise, steps, width) in enumerate(
        [(0.001, 0.0, 100, 32), (0.01, 0.1, 200, 64), (0.01, 0.0, 100, 16)]
    ):
        job = tmp_path / f"job{i}"
        write_job(job, "none", ["regularizer=none"])
        config = {"model": {"lr": lr, "width": width}, "data": {"noise": noise},
                  "trainer": {"max_steps": steps}}  # fmt: skip
        write_run(job, "none", 1, 0.9, 1.0, boundary=False, config=config)

    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("spiralmix.report: error: runs differ in trainer.max_steps (100, 200)")
    assert not (tmp_path / "report.md").exists()


def test_an_interval_that_excludes_0_without_significance_is_explained(tmp_path):
    """Six seeds, two regularizers: every difference positive gives p = 2/64 = 0.031, Holm
    doubles it to 0.0625 ≥ 0.05, while the bootstrap interval lies above 0."""
    cells = []
    for seed in range(1, 7):
        cells.append(({}, "none", seed, 0.8, 1.0, {}))
        cells.append(({}, "mixup", seed, 0.8 + seed / 100, 1.0, {}))
        cells.append(({}, "dropout", seed, 0.8 + seed / 100, 1.0, {}))
    one_seed_jobs(tmp_path, cells)

    report = write_report(tmp_path)

    acc = [c for c in report.comparisons if c.column.name == "test_acc"]
    assert all(c.ci[0] > 0 and c.p_holm == pytest.approx(0.0625) for c in acc)
    md = (tmp_path / "report.md").read_text()
    assert "Where an interval excludes 0 but p ≥ 0.05 (2 cells, e.g. dropout on test acc)" in md
    assert "with 6 pairs its smallest possible value is 0.062: it cannot reach 0.05" in md


def test_each_regularizer_keeps_its_colour_in_every_report():
    from spiralmix.report.figures import COLORS, color_of, colors
    from spiralmix.report.stats import Group

    assert color_of("mixup") == COLORS["mixup"] == "tab:blue"
    # Another name's colour depends on the name only, not on which rows a sweep holds.
    alone = colors([Group("my_reg", "my_reg", [])])
    among = colors([Group("none", "none", []), Group("zz", "zz", []),
                    Group("my_reg (model.lr=0.1)", "my_reg", [])])  # fmt: skip
    assert alone["my_reg"] == among["my_reg (model.lr=0.1)"] == color_of("my_reg")
    assert among["none"] == COLORS["none"]


@pytest.mark.parametrize("bad", ["-0.1", "test_ece=0.1", "test_acc=x"])
def test_cli_rejects_a_bad_rope_in_one_line(compare_sweep, capsys, bad):
    with pytest.raises(SystemExit) as exit_info:
        main([str(compare_sweep), "--rope", bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--rope={bad} is invalid" in err


def test_cli_rope_sets_the_equivalence_region(tmp_path):
    cells = []
    for name, shift in (("spirals", 0.0), ("moons", 0.2)):
        for seed in range(1, 7):
            cells.append(({"data.name": name}, "none", seed, 0.7 + shift, 0.5, {}))
            cells.append(({"data.name": name}, "mixup", seed, 0.72 + shift, 0.5, {}))
    one_seed_jobs(tmp_path, cells)

    assert main([str(tmp_path), "--rope", "0.05"]) == 0
    across = {(r["metric"], r["regularizer"]): r for r in read_csv(tmp_path / "report_across.csv")}
    # +0.02 on every seed: inside a ROPE of ±0.05, so practically equivalent.
    assert across["test_acc", "mixup"]["rope"] == "0.05"
    assert across["test_acc", "mixup"]["verdict"] == "practically equivalent"
    assert main([str(tmp_path), "--rope", "0.001"]) == 0
    across = {(r["metric"], r["regularizer"]): r for r in read_csv(tmp_path / "report_across.csv")}
    # Outside ±0.001: better, unless the prior's pseudo-observation at 0 outweighs both
    # data sets (w0 > 1/√2), which few posterior samples do.
    assert across["test_acc", "mixup"]["verdict"] == "better"
    assert 0.95 <= float(across["test_acc", "mixup"]["p_better"]) < 1


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_better_is_green_and_worse_is_red_in_a_browser(tmp_path):
    cells = []
    for name in ("spirals", "moons"):
        for seed in range(1, 9):
            cells.append(({"data.name": name}, "none", seed, 0.9, 0.6, {}))
            # Lower accuracy (worse, red) and lower loss (better, green) on every seed.
            cells.append(({"data.name": name}, "mixup", seed, 0.8 - seed / 1000, 0.3, {}))
    one_seed_jobs(tmp_path / "sweep", cells)
    write_report(tmp_path / "sweep")
    shot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,2400",
         f"--screenshot={shot}", (tmp_path / "sweep" / "report.html").resolve().as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(p) for p in np.unique(pixels, axis=0)}
    assert (0xEE, 0xF8, 0xEE) in colours  # a better cell's background
    assert (0xFC, 0xEF, 0xEE) in colours  # a worse cell's background
