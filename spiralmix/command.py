"""A command line, checked before anything is written.

Hydra makes a run's folder and writes its ``.hydra/`` files before the task function runs,
so every check that can refuse a command runs here first, on the configs Hydra will
compose: the values of every run (of every job of a sweep), a rerun into a folder that
holds another run, a folder in use, a second sweep into a sweep's folder. Nothing is created
or rewritten until a command is accepted; then its folder is claimed and locked, and Hydra
gets the command with that folder named. Only Hydra and OmegaConf are imported here, so a
refusal comes back in a fraction of a second (torch loads only to read a checkpoint).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from spiralmix.compat import hydra_error_lines, plan_basic_sweep
from spiralmix.config import ConfigError, config_dir, dataset_label, register
from spiralmix.plan import plan_run
from spiralmix.rundir import RunDirError, check_free, check_writable, lock

# Keys whose values are paths: quoted for Hydra, whose grammar reads `=`, `,`, `[ ]`, spaces
# and non-ASCII letters as syntax, so that a folder is given exactly as it was printed.
PATH_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "resume")
MULTIRUN_FLAGS = ("-m", "--multirun")


class Refused(Exception):
    """A command that cannot run; the message is one line naming the key or folder."""


@dataclass
class Accepted:
    """A command that may run: Hydra's arguments and the folder it writes."""

    argv: list[str]  # for Hydra: paths quoted, a claimed folder named
    sweeping: bool
    folder: Path | None = None  # the run folder, or the sweep folder; None for --help & co.


def quote_paths(argv: list[str]) -> list[str]:
    """``resume=a/seed=1,x`` → ``resume='a/seed=1,x'``: a path as Hydra's grammar reads it."""
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in PATH_KEYS and not value.startswith(("'", '"')):
            # Hydra's quoted strings: backslashes are doubled only before a quote or the end.
            escaped = re.sub(r"(\\*)('|$)", lambda m: 2 * m[1] + "\\" * bool(m[2]) + m[2], value)
            arg = f"{key}='{escaped}'"
        quoted.append(arg)
    return quoted


def accept(argv: list[str]) -> Accepted:
    """Check a command line (``sys.argv[1:]``); raise :class:`Refused` if it cannot run."""
    register()  # the schema and resolvers the configs name
    argv = quote_paths(argv)
    sweeping = any(arg in MULTIRUN_FLAGS for arg in argv)
    overrides = [arg for arg in argv if arg not in MULTIRUN_FLAGS]
    if any(arg.startswith("-") for arg in overrides):  # --help, --cfg, -sc: Hydra's own
        return Accepted(argv, sweeping)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise Refused(": ".join(hydra_error_lines(err))) from err
    named = {o.key_or_group.lstrip("+~"): o.value() for o in parsed if not o.is_sweep_override()}
    try:
        _check_writable(named)
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            if sweeping:
                return _accept_sweep(argv, parsed, "hydra.sweep.dir" in named)
            return _accept_run(argv, overrides, "hydra.run.dir" in named)
    except (ConfigError, RunDirError) as err:  # chained: HYDRA_FULL_ERROR=1 shows the cause
        raise Refused(str(err)) from err
    except (HydraException, OmegaConfBaseException) as err:
        # Hydra's first line names the override, its cause's first line says what is wrong.
        raise Refused(": ".join(hydra_error_lines(err))) from err


def _check_writable(named: dict[str, object]) -> None:
    dirs = [str(named[k]) for k in ("hydra.sweep.dir", "hydra.run.dir") if k in named]
    if named.get("resume") is not None and Path(str(named["resume"])).exists():
        dirs.append(str(named["resume"]))  # a missing one gets its own message later
    check_writable(dirs[-1] if dirs else "outputs")


def _compose(overrides: list[str]) -> DictConfig:
    """The config Hydra composes for these overrides, its ``hydra`` node included."""
    return compose("config", overrides=overrides, return_hydra_config=True)


def _split(cfg: DictConfig) -> tuple[DictConfig, DictConfig]:
    """The task's config and Hydra's (set as the current one, for ``${hydra:...}``)."""
    HydraConfig.instance().set_config(cfg)
    hydra_cfg = HydraConfig.get()
    task = cfg.copy()
    with open_dict(task):
        del task["hydra"]
    return task, hydra_cfg


