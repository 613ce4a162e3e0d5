"""Run folders: one writer, a writable place, readable checkpoints, a full disk."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import spiralmix.atomic
from spiralmix.rundir import RunDirError, check_writable, lock, readable_checkpoint, unlock
from spiralmix.train import train
from tests.conftest import TINY, run_cli

TIMINGS = ("wall_time_s", "steps_per_s")


def _without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMINGS}


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("spiralmix: error: ") and "Traceback" not in result.stdout
    return lines[0]


def test_the_lock_excludes_a_second_holder_and_dies_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from spiralmix.rundir import lock; "
         f"lock({str(tmp_path)!r}); print('locked', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirError, match=f"{tmp_path}.*in use.*pid {holder.pid}"):
        lock(tmp_path)
    holder.send_signal(signal.SIGKILL)  # no clean-up: the kernel drops the flock
    holder.wait()
    lock(tmp_path)  # a killed process's lock file does not block
    unlock(tmp_path)


LONG = ["trainer.max_steps=3000", "trainer.steps_per_call=250", "trainer.eval_every_n_steps=1000",
        "trainer.checkpoint_every_n_steps=500", "trainer.progress_bar=false",
        "evaluation.grid_resolution=20", "evaluation.diagnostic_figures=false"]  # fmt: skip


@pytest.mark.slow
def test_a_busy_run_folder_stops_a_second_process_and_a_killed_one_does_not_block(tmp_path):
    command = [sys.executable, "-m", "spiralmix", *LONG, f"hydra.run.dir={tmp_path}"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "checkpoints" / "step=500.ckpt").exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # it holds the folder, as a slow or hung run would

    second = run_cli(*LONG, f"hydra.run.dir={tmp_path}")  # the same command, same folder
    assert second.returncode == 2
    line = _one_error_line(second)
    assert str(tmp_path) in line and f"pid {first.pid}" in line
    resume = run_cli(f"resume={tmp_path}")
    assert resume.returncode == 2 and "in use" in _one_error_line(resume)

    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (tmp_path / "metrics.json").exists()
    other = run_cli(*LONG, "trainer.max_steps=20000", f"hydra.run.dir={tmp_path}")
    assert other.returncode == 2 and "trainer.max_steps=20000" in _one_error_line(other)
    assert str(tmp_path) in other.stderr  # it names the folder and the run it holds

    again = run_cli(*LONG, f"hydra.run.dir={tmp_path}")  # the stale lock does not block
    assert again.returncode == 0, again.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 3000
    assert [h["step"] for h in metrics["history"]] == [0, 1000, 2000, 3000]
    done = run_cli(*LONG, f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0 and "not trained again" in done.stdout


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write in: a read-only tmpfs as root, otherwise chmod 555."""
    path = tmp_path / "read_only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                      capture_output=True).returncode:  # fmt: skip
        pytest.skip("cannot mount a read-only tmpfs here")
    yield path
    subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_an_unwritable_output_folder_fails_before_training(tmp_path, read_only_dir, mode):
    not_a_dir = tmp_path / "a_file"
    not_a_dir.write_text("")
    for folder in (not_a_dir / "run", read_only_dir / "run"):
        args = ["-m", f"hydra.sweep.dir={folder}"] if mode == "multirun" else [
            f"hydra.run.dir={folder}"]  # fmt: skip
        result = run_cli(*args, *TINY, timeout=120)
        assert result.returncode == 2
        assert "cannot write the output folder" in _one_error_line(result)
        assert str(folder) in result.stderr
    assert not (read_only_dir / "run").exists()
    with pytest.raises(RunDirError):
        check_writable(read_only_dir)


