"""Multirun sweeps through the CLI: the compare preset under the basic, joblib and
submitit_local launchers, an Optuna search, a sweep with a failing job, the SLURM config,
an interrupted sweep finished by its own command, a preempted submitit job."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, run_cli

# Two evaluations in 100 steps and small figures: a sweep job takes a few seconds.
SWEEP_TINY = [
    "trainer=debug",
    "trainer.max_steps=100",
    "trainer.steps_per_call=50",
    "trainer.eval_every_n_steps=50",
    "trainer.checkpoint_every_n_steps=100",
    "trainer.progress_bar=false",
    "evaluation.grid_resolution=20",
    "evaluation.diagnostic_figures=false",
]
COMPARE = ["experiment=compare", "regularizers=[none,mixup],[input_mixup]", "seeds=[1,2]"]
# (job folder, regularizer) of the compare sweep above; each trains seeds 1 and 2.
COMPARE_RUNS = [("none+mixup", "none"), ("none+mixup", "mixup"), ("input_mixup", "input_mixup")]


def multirun(sweep_dir: Path, *overrides: str, returncode: int = 0) -> None:
    result = run_cli("-m", *overrides, *SWEEP_TINY, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == returncode, result.stderr[-3000:]


def read_metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's Hydra job directories (each has .hydra/config.yaml)."""
    return sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/config.yaml"))


def event_pids(run_dir: Path) -> set[int]:
    """Ids of the processes that wrote a run's TensorBoard events. The file name is
    ``events.out.tfevents.<time>.<host>.<pid>.<n>`` and the host name may hold dots."""
    return {int(p.name.split(".")[-2]) for p in run_dir.glob("events.out.tfevents.*")}


