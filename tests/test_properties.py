"""Property-based checks: any valid config trains; any invalid value is rejected cleanly."""

from __future__ import annotations

import math
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

from spiralmix.config import ConfigError, flatten, split_sizes, validate
from spiralmix.plan import plan_run
from spiralmix.train import train
from tests.conftest import compose_config

FAST = [
    "trainer.max_steps=20", "trainer.steps_per_call=10", "trainer.eval_every_n_steps=10",
    "trainer.checkpoint_every_n_steps=20", "trainer.progress_bar=false",
    "evaluation.grid_resolution=8", "evaluation.diagnostic_figures=false",
]  # fmt: skip
BASE = compose_config(FAST)
DATA_SETS = ["spirals", "moons", "circles", "checkerboard", "blobs"]
BASES = {name: compose_config([*FAST, f"data={name}"]) for name in DATA_SETS}
MULTI_CLASS = {"spirals", "blobs"}  # the generators that take n_classes


@st.composite
def valid_configs(draw):
    name = draw(st.sampled_from(DATA_SETS))
    cfg = BASES[name].copy()
    K = draw(st.integers(2, 5)) if name in MULTI_CLASS else 2
    cfg.data.n_classes = K
    hidden = draw(st.lists(st.integers(2, 12), min_size=1, max_size=3))
    cfg.model.hidden_dims = hidden
    cfg.regularizer.p = draw(st.floats(0.0, 0.8))
    cfg.model.lr = draw(st.floats(1e-4, 1e-2))
    cfg.regularizer.weight_decay = draw(st.floats(0.0, 1.0))
    cfg.data.n_samples = K * draw(st.integers(30, 200))
    cfg.data.noise = draw(st.floats(0.0, 0.3))
    if name == "spirals":
        cfg.data.n_cycles = draw(st.floats(0.5, 3.0))
    if name == "circles":
        cfg.data.factor = draw(st.floats(0.05, 0.95))
    if name == "checkerboard":
        cfg.data.board_size = draw(st.integers(2, 6))
    if name == "blobs":
        cfg.data.spread = draw(st.floats(0.05, 2.0))
    cfg.data.test_fraction = draw(st.floats(0.2, 0.8))
    if draw(st.booleans()):
        k_min = draw(st.integers(0, len(hidden)))
        k_max = draw(st.integers(k_min, len(hidden)))
        with open_dict(cfg.regularizer):
            cfg.regularizer._target_ = "spiralmix.regularizers.Mixup"
            cfg.regularizer.alpha = draw(st.floats(0.05, 5.0))
            cfg.regularizer.layers = draw(st.sampled_from([None, [k_min, k_max]]))
    cfg.mixup.pairing = draw(st.sampled_from(["halves", "permute"]))
    per_step = 2 if cfg.mixup.pairing == "halves" else 1
    cfg.data.batch_size = draw(st.integers(1, split_sizes(cfg)["train"] // per_step))
    cfg.seed = draw(st.integers(0, 2**31 - 1))
    return cfg


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=valid_configs())
def test_valid_configs_train_a_few_steps(cfg):
    validate(cfg)
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(cfg, run_dir)[0]
    assert result["status"] == "completed"
    assert result["steps"] == 20
    assert all(math.isfinite(v) for v in result["final"].values() if v is not None)
    assert 0 <= result["final"]["test/acc"] <= 1
    assert result["config"]["data"]["n_classes"] == cfg.data.n_classes


# One line per config key: a strategy of values that must be refused, naming the key.
# A key whose every value of its type is valid goes in ANY_VALUE_OK with the reason.
BREAKERS = {
    "data.n_samples": st.one_of(
        st.integers(-1000, 0),
        st.integers(0, 500).map(lambda n: 2 * n + 1),
        st.integers(10**9, 10**12).map(lambda n: 2 * n),  # more memory than any machine
    ),
    "data.noise": st.floats(-10.0, -1e-6),
    "data.n_cycles": st.floats(-10.0, 0.0),
    "data.test_fraction": st.one_of(st.floats(1.0, 5.0), st.floats(-5.0, 0.0)),
    "data.val_fraction": st.one_of(st.floats(1.0, 5.0), st.floats(-5.0, -1e-6)),
    "data.batch_size": st.one_of(st.integers(-100, 0), st.integers(51, 10_000)),
    "model.hidden_dims": st.one_of(
        st.just([]), st.lists(st.integers(-5, 0), min_size=1, max_size=3)
    ),
    "model.p": st.one_of(st.floats(1.0, 10.0), st.floats(-10.0, -1e-6)),
    "model.lr": st.floats(-10.0, 0.0),
    "model.weight_decay": st.floats(-10.0, -1e-6),
    "mixup.alpha": st.floats(-10.0, 0.0),
    "mixup.enabled": st.booleans(),  # moved: any value names its new place
    "regularizer.p": st.one_of(st.floats(1.0, 10.0), st.floats(-10.0, -1e-6)),
    "regularizer.weight_decay": st.floats(-10.0, -1e-6),
    "regularizer._target_": st.sampled_from(["no.such.Class", "spiralmix.step.EnsembleStep"]),
    "mixup.layers": st.one_of(
        st.tuples(st.integers(1, 3), st.integers(0, 0)).map(list),
        st.tuples(st.integers(0, 3), st.integers(4, 50)).map(list),
    ),
    "mixup.pairing": st.text(min_size=1, max_size=8).filter(
        lambda s: s not in ("halves", "permute")
    ),
    "data.n_classes": st.integers(-5, 1),
    "data._target_": st.sampled_from(["spiralmix.datasets.nothing", "no.such.module.generate"]),
    "data.factor": st.one_of(st.floats(1.0, 10.0), st.floats(-10.0, 0.0)),
    "data.board_size": st.integers(-10, 1),
    "data.spread": st.floats(-10.0, 0.0),
    "data.radius": st.floats(-10.0, 0.0),
    "data.center": st.one_of(st.just([]), st.lists(st.floats(-5, 5), min_size=3, max_size=4)),
    "trainer.max_steps": st.integers(-1000, 0),
    "trainer.eval_every_n_steps": st.one_of(st.integers(-100, 0), st.integers(11, 19)),
    "trainer.checkpoint_every_n_steps": st.one_of(st.integers(-100, 0), st.integers(21, 29)),
    "trainer.steps_per_call": st.one_of(st.integers(-100, 0), st.sampled_from([3, 7, 20])),
    "trainer.log_every_n_steps": st.integers(-100, 0),
    "trainer.torch_threads": st.integers(-100, 0),
    "trainer.accelerator": st.text(min_size=1, max_size=8).filter(
        lambda s: s not in ("cpu", "gpu", "auto")
    ),
    "evaluation.grid_resolution": st.one_of(st.integers(-100, 1), st.integers(10**6, 10**8)),
    "evaluation.ece_bins": st.integers(-100, 0),
    "evaluation.figure_seeds": st.integers(-100, -1),
    "evaluation.flatten_fraction": st.one_of(st.floats(1.0, 10.0), st.floats(-10.0, 0.0)),
    "seeds": st.one_of(st.just([]), st.integers().map(lambda s: [s, s])),
    "regularizers": st.one_of(
        st.just([]), st.sampled_from(["none", "mixup"]).map(lambda r: [r, r])
    ),
    "resume": st.text("abc/", min_size=1, max_size=10).map(lambda s: f"/nonexistent/{s}"),
}
ANY_VALUE_OK = {
    "seed": "any integer names a stream (hashed)",
    "regularizer_name": "a title set by the regularizer preset",
    "data.name": "a title: the data set's name in reports and folders",
    "trainer.progress_bar": "a bool or null (null: decided by the terminal)",
    "evaluation.temperature_scaling": "a bool (true needs validation points: data.val_fraction)",
    "evaluation.diagnostic_figures": "a bool",
}


# Keys that only some data sets have are broken on a data set that has them.
KEY_DATA_SET = {"data.factor": "circles", "data.board_size": "checkerboard", "data.spread": "blobs"}


def test_every_config_key_is_checked_or_declared_free():
    keys = {k for base in BASES.values() for k in flatten(OmegaConf.to_container(base))}
    assert keys - set(BREAKERS) - set(ANY_VALUE_OK) == set(), "add a line to BREAKERS"
    assert set(BREAKERS) | set(ANY_VALUE_OK) <= keys, "a key that no longer exists"


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(sorted(BREAKERS)), data=st.data())
def test_invalid_values_are_rejected_with_one_line_naming_the_key(key, data):
    cfg = BASES[KEY_DATA_SET.get(key, "spirals")].copy()
    value = data.draw(BREAKERS[key])
    OmegaConf.update(cfg, key, value)
    with tempfile.TemporaryDirectory() as run_dir, pytest.raises(ConfigError) as err:
        plan_run(cfg, run_dir)  # validate(), the memory estimate, resume's folder
    message = str(err.value)
    assert key in message or (key == "model.hidden_dims" and "hidden_dims" in message)
    assert "\n" not in message


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(set(DATA_SETS) - MULTI_CLASS)), K=st.integers(3, 50))
def test_more_classes_than_a_data_set_makes_are_rejected(name, K):
    cfg = BASES[name].copy()
    cfg.data.n_classes = K
    cfg.data.n_samples = 1000 * K  # a multiple of K: only the number of classes is wrong
    with pytest.raises(ConfigError, match=r"data\.n_classes") as err:
        validate(cfg)
    assert "at most 2 classes" in str(err.value) and "\n" not in str(err.value)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(MULTI_CLASS)), K=st.integers(2, 9), extra=st.integers(1, 8))
def test_a_number_of_points_that_k_does_not_divide_is_rejected(name, K, extra):
    cfg = BASES[name].copy()
    cfg.data.n_classes = K
    cfg.data.n_samples = 100 * K + extra % K if extra % K else 100 * K + 1
    with pytest.raises(ConfigError, match=r"data\.n_samples"):
        validate(cfg)
