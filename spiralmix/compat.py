"""The few places where spiralmix relies on a library's non-public API.

Each function says why no public API serves. When an upgrade moves or renames what it
relies on, it raises :class:`LibraryChanged` naming the library and its version, and
``tests/test_compat.py`` fails the same way, so the breakage shows at once instead of as
a wrong step count or a lost event.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class LibraryChanged(RuntimeError):
    """A library no longer offers the non-public API that spiralmix uses here."""

    def __init__(self, distribution: str, what: str, err: BaseException | None = None) -> None:
        cause = f" ({type(err).__name__}: {err})" if err is not None else ""
        super().__init__(
            f"{distribution} {version(distribution)} changed {what}{cause}; "
            "spiralmix/compat.py needs an update for this version"
        )


def count_optimizer_steps(trainer: Any, n: int) -> None:
    """Advance Lightning's step counter (``trainer.global_step``) by n optimizer steps.

    Why: a training_step call runs a chunk of steps with the raw torch optimizer. Lightning's
    public way, ``LightningOptimizer.step()`` (which counts the step itself), was measured
    at about 40 µs more per step: ~8 % of a ~500 µs mixup step, and 7 % more CPU time for a
    whole 5000-step run. global_step, which checkpoints, max_steps and loggers use, is the
    manual-optimization loop's step counter; Lightning has no public setter for it.
    """
    try:
        progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        increment_ready, increment_completed = (
            progress.increment_ready,
            progress.increment_completed,
        )
    except AttributeError as err:
        raise LibraryChanged("pytorch-lightning", "its step counter", err) from err
    for _ in range(n):
        increment_ready()
        increment_completed()


def event_file_writer(experiment: Any) -> Any:
    """The ``FileWriter`` of a torch ``SummaryWriter`` (a TensorBoardLogger's experiment).

    Why: a step's scalars (train/loss, mixup/k, mixup/lambda) go out as one event with
    several values, which ``SummaryWriter.add_scalar`` cannot do (one event per tag, three
    times the events and the time); ``FileWriter.add_summary`` can, and the only way to
    the writer is ``SummaryWriter._get_file_writer()``.
    """
    try:
        writer = experiment._get_file_writer()
        writer.add_summary  # noqa: B018 - the method spiralmix calls
    except AttributeError as err:
        raise LibraryChanged("torch", "SummaryWriter._get_file_writer()", err) from err
    return writer


def fused_adamw_kernel() -> Any:
    """torch's fused AdamW kernel, ``torch._fused_adamw_``, that ``AdamW(fused=True).step()``
    calls once per step.

    Why: on a model this small ``step()`` spends most of its time in Python around that one
    call (grouping tensors by device, checking flags); :mod:`spiralmix.adamw` calls the
    kernel directly on the optimizer's own state, bit for bit like ``step()``, and saves
    about a fifth of a one-run training step.
    """
    import torch  # here: the command line's checks import this module and not torch

    kernel = getattr(torch, "_fused_adamw_", None)
    if not callable(kernel):
        raise LibraryChanged("torch", "torch._fused_adamw_ (AdamW's fused kernel)")
    return kernel


def plan_basic_sweep(arguments: list[str]) -> list[list[str]]:
    """Every job's overrides, in order, as Hydra's basic sweeper expands ``arguments``.

    Why: a report lists jobs that an interrupted sweep never started; only the sweeper's
    own expansion gives strings that match each job's ``overrides.yaml`` exactly, and it
    lives in ``hydra._internal`` (hydra-core is pinned below 1.4 in pyproject).
    """
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(arguments)
        split = BasicSweeper.split_arguments
    except (ImportError, AttributeError) as err:
        raise LibraryChanged("hydra-core", "BasicSweeper.split_arguments", err) from err
    return split(parsed, None)[0]


def hydra_error_lines(err: BaseException) -> list[str]:
    """A Hydra compose error as short lines: the override, the cause, the options offered.

    Why: Hydra raises one exception type for a wrong key, a wrong type and an unknown
    option, with a multi-line message; the one-line error of the command line is cut out
    of that message's wording ("Available options in ...", "Config search path").
    """
    lines = [str(e).strip().splitlines()[0] for e in (err, err.__cause__) if e is not None]
    text = str(err)
    if "Available options" in text:
        if "Available options in" not in text or "Config search path" not in text:
            raise LibraryChanged("hydra-core", "its missing-option wording", err) from err
        options = text.split("Available options in")[1].split("Config search path")[0]
        lines.append("available" + " ".join(options.split()).split(":", 1)[1])
    return lines


def foreach_mul_(tensors: list[torch.Tensor], factors: list[torch.Tensor]) -> None:
    """``tensors[i] *= factors[i]`` in one kernel launch (``torch._foreach_mul_``).

    Why: the per-member weight decay of an ensemble multiplies every parameter before each
    step; a Python loop of ``mul_`` costs a launch per tensor, and torch has no public
    multi-tensor API.
    """
    import torch

    op = getattr(torch, "_foreach_mul_", None)
    if not callable(op):
        raise LibraryChanged("torch", "torch._foreach_mul_")
    op(tensors, factors)


def foreach_add_(tensors: list[torch.Tensor], value: float) -> None:
    """``tensors[i] += value`` in one kernel launch (``torch._foreach_add_``), as
    ``AdamW.step()`` counts its steps."""
    import torch

    op = getattr(torch, "_foreach_add_", None)
    if not callable(op):
        raise LibraryChanged("torch", "torch._foreach_add_")
    op(tensors, value)
