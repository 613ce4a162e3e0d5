"""Finding a sweep's runs: completed runs, failed or unfinished ones, and what each varies.

A sweep directory holds one Hydra job directory per job (it has ``.hydra/config.yaml``). A
job trains one seed (``<job>/metrics.json``) or several side by side
(``<job>/seed=<N>/metrics.json``). Jobs still running, crashed or never started are listed
by name, never dropped silently.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from spiralmix.config import MOVED_KEYS, flatten, split_sizes
from spiralmix.metrics import effective_rank
from spiralmix.plan import FREE_ON_RESUME, PER_MEMBER_PREFIX, member_dirs

log = logging.getLogger(__name__)

MISSING = "–"
# Rows follow the order of the reference table; other names come after, alphabetically.
CANONICAL = ("none", "weight_decay", "dropout", "mixup", "input_mixup", "hidden_mixup")
# Overrides that name a run's seed or regularizer rather than a different configuration.
NOT_A_VARIANT = ("seed", "seeds", "regularizer", "regularizers", "regularizer_name", "resume")
# Saved settings that say which member a run is, or that do not change its numbers.
NOT_A_SETTING = (*NOT_A_VARIANT, *FREE_ON_RESUME)


def is_regularizer_key(key: str) -> bool:
    """Whether a preset defines this setting (dropout's regularizer.p, mixup's
    regularizer.alpha, ...; model.p and mixup.* in runs from before regularizers were
    plugins): such keys differ between regularizers by definition and are a setting only
    where one regularizer's runs differ in them (a search over regularizer.alpha)."""
    return key.startswith(PER_MEMBER_PREFIX) or key in MOVED_KEYS


# More differing settings than this and the report refuses: one folder, one question.
MAX_SETTINGS = 3


class ReportError(Exception):
    """The sweep directory holds nothing to report on (the message says why)."""


@dataclass
class Run:
    """One seed's completed training run: a metrics.json with status "completed"."""

    name: str  # its directory relative to the sweep directory
    group: str  # the row it belongs to: regularizer, plus other settings that differ
    regularizer: str
    seed: int
    metrics: dict[str, Any]
    boundary: dict[str, Any] | None  # boundary.pt's tensors; None when missing or unreadable
    settings: dict[str, str] = field(default_factory=dict)  # swept key → value, as overridden
    path: Path | None = None  # its folder, for tensorboard --logdir

    def value(self, section: str, key: str) -> float | None:
        """metrics[section][key] as a float, None when absent (older runs, no val split)."""
        value = self.metrics.get(section, {}).get(key)
        return None if value is None else float(value)


@dataclass
class Problem:
    """A run without usable results: failed, unfinished or crashed, or never started."""

    name: str  # its directory (or, never started, its overrides) relative to the sweep
    status: str  # "failed", "unfinished" or "never started"
    regularizer: str
    seed: str  # a seed, a list of seeds or "–"
    reason: str
    group: str | None = None


@dataclass
class Job:
    """A Hydra job directory: its config and its command-line overrides."""

    path: Path
    config: DictConfig
    overrides: dict[str, str]  # key → value as given on the command line

    def expected_metrics(self) -> list[tuple[Path, int | None]]:
        """Where each of the job's runs writes metrics.json, with that run's seed."""
        cfg = OmegaConf.merge({"seed": None, "seeds": None, "regularizers": None}, self.config)
        seeds = list(cfg.seeds) if cfg.seeds is not None else [cfg.seed]
        # member_dirs lists regularizers × seeds with the seed varying fastest.
        dirs = member_dirs(cfg, self.path)
        return [(d / "metrics.json", seeds[i % len(seeds)]) for i, d in enumerate(dirs)]


