"""The configuration schema and its checks.

The schema gives every key a type, so Hydra rejects misspelt keys and wrong types with
the key's name; ``validate`` then checks each value against its meaning before anything
is trained or written. Default values live in the YAML files under ``conf/`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

PAIRINGS = ("halves", "permute")
ACCELERATORS = ("cpu", "gpu", "auto")
MAX_SEED = 2**32 - 1  # torch.Generator.manual_seed and Lightning's seed_everything take 32 bits


def config_dir() -> Path:
    """The directory of the YAML configs: ``spiralmix/conf`` in an installed wheel, the
    checkout's top-level ``conf/`` (the one place configs are edited) otherwise."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "conf"


@dataclass
class DataConfig:
    _target_: str = MISSING  # the generator function (spiralmix.datasets)
    name: str = MISSING  # the data set's name in titles, folders and reports
    n_classes: int = MISSING  # K; two classes give one logit, K > 2 give K
    n_samples: int = MISSING  # points in all, n_samples / K per class
    noise: float = MISSING  # std of Gaussian noise added to the points
    center: list[float] = MISSING  # the noise-free data lie within radius of center;
    radius: float = MISSING  # confidence far from the data is measured 1.25-1.75 radii out
    n_cycles: float | None = None  # spirals: turns of each arm
    factor: float | None = None  # circles: inner radius / outer radius
    board_size: int | None = None  # checkerboard: cells per side
    spread: float | None = None  # blobs: std of each cluster
    test_fraction: float = MISSING  # share of each class held out for testing
    val_fraction: float = MISSING  # share of each class held out for validation
    batch_size: int = MISSING  # mixed pairs per step


@dataclass
class ModelConfig:
    hidden_dims: list[int] = MISSING
    lr: float = MISSING  # AdamW learning rate
    p: Any = None  # moved to regularizer.p (see MOVED_KEYS)
    weight_decay: Any = None  # moved to regularizer.weight_decay


@dataclass
class MixupConfig:
    pairing: str = MISSING  # halves | permute: how a step pairs points (all members)
    enabled: Any = None  # moved: the regularizer preset (regularizer=mixup)
    alpha: Any = None  # moved to regularizer.alpha
    layers: Any = None  # moved to regularizer.layers


# Keys that regularizer plugins took over: a setting of one names its new place.
MOVED_KEYS = {
    "model.p": "regularizer.p",
    "model.weight_decay": "regularizer.weight_decay",
    "mixup.enabled": "regularizer=<preset> (conf/regularizer/)",
    "mixup.alpha": "regularizer.alpha",
    "mixup.layers": "regularizer.layers",
}


@dataclass
class TrainerConfig:
    max_steps: int = MISSING
    eval_every_n_steps: int = MISSING  # evaluation, metrics and figures
    checkpoint_every_n_steps: int = MISSING
    steps_per_call: int = MISSING  # optimizer steps per Lightning training_step call
    log_every_n_steps: int = MISSING  # per-step scalars (train/loss, mixup/k, mixup/lambda)
    torch_threads: int = MISSING
    progress_bar: bool | None = MISSING  # null: a live bar on a terminal, lines otherwise
    accelerator: str = MISSING  # cpu | gpu (CUDA) | auto (CUDA if there is a device, else cpu)


@dataclass
class EvaluationConfig:
    grid_resolution: int = MISSING  # points per side of the probability grid
    ece_bins: int = MISSING
    flatten_fraction: float = MISSING  # singular values above this share of the top count
    diagnostic_figures: bool = MISSING  # reliability and spectrum figures at each evaluation
    figure_seeds: int | None = MISSING  # side by side: the first N seeds draw figures; null: all
    temperature_scaling: bool = MISSING  # fit T on the validation split (data.val_fraction > 0)


@dataclass
class Config:
    seed: int = MISSING
    seeds: list[int] | None = MISSING  # several seeds trained side by side in one process
    regularizers: list[str] | None = MISSING  # several regularizer presets side by side
    regularizer_name: str = MISSING  # set by the regularizer preset; titles and reports
    # The member's regularizer: _target_ (its class) and that class's own keys, checked by
    # spiralmix.regularizers.build.
    regularizer: dict[str, Any] = field(default_factory=dict)
    resume: str | None = MISSING  # a run directory to continue
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


