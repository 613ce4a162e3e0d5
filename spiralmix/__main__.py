"""Command line: Hydra's entry point around :func:`spiralmix.train.train`.

spiralmix                                             # no regularization, seed 123
spiralmix regularizer=mixup trainer.max_steps=20000   # or python -m spiralmix ...
spiralmix -m regularizer=none,mixup seed=123,124
spiralmix resume=outputs/2026-01-01/12-00-00_mixup_seed123
spiralmix --help                                      # config groups and examples
tensorboard --logdir outputs
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from spiralmix.compat import hydra_error_lines
from spiralmix.config import ConfigError, config_dir, register
from spiralmix.plan import plan_run, resolve_resume
from spiralmix.rundir import RunDirError, check_writable

register()
errors = logging.getLogger("spiralmix.errors")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:  # check the config before the slow imports, and before anything is written
        plan = plan_run(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))
        from spiralmix.train import fit

        results = fit(plan, list(hydra_cfg.overrides.task))  # RunDirError: folder in use
    except (ConfigError, RunDirError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"spiralmix: error: {err}", file=sys.stderr)
        if sweeping:  # the other jobs go on; the report lists this one as not finished
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


def check_overrides(argv: list[str]) -> None:
    """Compose a single run's config up front, so that a misspelt key, a wrong type or an
    unknown preset ends with one line naming it instead of Hydra's multi-line report.
    Sweeps (-m) and other flags are left to Hydra, after a check that the output folder
    can be written (Hydra would fail there with a traceback)."""
    named = ("hydra.run.dir=", "hydra.sweep.dir=", "resume=")
    dirs = [arg.split("=", 1)[1] for arg in argv if arg.startswith(named)]
    # A resume folder that does not exist gets its own message below.
    dirs = [d for d in dirs if f"resume={d}" not in argv or Path(d).exists()]
    try:
        check_writable(dirs[-1] if dirs else "outputs")
    except RunDirError as err:
        print(f"spiralmix: error: {err}", file=sys.stderr)
        sys.exit(2)
    if any(arg.startswith("-") for arg in argv) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=argv)
        if cfg.resume is not None:  # before Hydra makes the folder it names
            resolve_resume(cfg)
    except ConfigError as err:
        print(f"spiralmix: error: {err}", file=sys.stderr)
        sys.exit(2)
    except (HydraException, OmegaConfBaseException) as err:
        # Hydra's first line names the override, its cause's first line says what is wrong.
        print(f"spiralmix: error: {': '.join(hydra_error_lines(err))}", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    """The ``spiralmix`` command (and ``python -m spiralmix``)."""
    check_overrides(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