def check_compare_sweep(sweep_dir: Path) -> dict[str, set[int]]:
    """Assert the compare sweep's six runs and its report; return each job's process ids."""
    pids: dict[str, set[int]] = {}
    for job, regularizer in COMPARE_RUNS:
        for seed in (1, 2):
            run_dir = sweep_dir / job / f"regularizer={regularizer},seed={seed}"
            metrics = read_metrics(run_dir / "metrics.json")
            assert metrics["status"] == "completed", run_dir
            assert (metrics["regularizer"], metrics["seed"], metrics["steps"]) == (
                regularizer,
                seed,
                100,
            )
            pids.setdefault(job, set()).update(event_pids(run_dir))
    assert len(list(sweep_dir.rglob("metrics.json"))) == 6
    for name in ("report.md", "report.csv", "boundaries.png", "curves.png"):
        assert (sweep_dir / name).stat().st_size > 0, name
    with open(sweep_dir / "report.csv", newline="") as f:
        rows = {row["regularizer"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"none", "mixup", "input_mixup"}
    assert all(row["n_seeds"] == "2" and row["seeds"] == "1 2" for row in rows.values())
    assert "None: every job finished" in (sweep_dir / "report.md").read_text()
    return pids


@pytest.mark.slow
def test_compare_sweep_with_the_basic_launcher(tmp_path):
    multirun(tmp_path, *COMPARE)
    pids = check_compare_sweep(tmp_path)
    # The basic launcher runs the jobs one after the other in the launching process.
    assert len(pids["none+mixup"] | pids["input_mixup"]) == 1


def test_compare_sweep_with_joblib_runs_each_job_in_its_own_process(tmp_path):
    multirun(tmp_path, *COMPARE, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    pids = check_compare_sweep(tmp_path)
    # The members of a job share one process; the two jobs ran in two different ones.
    assert len(pids["none+mixup"]) == 1 and len(pids["input_mixup"]) == 1
    assert pids["none+mixup"] != pids["input_mixup"]


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job(tmp_path):
    multirun(
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "hydra.sweep.subdir=job${hydra.job.num}",
    )
    assert read_metrics(tmp_path / "job0" / "metrics.json")["status"] == "completed"
    # submitit ran it as a job of its own: its logs and pickled result are there.
    assert list(tmp_path.glob(".submitit/*/*_0_result.pkl"))


@pytest.mark.slow
def test_optuna_search_minimises_the_mean_validation_loss(tmp_path):
    multirun(tmp_path, "experiment=search_weight_decay", "hydra.sweeper.n_trials=3")
    trials = job_dirs(tmp_path)
    assert len(trials) == 3
    objective, test_loss, decay = {}, {}, {}
    for trial in trials:
        runs = [read_metrics(trial / f"seed={s}" / "metrics.json") for s in (123, 124, 125)]
        assert all(r["status"] == "completed" for r in runs), trial
        assert all(r["config"]["data"]["val_fraction"] == 0.1 for r in runs)
        # The task function's own arithmetic, so that the best value matches exactly.
        objective[trial] = sum(r["final"]["val/loss"] for r in runs) / len(runs)
        test_loss[trial] = statistics.mean(r["final"]["test/loss"] for r in runs)
        decay[trial] = OmegaConf.load(trial / ".hydra" / "config.yaml").regularizer.weight_decay
        assert 1e-4 <= decay[trial] <= 3.0
    assert len(set(decay.values())) == 3  # three different trials

    results = OmegaConf.load(tmp_path / "optimization_results.yaml")
    best = min(objective, key=objective.get)
    assert results.best_value == objective[best]  # the validation loss, not the test loss
    assert results.best_value not in test_loss.values()
    assert dict(results.best_params) == {"regularizer.weight_decay": decay[best]}
    assert (tmp_path / "report.md").is_file()  # the report callback copes with a search


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    # lr 1e30 makes the loss non-finite within the first steps.
    # The sweep exits 1: one of its runs did not complete.
    multirun(tmp_path, "model.lr=1e-3,1e30", "hydra.sweep.subdir=job${hydra.job.num}", returncode=1)
    assert job_dirs(tmp_path) == [tmp_path / "job0", tmp_path / "job1"]
    good = read_metrics(tmp_path / "job0" / "metrics.json")
    bad = read_metrics(tmp_path / "job1" / "metrics.json")
    assert good["status"] == "completed" and good["config"]["model"]["lr"] == 1e-3
    assert bad["status"] == "failed" and bad["config"]["model"]["lr"] == 1e30
    assert bad["failed_step"] >= 1
    failed_section = (tmp_path / "report.md").read_text().split("## Failed or unfinished runs")[1]
    assert "`job1`" in failed_section and "non-finite" in failed_section
    assert "job0" not in failed_section


def test_slurm_launcher_config_composes_with_overridable_resources():
    def launcher(*overrides: str):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=["hydra/launcher=slurm", *overrides],
                          return_hydra_config=True)  # fmt: skip
        return cfg.hydra.launcher

    default = launcher()
    assert default._target_.endswith("SlurmLauncher")
    assert (default.partition, default.timeout_min, default.cpus_per_task) == (None, 60, 1)
    assert default.max_num_timeout > 0  # timed-out jobs are requeued (preempted ones always)
    changed = launcher(
        "hydra.launcher.partition=cpu",
        "hydra.launcher.timeout_min=120",
        "hydra.launcher.cpus_per_task=4",
    )
    assert (changed.partition, changed.timeout_min, changed.cpus_per_task) == ("cpu", 120, 4)


# A sweep to interrupt: five one-seed jobs, checkpoints every 100 steps.
RESUMABLE = ["seed=1,2,3,4,5", "trainer.max_steps=400", "trainer.eval_every_n_steps=100",
             "hydra.sweep.subdir=seed${seed}"]  # fmt: skip
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]  # two at a time


