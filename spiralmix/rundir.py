"""A run folder's safety: one writer at a time, a writable place, a readable checkpoint.

A run folder holds one process's members (their metrics.json, events, boundary.pt) and the
checkpoints they share in ``checkpoints/``. Before training, a process takes an exclusive
lock on ``<run dir>/.lock`` (``flock``: the kernel drops it when the process dies, so a
killed run never leaves a stale lock) and picks the newest checkpoint that actually loads.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Open lock files by run folder: held until released or until the process ends.
_HELD: dict[Path, IO[str]] = {}


class RunDirError(Exception):
    """A run folder that cannot be used; the message is one line that names it."""


def lock(run_dir: Path) -> None:
    """Make this process the only writer of ``run_dir``, or raise :class:`RunDirError`."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise RunDirError(
            f"{run_dir} is in use by another spiralmix process (pid {owner}); "
            "wait for it to end or choose another folder"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _HELD[run_dir] = handle


def check_free(run_dir: Path) -> None:
    """Raise :class:`RunDirError` if another process holds ``run_dir``'s lock; unlike
    :func:`lock`, create, take and write nothing."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD or not (run_dir / ".lock").is_file():
        return
    with open(run_dir / ".lock", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = handle.read().strip() or "unknown"
            raise RunDirError(
                f"{run_dir} is in use by another spiralmix process (pid {owner}); "
                "wait for it to end or choose another folder"
            ) from None  # closing the file releases a lock it took


def unlock(run_dir: Path) -> None:
    """Release the lock :func:`lock` took (a sweep's next job may be in this process)."""
    handle = _HELD.pop(Path(run_dir).resolve(), None)
    if handle is not None:
        handle.close()  # closing the descriptor releases the flock


def check_writable(path: Path | str) -> None:
    """Raise :class:`RunDirError` unless files can be created in ``path`` (or, when it does
    not exist yet, in its nearest existing parent, where it will be made). Writes nothing."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise RunDirError(f"cannot write the output folder {path}: {reason}") from None


def checkpoint_step(path: Path) -> int:
    """The step in a ``step=<N>.ckpt`` name."""
    return int(re.fullmatch(r"step=(\d+)\.ckpt", path.name).group(1))


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint that loaded, and what resuming needs from it besides Lightning's state."""

    path: Path
    step: int  # optimizer steps it holds (Lightning's global_step)
    run_configs: list[dict] | None  # the members' configs; None in older checkpoints


def readable_checkpoint(checkpoint_dir: Path) -> tuple[Checkpoint | None, list[str]]:
    """The checkpoint to resume from: ``last.ckpt`` if it loads, otherwise the newest
    ``step=<N>.ckpt`` that does. Returns it (None if there is none) and one line per
    unreadable file tried, naming it and what came of it. Each file is loaded once here;
    what the plan and the loggers need from it comes with the result."""
    import torch  # here: the command line checks its arguments before the slow imports

    candidates = [checkpoint_dir / "last.ckpt"]
    numbered = [p for p in checkpoint_dir.glob("step=*.ckpt") if re.search(r"=\d+\.ckpt$", p.name)]
    candidates += sorted(numbered, key=checkpoint_step, reverse=True)
    notes, broken = [], []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            step = saved["global_step"]
            saved["state_dict"], saved["spiralmix"]  # noqa: B018 (what a resume reads)
        except Exception as err:  # any failure to load means: not this one
            text = str(err).strip() or type(err).__name__
            reason = text.splitlines()[0].split(". ")[0][:120]  # torch's first sentence
            broken.append(f"{path} cannot be read (truncated or corrupt: {reason})")
            continue
        notes = [f"{b}; resuming from {path} (step {step}) instead" for b in broken]
        return Checkpoint(path, step, saved.get("run_configs")), notes
    if broken:
        notes = [f"{b}; no readable checkpoint left, starting over" for b in broken]
    return None, notes


def finished_metrics(dirs: list[Path]) -> list[dict] | None:
    """Every member's metrics.json when all of them ended for good (completed, or failed
    with a non-finite loss, which a rerun would repeat); None when any must (re)train."""
    results = []
    for member_dir in dirs:
        try:
            metrics = json.loads((member_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            return None
        if metrics.get("status") != "completed" and metrics.get("failed_step") is None:
            return None  # e.g. stopped by a full disk: it resumes
        results.append(metrics)
    return results
