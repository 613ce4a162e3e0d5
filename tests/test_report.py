"""The sweep report on hand-made sweep directories: exact statistics, listings, figures, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from spiralmix.report import ReportOnMultirunEnd, collect, write_report
from spiralmix.report.__main__ import main

FIGURES = ("boundaries.png", "curves.png", "calibration.png", "flattening.png")


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


@pytest.mark.parametrize("name", FIGURES)
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
