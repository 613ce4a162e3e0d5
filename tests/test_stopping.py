"""Signals and exit codes, end to end: a stopped run says how to finish it, and that works."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

LONG = ["trainer.max_steps=2000", "trainer.steps_per_call=50", "trainer.eval_every_n_steps=1000",
        "trainer.checkpoint_every_n_steps=100", "trainer.progress_bar=false",
        "evaluation.grid_resolution=20", "evaluation.diagnostic_figures=false"]  # fmt: skip
TIMINGS = ("wall_time_s", "steps_per_s")


def start(*args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "spiralmix", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def stop(process: subprocess.Popen, signum: int) -> str:
    """Send the signal; return the one line the command ends with."""
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert lines and "Traceback" not in err, err
    return lines[-1]


def finish(line: str) -> subprocess.CompletedProcess:
    """Run the command that the stop line names (``python -m spiralmix ...``), with Python's
    warnings shown, as a user sees them."""
    command = shlex.split(line.split("finish it with: ", 1)[1])
    assert command[:3] == ["python", "-m", "spiralmix"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "HYDRA_FULL_ERROR")}
    return subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def metrics(folder: Path) -> dict:
    result = json.loads((folder / "metrics.json").read_text())
    return {k: v for k, v in result.items() if k not in (*TIMINGS, "config")}


def test_sigterm_stops_a_run_and_the_command_it_prints_finishes_it_exactly(tmp_path):
    run, whole = tmp_path / "run", tmp_path / "whole"
    process = start(*LONG, f"hydra.run.dir={run}")
    wait_for(run / "checkpoints" / "step=100.ckpt", process)
    line = stop(process, signal.SIGTERM)
    assert process.returncode == 143
    assert line.startswith("spiralmix: stopped by SIGTERM at step ") and f"resume={run}" in line
    assert "last.ckpt holds step" in line
    assert not (run / "metrics.json").exists()

    resumed = finish(line)
    assert resumed.returncode == 0, resumed.stderr
    assert "Checkpoint directory" not in resumed.stderr  # Lightning's warning, not for a resume
    uninterrupted = run_cli(*LONG, f"hydra.run.dir={whole}")
    assert uninterrupted.returncode == 0
    assert metrics(run) == metrics(whole)  # every evaluation of the history, bit for bit


@pytest.mark.slow
def test_sigint_stops_a_sweep_with_a_report_and_the_same_sweep_finishes_it(tmp_path):
    sweep = tmp_path / "sweep"
    process = start("-m", "seed=1,2", *LONG, f"hydra.sweep.dir={sweep}")
    wait_for(sweep / "seed=2" / "checkpoints" / "step=100.ckpt", process)
    line = stop(process, signal.SIGINT)
    assert process.returncode == 130
    assert line.startswith(f"spiralmix: stopped by SIGINT in job seed=2 of the sweep {sweep}")
    report = (sweep / "report.md").read_text()
    assert "seed=2" in report and (sweep / "seed=1" / "metrics.json").is_file()

    finished = finish(line)
    assert finished.returncode == 0, finished.stderr
    assert "none seed 1: ended before (completed), not trained again" in finished.stdout
    assert metrics(sweep / "seed=2")["status"] == "completed"
    assert "0 failed or unfinished" in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_a_sweep_with_a_failed_job_exits_non_zero_and_its_report_says_why(tmp_path):
    sweep = tmp_path / "sweep"
    short = [*LONG, "trainer.max_steps=100"]
    result = run_cli("-m", "model.lr=1e-3,1e30", *short, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("spiralmix: error: 1 of 2 runs did not complete")
    assert "model.lr=1e+30" in line and "non-finite" in line
    assert "training loss became non-finite at step" in (sweep / "report.md").read_text()