def _parse_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def _load_jobs(sweep_dir: Path) -> list[Job]:
    jobs = []
    for config_path in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        job_dir = config_path.parent.parent
        try:
            config = OmegaConf.load(config_path)
        except Exception as err:  # a half-written config still marks a job that started
            log.warning("cannot read %s: %s", config_path, err)
            config = OmegaConf.create({})
        overrides_path = job_dir / ".hydra" / "overrides.yaml"
        overrides = {}
        if overrides_path.is_file():
            overrides = dict(_parse_override(str(o)) for o in OmegaConf.load(overrides_path))
        jobs.append(Job(job_dir, config, overrides))
    return jobs


def _varying_keys(
    override_sets: Sequence[dict[str, str]], exclude: Sequence[str] = ()
) -> list[str]:
    """Override keys whose value differs between jobs, in command-line order."""
    keys = list(dict.fromkeys(k for o in override_sets for k in o))
    return [
        k
        for k in keys
        if k not in exclude
        and not k.startswith("hydra")
        and len({o.get(k) for o in override_sets}) > 1
    ]


def _group_name(regularizer: str, settings: dict[str, str]) -> str:
    """The row name: the regularizer, with any other setting (mixup (mixup.alpha=1))."""
    extra = [f"{k}={v}" for k, v in settings.items()]
    return f"{regularizer} ({', '.join(extra)})" if extra else regularizer


def _text(value: Any) -> str:
    """A saved setting as it would be written on the command line: 0.001, 1, [32, 32], spirals."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def saved_settings(metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's saved config (metrics.json "config") as dotted keys, without the keys that say
    which seed or regularizer it is; {} for runs from before configs were saved."""
    config = metrics.get("config")
    if not isinstance(config, dict):
        return {}
    return {k: v for k, v in flatten(config).items() if k not in NOT_A_SETTING}


def _determined(key: str, by: Sequence[str], runs: Sequence[tuple[str, dict, dict]]) -> bool:
    """Whether the saved value of key is the same in all runs that agree on the settings
    ``by`` (and, for a regularizer's own key, on the regularizer)."""
    seen: dict[tuple, str] = {}
    for regularizer, saved, shown in runs:
        if key not in saved:
            continue
        cell = tuple(shown.get(k, saved.get(k)) for k in by)
        cell += (regularizer,) if is_regularizer_key(key) else ()
        if seen.setdefault(cell, _text(saved[key])) != _text(saved[key]):
            return False
    return True


def _setting_keys(runs: Sequence[tuple[str, dict, dict]], swept: Sequence[str]) -> list[str]:
    """The settings that tell the runs apart: the swept overrides, then every saved setting
    that differs between runs and is not fixed by them (data=moons fixes data.name,
    data.n_classes, ...); a regularizer's own key only where one regularizer's runs differ."""
    keys = list(swept)
    saved_keys = dict.fromkeys(k for _, saved, _ in runs for k in saved)
    for key in saved_keys:
        if key not in keys and not _determined(key, swept, runs):
            keys.append(key)
    if len(keys) > MAX_SETTINGS:
        extra = keys[MAX_SETTINGS]
        values = sorted({_text(saved[extra]) for _, saved, _ in runs if extra in saved})
        raise ReportError(
            f"runs differ in {extra} ({', '.join(values)}) as well as in "
            f"{', '.join(keys[:MAX_SETTINGS])}: report such sweeps one folder at a time"
        )
    return keys


def _settings_of(
    regularizer: str, saved: dict, overrides: dict[str, str], keys: Sequence[str],
    varies_within: dict[str, set[str]],
) -> dict[str, str]:  # fmt: skip
    """The run's value of each setting key: as on its command line where it was given there,
    else as saved in its config (so a run given no model.lr still shows which it used)."""
    out = {}
    for key in keys:
        if is_regularizer_key(key) and regularizer not in varies_within.get(key, set()):
            continue  # e.g. dropout's regularizer.p: a setting of the preset, not of the run
        if key in overrides:
            out[key] = overrides[key]
        elif key in saved:
            out[key] = _text(saved[key])
    return out


