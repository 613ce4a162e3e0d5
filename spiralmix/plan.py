"""What one process trains: its members (one run each), their configs and directories.

A plain run has one member. ``seeds=[...]`` and ``regularizers=[...]`` make a process train
every (regularizer, seed) pair side by side as one vectorized ensemble; each member's config
is exactly what ``python -m spiralmix regularizer=<r> seed=<s> <other overrides>`` would
compose, and each writes its own directory, TensorBoard run and metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from spiralmix.compat import hydra_error_lines
from spiralmix.config import Config, ConfigError, flatten, validate
from spiralmix.memory import check_memory
from spiralmix.rundir import Checkpoint, finished_metrics, readable_checkpoint

# What may differ between members of one process: the seed and the regularizer (its class
# and every key of it); everything else (data, model size, learning rate, pairing, trainer,
# evaluation) is shared.
PER_MEMBER_KEYS = ("seed", "seeds", "regularizer_name", "regularizers", "resume")
PER_MEMBER_PREFIX = "regularizer."
MEMBER_OVERRIDES = ("regularizer", "regularizers", "seed", "seeds", "resume")
# Settings a run may change when it continues in its folder: they do not change results.
FREE_ON_RESUME = ("resume", "trainer.progress_bar", "trainer.torch_threads")


@dataclass
class RunPlan:
    members: list[DictConfig]  # one full config per member
    dirs: list[Path]  # where each member writes
    run_dir: Path
    checkpoint: Checkpoint | None  # the checkpoint to resume from
    finished: list[dict] | None = None  # the members' metrics when they ended before
    notes: list[str] = field(default_factory=list)  # checkpoints that could not be read


def plan_run(cfg: DictConfig, run_dir: Path | str, overrides: list[str] = ()) -> RunPlan:
    """Check ``cfg`` and expand it into members; raise :class:`ConfigError` if anything is off.

    ``overrides`` are the command line's (Hydra's ``overrides.task``); they are re-applied
    to each regularizer preset when ``cfg.regularizers`` is set, which needs Hydra's global
    state (inside ``@hydra.main`` or ``initialize_config_dir``).
    """
    checkpoint, notes = None, []
    if cfg.resume is not None:
        run_dir = cfg.resume
        cfg, overrides, checkpoint, notes = resolve_resume(cfg, overrides)
    validate(cfg)
    run_dir = Path(run_dir)
    if cfg.regularizers is None:
        presets = [cfg]
    else:
        presets = [_compose_preset(name, overrides) for name in cfg.regularizers]
    seeds = list(cfg.seeds) if cfg.seeds is not None else [cfg.seed]
    # Here, not at the top: a plugin's module imports torch, which a refusal never needs.
    from spiralmix import regularizers

    members = []
    for preset in presets:
        for seed in seeds:
            member = preset.copy()
            member.seed, member.seeds, member.regularizers = seed, None, None
            validate(member)
            regularizers.build(member)  # its own keys, checked by its class
            members.append(member)
    _check_shared(members)
    check_memory(members)
    dirs = member_dirs(cfg, run_dir)
    # Rerunning a command into its own folder (a sweep with the same hydra.sweep.dir, a
    # requeued cluster job) finishes it: ended members are kept, the rest resume.
    finished = finished_metrics(dirs)
    if finished is not None:
        _check_same_run(members, [m["config"] for m in finished], run_dir)
        return RunPlan(members, dirs, run_dir, None, finished, notes)
    if checkpoint is None:
        checkpoint, notes = readable_checkpoint(run_dir / "checkpoints")
        if checkpoint is not None:
            _check_same_run(members, checkpoint.run_configs, run_dir)
    return RunPlan(members, dirs, run_dir, checkpoint, None, notes)


def _check_same_run(members: list[DictConfig], saved: list[dict] | None, run_dir: Path) -> None:
    """A folder continues only the run it holds: same members, same settings."""
    if saved is None:
        return  # a checkpoint from before configs were saved in it
    for member, old in zip(members, saved):
        _refuse_a_change(_settings(member), flatten(old), run_dir,
                         "continue it with the same settings or choose another folder")  # fmt: skip
    if len(saved) != len(members):
        raise ConfigError("seeds", [m.seed for m in members],
                          f"{run_dir} holds a run of {len(saved)} members")  # fmt: skip


def member_dirs(cfg: DictConfig, run_dir: Path) -> list[Path]:
    """The run directory for a single member; otherwise a folder per member named after
    what varies, e.g. ``seed=124`` or ``regularizer=mixup,seed=124``."""
    seeds = list(cfg.seeds) if cfg.seeds is not None else [cfg.seed]
    if cfg.regularizers is not None:
        return [run_dir / f"regularizer={r},seed={s}" for r in cfg.regularizers for s in seeds]
    if cfg.seeds is not None:
        return [run_dir / f"seed={s}" for s in seeds]
    return [run_dir]


def _compose_preset(name: str, overrides: list[str]) -> DictConfig:
    kept = [o for o in overrides if o.lstrip("+~").split("=")[0] not in MEMBER_OVERRIDES]
    try:
        return compose("config", overrides=[*kept, f"regularizer={name}"])
    except HydraException as err:  # an unknown preset: the line lists the available ones
        available = hydra_error_lines(err)[-1].removeprefix("available").split()
        allowed = f"no such preset; available: {', '.join(available)}"
        raise ConfigError("regularizers", name, allowed) from None


def _settings(cfg: DictConfig) -> dict:
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def _check_shared(members: list[DictConfig]) -> None:
    first = _settings(members[0])
    for member in members[1:]:
        for key, value in _settings(member).items():
            shared = key not in PER_MEMBER_KEYS and not key.startswith(PER_MEMBER_PREFIX)
            if shared and value != first.get(key):
                raise ConfigError(
                    "regularizers", member.regularizer_name,
                    f"changes {key} ({first[key]!r} → {value!r}); runs trained side by side "
                    "may differ only in seed and regularizer.*",
                )  # fmt: skip


def resolve_resume(
    cfg: DictConfig, overrides: list[str] = ()
) -> tuple[DictConfig, list[str], Checkpoint, list[str]]:
    """For ``resume=<run dir>``: that run's saved config, its overrides, the newest readable
    checkpoint and a line for each unreadable one skipped.

    ``overrides`` (the command line's) may change only ``FREE_ON_RESUME`` settings; one
    that would change the run is refused, as a rerun into its folder is.
    """
    run_dir = Path(cfg.resume)
    hydra_dir = run_dir / ".hydra"
    if not (hydra_dir / "config.yaml").is_file():
        raise ConfigError("resume", cfg.resume, "is not a run directory (no .hydra/config.yaml)")
    saved = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(hydra_dir / "config.yaml"))
    saved.resume = None
    overrides_file = hydra_dir / "overrides.yaml"
    saved_overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    _check_resume_overrides(cfg, saved, saved_overrides, overrides, run_dir)
    checkpoint, notes = readable_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        found = f" ({notes[0].split(';')[0]})" if notes else " (checkpoints/last.ckpt)"
        raise ConfigError("resume", cfg.resume, f"has no readable checkpoint{found}")
    return saved, saved_overrides, checkpoint, notes


def _first_difference(now: dict, before: dict) -> str | None:
    """The first setting in which ``now`` changes a run saved as ``before``, in the order a
    refusal names them (the preset's name first, then alphabetical); keys free on resume,
    and keys one side lacks (added since), do not count."""
    shared = sorted(set(now) & set(before), key=lambda key: (key != "regularizer_name", key))
    return next((k for k in shared if k not in FREE_ON_RESUME and now[k] != before[k]), None)


def _refuse_a_change(now: dict, before: dict, run_dir: Path, advice: str) -> None:
    """ConfigError naming the first setting in which ``now`` changes the run saved in
    ``run_dir`` as ``before``, and what to do instead."""
    key = _first_difference(now, before)
    if key is not None:
        raise ConfigError(
            key, now[key], f"{run_dir} holds a run with {key}={before[key]!r}; {advice}"
        )


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _check_resume_overrides(
    cfg: DictConfig, saved: DictConfig, saved_overrides: list[str], overrides: list[str],
    run_dir: Path,
) -> None:  # fmt: skip
    """Refuse overrides next to ``resume=`` that change the run; apply the free ones."""
    extra = [o for o in overrides if _override_key(o) not in FREE_ON_RESUME]
    if extra:
        asked = compose("config", overrides=[*saved_overrides, *extra])
        _refuse_a_change(_settings(asked), _settings(saved), run_dir,
                         "resume= continues it as it was started (leave the override out, or "
                         "start a new run)")  # fmt: skip
    for override in overrides:
        key = _override_key(override)
        if key in FREE_ON_RESUME and key != "resume":
            OmegaConf.update(saved, key, OmegaConf.select(cfg, key))