def _sweep_command(sweep_dir: Path, *overrides: str) -> list[str]:
    """The CLI's multirun with SWEEP_TINY first (later overrides win)."""
    return [sys.executable, "-m", "spiralmix", "-m", *SWEEP_TINY, *overrides,
            f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip


def _without(row: dict, *keys: str) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


@pytest.mark.slow
def test_an_interrupted_sweep_finishes_with_the_same_command(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    # The reference in one process (the basic launcher): the same results, sooner.
    subprocess.run(_sweep_command(reference, *RESUMABLE), check=True, capture_output=True)

    # SIGKILL the whole sweep (launcher and joblib workers) once two jobs completed, one
    # is between checkpoints and one has not started.
    command = _sweep_command(interrupted, *RESUMABLE, *JOBLIB)
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    jobs = [interrupted / f"seed{s}" for s in range(1, 6)]

    def state() -> list[str]:
        return [
            "completed" if (j / "metrics.json").exists()
            else "checkpointed" if list(j.glob("checkpoints/step=*.ckpt"))
            else "started" if j.exists() else "never started"
            for j in jobs
        ]  # fmt: skip

    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        now = state()
        if "completed" in now and "checkpointed" in now and "never started" in now:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = state()
    assert "completed" in before and "checkpointed" in before and "never started" in before
    done = [j for j, s in zip(jobs, before) if s == "completed"]
    done_stamp = {j: (j / "metrics.json").stat().st_mtime_ns for j in done}

    finish = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr[-3000:]
    assert "not trained again" in finish.stdout
    for job, was in zip(jobs, before):
        expected = read_metrics(reference / job.name / "metrics.json")
        result = read_metrics(job / "metrics.json")
        assert _without(result, "wall_time_s", "steps_per_s") == _without(
            expected, "wall_time_s", "steps_per_s"
        ), job.name
        if was == "completed":  # kept as it was, not trained again
            assert (job / "metrics.json").stat().st_mtime_ns == done_stamp[job]
            assert len(event_pids(job)) == 1
        if was == "checkpointed":  # the killed process and the one that finished it
            assert len(event_pids(job)) == 2

    for name in ("report.csv", "report_runs.csv"):
        with open(reference / name, newline="") as f:
            expected = [_without(row, "wall_time_s") for row in csv.DictReader(f)]
        with open(interrupted / name, newline="") as f:
            finished = [_without(row, "wall_time_s") for row in csv.DictReader(f)]
        assert finished == expected, name
    assert "None: every job finished" in (interrupted / "report.md").read_text()


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_resumes(tmp_path):
    """submitit's own signal (SIGUSR2) preempts the job: the launcher's checkpoint()
    resubmits it, and the requeued job continues from the run folder's last checkpoint."""
    long = ["trainer.max_steps=3000", "trainer.eval_every_n_steps=500"]
    process = subprocess.Popen(
        _sweep_command(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                       "hydra.sweep.subdir=job", *long),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_dir = tmp_path / "job"
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoints" / "step=200.ckpt").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job_pid = int((run_dir / ".lock").read_text())
    os.kill(job_pid, signal.SIGUSR2)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]

    metrics = read_metrics(run_dir / "metrics.json")
    assert metrics["status"] == "completed" and metrics["steps"] == 3000
    pids = event_pids(run_dir)
    assert job_pid in pids and len(pids) == 2  # the preempted process and the requeued one
    logs = "".join(p.read_text() for p in tmp_path.glob(".submitit/*/*_log.*"))
    assert "Requeued" in logs
    # It resumed: the requeued process started after step 200, not at step 0.
    assert (run_dir / "checkpoints" / "step=200.ckpt").stat().st_mtime < min(
        p.stat().st_mtime for p in run_dir.glob(f"events.out.tfevents.*.{max(pids - {job_pid})}.*")
    )

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*SWEEP_TINY, *long])
    from spiralmix.train import train

    expected = train(cfg, tmp_path / "uninterrupted")[0]
    for key in ("final", "best", "history", "steps"):
        assert metrics[key] == expected[key], key