def register() -> None:
    """Register the schema and the ``n_hidden`` resolver (hidden_mixup's upper layer)."""
    ConfigStore.instance().store(name="config_schema", node=Config)
    resolvers = {
        "n_hidden": lambda dims: len(dims),
        "joined": lambda names: "+".join(names),  # a sweep job's folder, e.g. none+mixup
        # data.test_fraction that holds out n_test points of n_samples (experiment=data_size).
        "test_fraction_for": lambda n_samples, n_test: n_test / n_samples,
        # hydra.run.dir and hydra.output_subdir: a resumed run continues in its own directory
        # and keeps the config it was started with.
        "resume_or": lambda resume, default: default if resume is None else resume,
        "unless_resuming": lambda resume, value: value if resume is None else None,
        "swept_dirname": swept_dirname,  # a multirun job's folder (hydra.sweep.subdir)
        "dataset_label": dataset_label,  # hydra.run.dir names the data set
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def dataset_label(name: str, n_classes: int) -> str:
    """A data set in folder names and titles: ``moons``, ``spirals_K5`` (K unless 2 or
    already in the name, as in ``spirals3``)."""
    return name if n_classes == 2 or name.endswith(str(n_classes)) else f"{name}_K{n_classes}"


def swept_keys(sweep_dir: str | Path) -> set[str] | None:
    """The keys a sweep varies, from the ``multirun.yaml`` that Hydra's launchers write
    before the first job (its sweeper's params and its sweep overrides); None without it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plan = Path(sweep_dir) / "multirun.yaml"
    if not plan.is_file():
        return None
    hydra_cfg = OmegaConf.load(plan).hydra
    params = hydra_cfg.sweeper.get("params") or {}
    parsed = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    return set(params) | {o.get_key_element() for o in parsed if o.is_sweep_override()}


def swept_dirname(sweep_dir: str, job_overrides: list[str]) -> str:
    """A multirun job's folder name: its overrides of the keys that the sweep varies, as
    Hydra's ``override_dirname`` writes them (``key=value``, sorted, comma-joined).

    Overrides that every job shares (``trainer.max_steps=2000`` given once on the command
    line) are left out. The sweep's own command line comes from ``multirun.yaml``, which
    Hydra's launchers write before the first job; without it every override is kept.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    job = OverridesParser.create().parse_overrides([str(o) for o in job_overrides])
    swept = swept_keys(sweep_dir)
    if swept is not None:
        job = [o for o in job if o.get_key_element() in swept] or job
    return ",".join(sorted(f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in job))


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and the value."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{key}={value!r} is invalid: {allowed}")
        self.key = key


def _require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _check_known_keys(cfg: DictConfig, schema: type | None = None, prefix: str = "") -> None:
    """Reject keys the schema does not know (``+key=value`` gets past Hydra's own check)."""
    known = {f.name: f for f in fields(schema or Config)}
    for key in cfg:
        _require(key in known, f"{prefix}{key}", cfg[key], "is not a spiralmix setting")
        if is_dataclass(known[key].default_factory):
            _check_known_keys(cfg[key], known[key].default_factory, f"{prefix}{key}.")


def flatten(container: dict, prefix: str = "") -> dict:
    """Nested settings as dotted keys: {'model': {'p': 0.2}} → {'model.p': 0.2}."""
    flat = {}
    for key, value in container.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def split_sizes(cfg: DictConfig) -> dict[str, int]:
    """Points per split (train, val, test) as the stratified split will make them."""
    K = cfg.data.n_classes
    per_class = cfg.data.n_samples // K
    test = round(cfg.data.test_fraction * per_class)
    val = round(cfg.data.val_fraction * per_class)
    return {"train": K * (per_class - test - val), "val": K * val, "test": K * test}