def test_a_corrupt_last_checkpoint_is_named_and_resuming_falls_back(tmp_path):
    reference = run_cli("regularizer=mixup", *TINY, f"hydra.run.dir={tmp_path}")
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "metrics.json").read_text())
    # As if killed before the end: no metrics.json, last.ckpt truncated, step=200 garbage.
    (tmp_path / "metrics.json").unlink()
    last, at_200 = (
        tmp_path / "checkpoints" / "last.ckpt",
        tmp_path / "checkpoints" / "step=200.ckpt",
    )
    last.write_bytes(last.read_bytes()[:1000])
    at_200.write_bytes(b"not a checkpoint")

    resumed = run_cli(f"resume={tmp_path}")
    assert resumed.returncode == 0, resumed.stderr
    errors = [line for line in resumed.stderr.splitlines() if line.startswith("spiralmix: error")]
    assert len(errors) == 2 and str(last) in errors[0] and str(at_200) in errors[1]
    assert all("step=100.ckpt (step 100) instead" in line for line in errors)
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert _without_timings(result) == _without_timings(expected)

    for path in (tmp_path / "checkpoints").glob("*.ckpt"):
        path.write_bytes(b"")
    (tmp_path / "metrics.json").unlink()
    assert readable_checkpoint(tmp_path / "checkpoints")[0] is None
    nothing = run_cli(f"resume={tmp_path}")
    assert nothing.returncode == 2
    assert "no readable checkpoint" in _one_error_line(nothing) and "last.ckpt" in nothing.stderr


def test_a_full_disk_fails_the_run_and_keeps_the_last_checkpoint(
    tmp_path, tiny_config, monkeypatch
):
    """The fault injected into the writer: the second checkpoint finds no space left."""
    real_write, checkpoints = spiralmix.atomic.write_atomic, []

    def fill_up(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write_until_full(path: Path, write) -> None:
        if path.suffix == ".ckpt":
            checkpoints.append(path)
            if len(checkpoints) > 2:  # step=100.ckpt and last.ckpt fit, step=200.ckpt does not
                write = fill_up
        real_write(path, write)

    monkeypatch.setattr(spiralmix.atomic, "write_atomic", write_until_full)
    cfg = tiny_config("regularizer=mixup")
    result = train(cfg, tmp_path)[0]
    monkeypatch.undo()
    assert result["status"] == "failed"
    assert "No space left on device" in result["error"] and "last.ckpt" in result["error"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "failed" and saved["error"] == result["error"]
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 100  # the last good one, intact
    assert not list(tmp_path.rglob("*.tmp"))

    # With space again, the same call continues from step 100 to an uninterrupted result.
    finished = train(cfg, tmp_path)[0]
    expected = train(cfg, tmp_path / "uninterrupted")[0]
    assert _without_timings(finished) == _without_timings(expected)


def test_a_full_filesystem_fails_the_run_with_a_clear_message(tmp_path):
    """A real 256 KiB tmpfs: room for the start of the run, not for all of it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        result = run_cli("regularizer=mixup", *TINY, f"hydra.run.dir={disk / 'run'}")
        assert result.returncode == 1
        line = _one_error_line(result)
        assert "No space left on device" in line and str(disk / "run") in line
        last = disk / "run" / "checkpoints" / "last.ckpt"
        if last.exists():  # the last good checkpoint loads
            assert torch.load(last, weights_only=True)["global_step"] in (100, 200)
        if (disk / "run" / "metrics.json").exists():
            assert json.loads((disk / "run" / "metrics.json").read_text())["status"] == "failed"
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_run_killed_after_its_last_checkpoint_finishes_without_training(tmp_path, tiny_config):
    cfg = tiny_config("regularizer=mixup")
    train(cfg, tmp_path)
    expected = json.loads((tmp_path / "metrics.json").read_text())
    boundary = torch.load(tmp_path / "boundary.pt", weights_only=True)
    (tmp_path / "metrics.json").unlink()  # as if killed while writing the results
    (tmp_path / "boundary.pt").unlink()
    train(cfg, tmp_path)
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert _without_timings(result) == _without_timings(expected)
    again = torch.load(tmp_path / "boundary.pt", weights_only=True)
    assert torch.equal(again["grid_p"], boundary["grid_p"]) and again["step"] == 200
