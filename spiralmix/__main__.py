"""Command line: Hydra's entry point around :func:`spiralmix.train.train`.

spiralmix                                             # no regularization, seed 123
spiralmix regularizer=mixup trainer.max_steps=20000   # or python -m spiralmix ...
spiralmix -m regularizer=none,mixup seed=123,124
spiralmix resume=outputs/2026-01-01/12-00-00_spirals_mixup_seed123
spiralmix --help                                      # config groups and examples
tensorboard --logdir outputs
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from spiralmix.command import Accepted, Refused, accept
from spiralmix.config import ConfigError, config_dir, register, swept_keys
from spiralmix.plan import plan_run
from spiralmix.rundir import RunDirError

if TYPE_CHECKING:  # imported when a command is accepted: it loads Lightning
    from spiralmix.stopping import StopRequest

register()
errors = logging.getLogger("spiralmix.errors")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    try:  # checked again: the command line checked it, a launcher's process did not
        plan = plan_run(cfg, hydra_cfg.runtime.output_dir, overrides)
        from spiralmix.train import fit

        shown = overrides  # the keys TensorBoard's HPARAMS tab shows first
        if sweeping:  # what the sweep varies, not what its jobs share
            swept = swept_keys(hydra_cfg.sweep.dir)
            if swept is not None:
                shown = [o for o in overrides if o.lstrip("+~").split("=")[0] in swept]
        results = fit(plan, shown)  # RunDirError: folder in use
    except (ConfigError, RunDirError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"spiralmix: error: {err}", file=sys.stderr)
        if sweeping:  # the other jobs go on; the sweep's exit status says one did not
            return None
        sys.exit(2)
    failed = [r for r in results if r["status"] != "completed"]
    if failed and not sweeping:  # in a sweep the other jobs go on
        for r in failed:  # on stderr, and into the run's spiralmix.log
            errors.error(f"spiralmix: error: seed {r['seed']}: {r['error']}")
        sys.exit(1)
    # A sweeper that optimises (Optuna) minimises this value.
    losses = [
        r.get("final", {}).get("val/loss", r.get("final", {}).get("test/loss")) for r in results
    ]
    return None if None in losses else sum(losses) / len(losses)


def _program() -> str:
    return "python -m spiralmix" if sys.argv[0].endswith("__main__.py") else "spiralmix"


def _stopped_line(accepted: Accepted, argv: list[str], request: StopRequest) -> str:
    """Where a signal stopped the command, and the command that finishes it."""
    if accepted.sweeping:
        again = [a for a in argv if not a.startswith("hydra.sweep.dir=")]
        finish = shlex.join([*again, f"hydra.sweep.dir={accepted.folder}"])
        job = _running_job(accepted.folder, request)
        at = "" if request.step is None else f" at step {request.step:,}"
        return (
            f"spiralmix: stopped by {request.name} in {job}{at}; the jobs "
            f"that finished are kept, the one running resumes from its checkpoint; "
            f"finish it with: {_program()} {finish}"
        )
    from spiralmix.rundir import readable_checkpoint

    checkpoint, _ = readable_checkpoint(accepted.folder / "checkpoints")
    at = "" if request.step is None else f" at step {request.step:,}"
    if checkpoint is None:
        return (
            f"spiralmix: stopped by {request.name}{at}, before the first checkpoint; "
            f"run the command again to start over"
        )
    finish = shlex.join([f"resume={accepted.folder}"])
    return (
        f"spiralmix: stopped by {request.name}{at}; {checkpoint.path} holds step "
        f"{checkpoint.step:,}; finish it with: {_program()} {finish}"
    )


def _running_job(sweep_dir: Path, request: StopRequest) -> str:
    """The job of the sweep that trained last, as ``job seed=2 of the sweep <dir>``."""
    try:
        job = request.folder.absolute().relative_to(sweep_dir.absolute())
    except (ValueError, AttributeError):  # stopped before the first job trained
        return f"the sweep {sweep_dir}"
    return f"job {job} of the sweep {sweep_dir}"


def _sweep_status(sweep_dir: Path) -> int:
    """0 when every run of the sweep completed; otherwise 1, with one line that counts them
    (the report in the sweep folder names each one's reason)."""
    from spiralmix.report import ReportError, collect

    try:
        runs, problems, _ = collect(sweep_dir)
    except ReportError as err:
        print(f"spiralmix: error: {err}", file=sys.stderr)
        return 1
    if not problems:
        return 0
    first = problems[0]
    print(
        f"spiralmix: error: {len(problems)} of {len(runs) + len(problems)} runs did not "
        f"complete (first: {first.name}: {first.reason}); see {sweep_dir / 'report.md'}",
        file=sys.stderr,
    )
    return 1


def _write_report(sweep_dir: Path) -> None:
    from spiralmix.report import write_report

    try:
        report = write_report(sweep_dir, "none")
    except Exception as err:  # nothing finished yet, say
        print(f"spiralmix: no report for {sweep_dir} ({err})", file=sys.stderr)
        return
    print(report.summary, flush=True)


def cli(argv: list[str] | None = None) -> None:
    """The ``spiralmix`` command (and ``python -m spiralmix``): checks the command line,
    then hands it to Hydra. Exits 2 on a refused command, 1 when a run or a sweep's job
    did not complete, 130 or 143 when SIGINT or SIGTERM stopped it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        accepted = accept(argv)
    except Refused as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"spiralmix: error: {err}", file=sys.stderr)
        sys.exit(2)
    if accepted.folder is None:  # --help, --cfg, ...: Hydra's own
        sys.argv = [sys.argv[0], *accepted.argv]
        main()
        return
    from spiralmix.stopping import stop_on_signals

    sys.argv = [sys.argv[0], *accepted.argv]
    with stop_on_signals() as request:
        try:
            main()
        except BaseException:
            if request.signum is None:
                raise
    if request.signum is not None:
        if accepted.sweeping:
            _write_report(accepted.folder)
        print(_stopped_line(accepted, argv, request), file=sys.stderr, flush=True)
        sys.exit(request.exit_code)
    if accepted.sweeping:
        sys.exit(_sweep_status(accepted.folder))


if __name__ == "__main__":
    cli()