def _validate_generator(d: DictConfig) -> None:
    """The generator ``data._target_`` names exists and makes ``data.n_classes`` classes.
    Importing it imports torch: two-class runs check it last, after every cheap check."""
    from spiralmix.datasets import max_classes

    try:
        most = max_classes(d._target_)
    except ValueError as err:
        raise ConfigError("data._target_", d._target_, str(err)) from None
    _require(most is None or d.n_classes <= most, "data.n_classes", d.n_classes,
             f"data set {d.name} makes at most {most} classes")  # fmt: skip


def _validate_data_set(d: DictConfig) -> None:
    """The data set's own keys: the number of classes and its shape."""
    _require(d.n_classes >= 2, "data.n_classes", d.n_classes, "must be >= 2")
    if d.n_classes != 2:  # before the multiple check below, which it explains better
        _validate_generator(d)
    _require(
        d.n_samples > 0 and d.n_samples % d.n_classes == 0,
        "data.n_samples",
        d.n_samples,
        f"must be a positive multiple of data.n_classes={d.n_classes}",
    )
    _require(d.noise >= 0, "data.noise", d.noise, "must be >= 0")
    _require(len(d.center) == 2, "data.center", list(d.center), "must be [x, y]")
    _require(d.radius > 0, "data.radius", d.radius, "must be > 0")
    checks = {
        "n_cycles": (lambda v: v > 0, "must be > 0"),
        "factor": (lambda v: 0 < v < 1, "must be in (0, 1)"),
        "board_size": (lambda v: v >= 2, "must be >= 2 (2 is XOR)"),
        "spread": (lambda v: v > 0, "must be > 0"),
    }
    for key, (ok, allowed) in checks.items():
        _require(d[key] is None or ok(d[key]), f"data.{key}", d[key], allowed)


def _fewest_points_per_class(test_fraction: float, val_fraction: float) -> int | None:
    """The fewest points per class that these fractions split into training and test points."""
    for m in range(1, 10_001):
        test, val = round(test_fraction * m), round(val_fraction * m)
        if test > 0 and m - test - val > 0:
            return m
    return None