def _planned_jobs(sweep_dir: Path) -> list[dict[str, str]] | None:
    """Every job's overrides as Hydra's basic sweeper plans them; None when unknown.

    multirun.yaml is written before the first job starts, so this also names jobs that an
    interrupted sweep never reached. Other sweepers (Optuna) plan as they go: None.
    """
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        # Hydra's own planning, so that the strings match each job's overrides.yaml exactly.
        from spiralmix.compat import plan_basic_sweep

        hydra_cfg = OmegaConf.load(path).hydra
        if not str(hydra_cfg.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None
        params = hydra_cfg.sweeper.get("params")
        params = {} if params is None else OmegaConf.to_container(params)
        arguments = [f"{k}={v}" for k, v in params.items()] + list(hydra_cfg.overrides.task)
        batch = plan_basic_sweep(arguments)
    except Exception as err:  # without a plan only the "never started" list is lost
        log.debug("cannot re-plan the sweep from %s: %s", path, err)
        return None
    return [dict(_parse_override(o) for o in job) for job in batch]


def _relative(path: Path, root: Path) -> str:
    name = path.relative_to(root).as_posix()
    return root.name if name == "." else name


def _nearest_job(path: Path, jobs_by_dir: dict[Path, Job], root: Path) -> Job | None:
    for parent in (path, *path.parents):
        if parent in jobs_by_dir:
            return jobs_by_dir[parent]
        if parent == root:
            return None
    return None


def _load_boundary(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:  # a broken file costs one figure panel, not the report
        log.warning("cannot read %s: %s", path, err)
        return None


def _add_effective_ranks(metrics: dict[str, Any], boundary: dict[str, Any] | None) -> None:
    """Fill in flatten/layer{k}/effective_rank from boundary.pt's final spectra where the
    metrics lack it (sweeps older than the metric): the mean over the classes, as logged."""
    final = metrics.setdefault("final", {})
    for layer, spectrum in enumerate((boundary or {}).get("spectra", [])):
        key = f"flatten/layer{layer}/effective_rank"
        if key not in final:
            value = float(effective_rank(spectrum.double()).mean())  # (classes, D) → one
            final[key] = value if math.isfinite(value) else None


# Settings that change how many points a run trains on; the curve shows that number instead.
SPLIT_KEYS = ("data.n_samples", "data.test_fraction", "data.val_fraction")
TRAINING_POINTS = "training points"


def _with_training_points(settings: dict[str, str], metrics: dict[str, Any]) -> dict[str, str]:
    """Replace swept split settings by the number of training points they leave (from the
    run's resolved config), so that a data-size sweep is drawn against what it varies."""
    data = metrics.get("config", {}).get("data")
    if not any(k in settings for k in SPLIT_KEYS) or not isinstance(data, dict):
        return settings
    try:
        # Runs from before K-class data sets have two classes and no data.n_classes.
        n_train = split_sizes(OmegaConf.create({"data": {"n_classes": 2, **data}}))["train"]
    except Exception:  # an older config without these keys: keep the settings as swept
        return settings
    kept = {k: v for k, v in settings.items() if k not in SPLIT_KEYS}
    return {TRAINING_POINTS: str(n_train), **kept}


def _failure_reason(metrics: dict[str, Any]) -> str:
    reason = f"status {metrics.get('status', 'missing')!r}"
    if metrics.get("error"):
        reason += f": {metrics['error']}"
    step = metrics.get("failed_step")
    if step is not None and f"step {step}" not in reason:
        reason += f" (at step {step})"
    return reason


def collect(sweep_dir: Path) -> tuple[list[Run], list[Problem], list[Job]]:
    """Completed runs, problems (failed, unfinished, never started) and jobs of a sweep.

    Every setting of every run's saved config is compared: one that differs between runs
    becomes a setting of their rows (a facet or the axis), so that runs are pooled over seeds
    and paired only where they are equal in everything but seed and regularizer. Raises
    ReportError when more than MAX_SETTINGS settings differ.
    """
    jobs = _load_jobs(sweep_dir)
    jobs_by_dir = {job.path: job for job in jobs}
    planned = _planned_jobs(sweep_dir)
    swept = _varying_keys(planned or [job.overrides for job in jobs], NOT_A_VARIANT)

    loaded, problems = [], []
    for path in sorted(sweep_dir.rglob("metrics.json")):
        name = _relative(path.parent, sweep_dir)
        job = _nearest_job(path.parent, jobs_by_dir, sweep_dir)
        try:
            metrics = json.loads(path.read_text())
            regularizer = str(metrics["regularizer"])
            seed = int(metrics["seed"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            problems.append(
                Problem(name, "failed", MISSING, MISSING, f"unreadable metrics.json: {err}")
            )
            continue
        overrides = job.overrides if job is not None else {}
        loaded.append((path, name, regularizer, seed, metrics, overrides))

    described = [(r, saved_settings(m), o) for _, _, r, _, m, o in loaded]
    keys = _setting_keys(described, swept)
    varies_within: dict[str, set[str]] = {}
    for key in dict.fromkeys(k for _, saved, shown in described for k in (*saved, *shown)):
        if not is_regularizer_key(key):
            continue
        for regularizer in {r for r, _, _ in described}:
            values = {
                o[key] if key in o else _text(s[key])
                for r, s, o in described
                if r == regularizer and (key in s or key in o)
            }
            if len(values) > 1:
                varies_within.setdefault(key, set()).add(regularizer)

    runs = []
    for (path, name, regularizer, seed, metrics, overrides), (_, saved, _) in zip(
        loaded, described
    ):
        settings = _settings_of(regularizer, saved, overrides, keys, varies_within)
        group = _group_name(regularizer, settings)
        if metrics.get("status") != "completed":
            reason = _failure_reason(metrics)
            problems.append(Problem(name, "failed", regularizer, str(seed), reason, group))
            continue
        boundary = _load_boundary(path.parent / "boundary.pt")
        _add_effective_ranks(metrics, boundary)
        settings = _with_training_points(settings, metrics)
        runs.append(
            Run(name, group, regularizer, seed, metrics, boundary, settings, path.parent.resolve())
        )

    for job in jobs:
        regularizer = str(job.config.get("regularizer_name", MISSING))
        shown = {k: job.overrides[k] for k in swept if k in job.overrides}
        for path, seed in job.expected_metrics():
            if not path.is_file():
                problems.append(
                    Problem(
                        _relative(path.parent, sweep_dir),
                        "unfinished",
                        regularizer,
                        MISSING if seed is None else str(seed),
                        "no metrics.json (unfinished or crashed)",
                        _group_name(regularizer, shown),
                    )
                )

    if planned is not None:
        started = [job.overrides for job in jobs]
        swept_all = _varying_keys(planned)
        for overrides in planned:
            if overrides not in started:
                name = ",".join(f"{k}={overrides[k]}" for k in swept_all or overrides)
                seed = overrides.get("seeds", overrides.get("seed", MISSING))
                regularizer = overrides.get("regularizer", MISSING)
                problems.append(Problem(name, "never started", regularizer, seed, "never started"))
    return runs, problems, jobs


def is_number(text: str) -> bool:
    """Whether an override value reads as a number (a curve axis) rather than a name (a facet)."""
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf")


def split_settings(runs: Sequence[Run]) -> tuple[str | None, list[str]]:
    """The swept keys of the completed runs: the curve axis and the facets.

    The first numeric key that varies (data.n_samples, mixup.alpha, ...) is the axis; every
    other varying key (data.name, a second numeric key) is a facet: its own table and figure row.
    """
    keys = list(dict.fromkeys(k for run in runs for k in run.settings))
    varying = [k for k in keys if len({run.settings.get(k) for run in runs}) > 1]
    numeric = [k for k in varying if all(is_number(r.settings.get(k, "nan")) for r in runs
                                         if k in r.settings)]  # fmt: skip
    axis = numeric[0] if numeric else None
    return axis, [k for k in varying if k != axis]
