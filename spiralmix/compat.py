"""The few places where spiralmix relies on a library's non-public API.

Each function says why no public API serves. When an upgrade moves or renames what it
relies on, it raises :class:`LibraryChanged` naming the library and its version, and
``tests/test_compat.py`` fails the same way, so the breakage shows at once instead of as
a wrong step count or a lost event.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any


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
    op = getattr(torch, "_foreach_mul_", None)
    if not callable(op):
        raise LibraryChanged("torch", "torch._foreach_mul_")
    op(tensors, factors)


def foreach_add_(tensors: list[torch.Tensor], value: float) -> None:
    """``tensors[i] += value`` in one kernel launch (``torch._foreach_add_``), as
    ``AdamW.step()`` counts its steps."""
    op = getattr(torch, "_foreach_add_", None)
    if not callable(op):
        raise LibraryChanged("torch", "torch._foreach_add_")
    op(tensors, value)


# --- Exactness assumptions ---------------------------------------------------------------------
# A member of an ensemble equals its run alone, bit for bit, only where torch computes a
# member's slice of a batched operation exactly as the one-member operation. Each
# assumption is checked by a function here, and tests/test_compat.py calls each one, so
# that a torch build that breaks one fails naming it (and the version) instead of as a
# mismatch somewhere in a member's history.


def check_adamw_vector_width(vector_floats: int) -> None:
    """The fused AdamW kernel runs over a tensor in vectors of ``vector_floats`` floats and
    rounds the remainder differently (:mod:`spiralmix.adamw`): a tensor of two members'
    ``vector_floats`` floats each, stepped at once, equals each member stepped alone."""
    g = torch.Generator().manual_seed(0)
    both = torch.randn(2, vector_floats, generator=g)
    grad = torch.randn(2, vector_floats, generator=g)

    def step(p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        p = p.clone().requires_grad_()
        opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.3, fused=True)
        for _ in range(3):
            p.grad = d.clone()
            opt.step()
        return p.detach()

    together = step(both, grad)
    alone = torch.cat([step(both[e : e + 1], grad[e : e + 1]) for e in range(2)])
    if not torch.equal(together, alone):
        raise LibraryChanged("torch", f"the fused AdamW kernel's {vector_floats}-float vectors")


def check_one_column_products() -> None:
    """One-logit output layers: a batched product with one output column is a matrix-vector
    product, which the BLAS may sum in another order for a batch than for one matrix.
    :class:`spiralmix.model.MemberByMemberAffine` therefore runs the forward member by
    member and relies on the batched *weight gradient* x^T·grad (E, fan_in, N)·(E, N, 1)
    giving every member its one-member product's bits."""
    g = torch.Generator().manual_seed(0)
    x, grad = torch.randn(3, 64, 32, generator=g), torch.randn(3, 64, 1, generator=g)
    batched = x.transpose(1, 2).bmm(grad)
    alone = torch.cat([x[e : e + 1].transpose(1, 2).bmm(grad[e : e + 1]) for e in range(3)])
    if not torch.equal(batched, alone):
        raise LibraryChanged(
            "torch", "the order of a batched one-column product's sums (one-logit weight gradient)"
        )


def check_mixing_arithmetic() -> None:
    """Mixing by halves (:func:`spiralmix.mixup.mix_halves`): ``a·first + b·second`` with
    per-member weights broadcast over rows equals the one-run ``λ·a + (1−λ)·b`` elementwise,
    and (1, 0) gives the rows back unchanged."""
    from spiralmix.mixup import mix, mix_halves

    g = torch.Generator().manual_seed(0)
    t, lam = torch.randn(2, 64, 32, generator=g), torch.rand(2, generator=g)
    weights = torch.stack([torch.stack([lam[0], 1 - lam[0]]), torch.tensor([1.0, 0.0])])
    out = mix_halves(t, weights.unsqueeze(-1))
    mixed = mix(t[0, :32], t[0, 32:], lam[0])
    if not (torch.equal(out[0, :32], mixed) and torch.equal(out[1], t[1])):
        raise LibraryChanged("torch", "elementwise mixing arithmetic under broadcasting")
