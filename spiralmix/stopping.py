"""SIGINT and SIGTERM: stop where the state is whole, say so, exit 130 or 143.

While a run trains, a signal is noted and the run stops at the end of its current chunk of
steps (:class:`StopOnSignal`), so that a checkpoint is never half written; outside training,
or at a second signal, it stops at once. Either way :class:`Stopped` (or Lightning's own
exit on SIGTERM) unwinds to the command line, which names the signal and how to finish.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """Raised by the signal handler or at the end of a chunk; not an error of the run."""


@dataclass
class StopRequest:
    signum: int | None = None  # the first signal received
    step: int | None = None  # the last optimizer step a chunk of training ended at
    deferred: bool = False  # inside training: stop at the end of the chunk
    folder: Path | None = None  # the run folder that trained last

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


_request: StopRequest | None = None


def _handle(signum: int, frame: object) -> None:
    if _request is None:
        raise Stopped(signum)
    first = _request.signum is None
    if first:
        _request.signum = signum
    if not (first and _request.deferred):
        raise Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM in this block; yields what was received."""
    global _request
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _request = StopRequest()
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield _request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _request = None


class StopOnSignal(pl.Callback):
    """Ends training at the end of the chunk during which a signal came, before the
    checkpoint of that step is written: the checkpoints on disk stay as they were."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if _request is not None:
            _request.deferred, _request.folder = True, Path(trainer.default_root_dir)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if _request is not None:
            _request.step = trainer.global_step
            if _request.signum is not None:
                raise Stopped(_request.signum)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if _request is not None:
            _request.deferred = False

    def on_exception(self, trainer: pl.Trainer, pl_module: object, err: BaseException) -> None:
        self.on_train_end(trainer, pl_module)