def _require_training_points(d: DictConfig, sizes: dict[str, int]) -> None:
    """Fractions below 1 that still leave no training point: too few points per class
    (``data.n_classes=1000`` of 1000 points), which is what the message names."""
    if sizes["train"] > 0:
        return
    per_class = d.n_samples // d.n_classes
    key, value = ("data.n_classes", d.n_classes) if d.n_classes != 2 else ("data.n_samples",
                                                                          d.n_samples)  # fmt: skip
    other = f"data.n_samples={d.n_samples}" if key == "data.n_classes" else "2 classes"
    need = _fewest_points_per_class(d.test_fraction, d.val_fraction)
    raise ConfigError(
        key, value,
        f"gives {per_class} point{'s' * (per_class != 1)} per class ({other}), which "
        f"data.test_fraction={d.test_fraction} and data.val_fraction={d.val_fraction} "
        f"split into no training points; each class needs at least {need}",
    )  # fmt: skip


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value that cannot work."""
    _check_known_keys(cfg)
    _require(0 <= cfg.seed <= MAX_SEED, "seed", cfg.seed, f"must be in 0 … {MAX_SEED}")
    d, m, mx, t, ev = cfg.data, cfg.model, cfg.mixup, cfg.trainer, cfg.evaluation
    _validate_data_set(d)
    _require(0 < d.test_fraction < 1, "data.test_fraction", d.test_fraction, "must be in (0, 1)")
    _require(0 <= d.val_fraction < 1, "data.val_fraction", d.val_fraction, "must be in [0, 1)")
    sizes = split_sizes(cfg)
    _require(
        sizes["test"] > 0,
        "data.test_fraction",
        d.test_fraction,
        f"leaves no test points out of data.n_samples={d.n_samples}",
    )
    held_out = d.test_fraction + d.val_fraction
    _require(
        held_out < 1,
        "data.test_fraction + data.val_fraction",
        round(held_out, 12),  # as the user would add them: 1.1, not 1.1000000000000001
        "must be < 1 to leave training points",
    )
    _require_training_points(d, sizes)
    _require(
        d.val_fraction == 0 or sizes["val"] > 0,
        "data.val_fraction",
        d.val_fraction,
        f"leaves no validation points out of data.n_samples={d.n_samples}",
    )
    _require(d.batch_size > 0, "data.batch_size", d.batch_size, "must be > 0")
    _require(mx.pairing in PAIRINGS, "mixup.pairing", mx.pairing, f"must be one of {PAIRINGS}")
    per_step = 2 * d.batch_size if mx.pairing == "halves" else d.batch_size
    _require(
        per_step <= sizes["train"],
        "data.batch_size",
        d.batch_size,
        f"a step draws {per_step} distinct points (pairing {mx.pairing}) "
        f"but the split leaves {sizes['train']} training points",
    )

    _require(
        len(m.hidden_dims) > 0 and all(h > 0 for h in m.hidden_dims),
        "model.hidden_dims",
        list(m.hidden_dims),
        "must be a non-empty list of positive sizes",
    )
    _require(m.lr > 0, "model.lr", m.lr, "must be > 0")
    for key, new in MOVED_KEYS.items():
        group, name = key.split(".")
        value = cfg[group][name]
        _require(value is None, key, value, f"is now {new}")
    # Every regularizer's two settings, checked here without importing its class (and torch);
    # a class checks its own keys when it is built (spiralmix.regularizers.build).
    r = cfg.regularizer
    p, decay = r.get("p", 0.0), r.get("weight_decay", 0.0)
    _require(isinstance(p, (int, float)) and 0 <= p < 1, "regularizer.p", p,
             "dropout probability must be in [0, 1)")  # fmt: skip
    _require(isinstance(decay, (int, float)) and decay >= 0, "regularizer.weight_decay", decay,
             "must be >= 0")  # fmt: skip

    for key in (
        "max_steps",
        "eval_every_n_steps",
        "checkpoint_every_n_steps",
        "steps_per_call",
        "log_every_n_steps",
        "torch_threads",
    ):
        _require(t[key] > 0, f"trainer.{key}", t[key], "must be > 0")
    for key in ("eval_every_n_steps", "checkpoint_every_n_steps"):
        _require(
            t[key] % t.steps_per_call == 0,
            f"trainer.{key}",
            t[key],
            f"must be a multiple of trainer.steps_per_call={t.steps_per_call}",
        )
    _require(t.accelerator in ACCELERATORS, "trainer.accelerator", t.accelerator,
             f"must be one of {', '.join(ACCELERATORS)}")  # fmt: skip
    if t.accelerator == "gpu":
        import torch  # only here: the other checks run before the slow imports

        _require(torch.cuda.is_available(), "trainer.accelerator", t.accelerator,
                 "no CUDA device is available (use cpu or auto)")  # fmt: skip

    _require(
        ev.grid_resolution >= 2, "evaluation.grid_resolution", ev.grid_resolution, "must be >= 2"
    )
    _require(ev.ece_bins > 0, "evaluation.ece_bins", ev.ece_bins, "must be > 0")
    _require(ev.figure_seeds is None or ev.figure_seeds >= 0, "evaluation.figure_seeds",
             ev.figure_seeds, "must be null (every member) or >= 0")  # fmt: skip
    _require(
        0 < ev.flatten_fraction < 1,
        "evaluation.flatten_fraction",
        ev.flatten_fraction,
        "must be in (0, 1)",
    )
    _require(
        not ev.temperature_scaling or sizes["val"] > 0,
        "evaluation.temperature_scaling",
        ev.temperature_scaling,
        "fits the temperature on validation points, never test points: set data.val_fraction "
        "> 0 (and lower data.test_fraction to keep the training points)",
    )
    if cfg.regularizers is not None:
        names = list(cfg.regularizers)
        _require(len(names) > 0 and len(set(names)) == len(names), "regularizers", names,
                 "must be null or a non-empty list of distinct regularizer presets")  # fmt: skip
    if cfg.seeds is not None:
        seeds = list(cfg.seeds)
        _require(
            len(seeds) > 0 and len(set(seeds)) == len(seeds),
            "seeds",
            seeds,
            "must be null or a non-empty list of distinct integers",
        )
        for seed in seeds:
            _require(0 <= seed <= MAX_SEED, "seeds", seeds, f"{seed} is not in 0 … {MAX_SEED}")
    _validate_generator(d)