def _accept_run(argv: list[str], overrides: list[str], dir_given: bool) -> Accepted:
    full = _compose(overrides)
    cfg, hydra_cfg = _split(full)
    task = list(hydra_cfg.overrides.task)
    if cfg.resume is not None:
        plan = plan_run(cfg, cfg.resume, task)
        lock(plan.run_dir)
        return Accepted(argv, False, plan.run_dir)
    run_dir = Path(OmegaConf.select(full, "hydra.run.dir"))
    if not dir_given:  # a timestamped name: another run started in the same second gets _2
        run_dir = _free(run_dir)
    plan = plan_run(cfg, run_dir, task)
    if not dir_given:
        run_dir = _claim(run_dir)
        argv = [*argv, *quote_paths([f"hydra.run.dir={run_dir}"])]
    lock(run_dir)
    return Accepted(argv, False, run_dir)


def _accept_sweep(argv: list[str], parsed: list, dir_given: bool) -> Accepted:
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    hydra_overrides = [o.input_line for o in parsed if o.is_hydra_override()]
    shared, base = _split(_compose(plain))
    task = [o.input_line for o in parsed if not o.is_hydra_override()]
    jobs, swept = [], set()
    if str(base.sweeper.get("_target_", "")).endswith("BasicSweeper"):  # others plan as they go
        params = base.sweeper.get("params")
        params = {} if params is None else OmegaConf.to_container(params)
        jobs = plan_basic_sweep([f"{k}={v}" for k, v in params.items()] + task)
        swept = {o.key_or_group for o in parsed if o.is_sweep_override()} | set(params)
    sweep_dir = Path(base.sweep.dir)
    if dir_given:
        check_free(sweep_dir)
        _check_same_sweep(sweep_dir, task)
    configs = [_compose([*hydra_overrides, *job]) for job in jobs]
    if not dir_given:
        data = [c.data for c in configs] or [shared.data]  # Optuna & co.: the shared one
        labels = dict.fromkeys(dataset_label(d.name, d.n_classes) for d in data)
        sweep_dir = sweep_dir.with_name(f"{sweep_dir.name}_{'+'.join(labels)}")
        sweep_dir = _free(sweep_dir)
    for num, (full, job) in enumerate(zip(configs, jobs)):
        with open_dict(full):  # as the launcher sets them before naming the job's folder
            full.hydra.sweep.dir, full.hydra.job.num, full.hydra.job.id = str(sweep_dir), num, num
        cfg, _ = _split(full)
        # Named as Hydra names it after the sweep's multirun.yaml: right for the folders
        # that exist, which are the ones a plan checks against.
        try:
            job_dir = sweep_dir / str(OmegaConf.select(full, "hydra.sweep.subdir"))
        except OmegaConfBaseException:  # a name only the launcher knows: check the values
            job_dir = sweep_dir / f".job{num}"  # a folder that does not exist
        try:
            plan_run(cfg, job_dir, job)
            check_free(job_dir)  # a job folder that another process is writing
        except (ConfigError, RunDirError) as err:
            name = ",".join(o for o in job if o.split("=")[0].lstrip("+~") in swept)
            raise Refused(f"job {name or ' '.join(job)}: {err}") from err
    if not dir_given:
        sweep_dir = _claim(sweep_dir)
        argv = [*argv, *quote_paths([f"hydra.sweep.dir={sweep_dir}"])]
    lock(sweep_dir)
    return Accepted(argv, True, sweep_dir)


def _check_same_sweep(sweep_dir: Path, task: list[str]) -> None:
    """A sweep folder holds one sweep: rerunning it finishes it, another one is refused."""
    plan = sweep_dir / "multirun.yaml"
    if not plan.is_file():
        return
    before = [str(o) for o in OmegaConf.load(plan).hydra.overrides.task]
    if sorted(before) != sorted(task):
        raise Refused(
            f"{sweep_dir} holds another sweep ({' '.join(before) or 'no overrides'}); "
            "rerun that one to finish it, or choose another hydra.sweep.dir"
        )


def _free(path: Path) -> Path:
    """``path``, or ``path_2``, ``path_3``, ... : the first that does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}_{n}")
    return candidate


def _claim(path: Path) -> Path:
    """Create ``path`` (or the next free name, when another process took it meanwhile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            path = _free(path)
