"""Tests for spiralmix.config: the real YAML configs composed by Hydra, the schema, validate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from spiralmix import regularizers
from spiralmix.config import MOVED_KEYS, ConfigError, register, split_sizes, swept_dirname, validate
from spiralmix.data import SpiralDataModule

CONF_DIR = str(Path(__file__).parents[1] / "conf")
REGULARIZERS = ["none", "weight_decay", "dropout", "mixup", "input_mixup", "hidden_mixup"]


@pytest.fixture(scope="module")
def hydra_conf():
    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield


@pytest.fixture(scope="module")
def make_cfg(hydra_conf):
    """Compose the real config with command-line overrides; each set is composed once."""
    cache: dict[tuple[str, ...], DictConfig] = {}

    def make(*overrides: str) -> DictConfig:
        if overrides not in cache:
            cache[overrides] = compose("config", overrides=list(overrides))
        return cache[overrides].copy()

    return make


@pytest.fixture(scope="module")
def base_cfg(hydra_conf) -> DictConfig:
    return compose("config")


@pytest.fixture
def with_overrides(base_cfg):
    """The default config with dotlist overrides merged in: the schema still checks types, and
    it is much faster than composing again for each case (see the compose tests above)."""

    def make(*overrides: str) -> DictConfig:
        return OmegaConf.merge(base_cfg, OmegaConf.from_dotlist(list(overrides)))

    return make


# --- the presets -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REGULARIZERS)
def test_every_regularizer_composes_and_validates(make_cfg, name):
    cfg = make_cfg(f"regularizer={name}")
    validate(cfg)
    assert cfg.regularizer_name == name


def test_defaults_are_the_reference_experiment(make_cfg):
    cfg = make_cfg()
    assert cfg.data.n_samples == 1000 and cfg.data.batch_size == 32
    assert split_sizes(cfg) == {"train": 100, "val": 0, "test": 900}
    assert list(cfg.model.hidden_dims) == [32, 32, 32]
    assert cfg.model.lr == 1e-3 and cfg.regularizer.weight_decay == 0 and cfg.regularizer.p == 0
    assert cfg.regularizer._target_ == "spiralmix.regularizers.Regularizer"
    assert cfg.trainer.max_steps == 100_000 and cfg.trainer.eval_every_n_steps == 2500


def test_weight_decay_preset(make_cfg):
    cfg = make_cfg("regularizer=weight_decay")
    assert cfg.regularizer.weight_decay == 0.6 and cfg.regularizer.p == 0
    assert cfg.regularizer._target_ == "spiralmix.regularizers.WeightDecay"


def test_dropout_preset(make_cfg):
    cfg = make_cfg("regularizer=dropout")
    assert cfg.regularizer.p == 0.2 and cfg.regularizer.weight_decay == 0
    assert cfg.regularizer._target_ == "spiralmix.regularizers.Dropout"


def test_mixup_preset_mixes_at_every_layer(make_cfg):
    cfg = make_cfg("regularizer=mixup")
    assert cfg.regularizer._target_ == "spiralmix.regularizers.Mixup"
    assert cfg.regularizer.layers is None and cfg.regularizer.alpha == 2.0
    # null means 0..n_hidden: the regularizer resolves it.
    assert regularizers.build(cfg).layer_range(n_hidden=3) == (0, 3)


def test_input_mixup_preset(make_cfg):
    cfg = make_cfg("regularizer=input_mixup")
    assert list(regularizers.build(cfg).layers) == [0, 0]


@pytest.mark.parametrize(
    ("hidden_dims", "layers"), [(None, [1, 3]), ("[16,16]", [1, 2]), ("[8,8,8,8,8]", [1, 5])]
)
def test_hidden_mixup_preset_follows_the_depth(make_cfg, hidden_dims, layers):
    overrides = ["regularizer=hidden_mixup"]
    if hidden_dims is not None:
        overrides.append(f"model.hidden_dims={hidden_dims}")
    cfg = make_cfg(*overrides)
    validate(cfg)
    built = regularizers.build(cfg)
    assert list(built.layers) == layers and all(isinstance(k, int) for k in built.layers)


def test_debug_trainer_validates(make_cfg):
    cfg = make_cfg("trainer=debug", "regularizer=mixup")
    validate(cfg)
    assert cfg.trainer.max_steps <= 1000


# --- schema errors -----------------------------------------------------------------------------


def test_misspelt_key_is_rejected_with_its_name(make_cfg):
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException), match="n_sample"):
        make_cfg("data.n_sample=3")


@pytest.mark.parametrize("override", ["seed=abc", "mixup.pairing=[1]"])
def test_wrong_type_is_rejected(make_cfg, override):
    key = override.split("=")[0].split(".")[-1]
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException)) as info:
        make_cfg(override)
    text = str(info.value) + str(info.value.__cause__)
    assert key in text


# --- validate ----------------------------------------------------------------------------------

BAD_VALUES = [
    (["model.p=1.0"], "model.p"),
    (["model.p=-0.1"], "model.p"),
    (["model.weight_decay=-1"], "model.weight_decay"),
    (["model.lr=0"], "model.lr"),
    (["model.lr=-1"], "model.lr"),
    (["data.n_samples=999"], "data.n_samples"),
    (["data.n_samples=0"], "data.n_samples"),
    (["data.n_samples=-2"], "data.n_samples"),
    (["data.noise=-0.1"], "data.noise"),
    (["data.test_fraction=1.0"], "data.test_fraction"),
    (["data.test_fraction=0.0"], "data.test_fraction"),
    (["data.test_fraction=0.95", "data.val_fraction=0.1"], "data.val_fraction"),
    (["mixup.alpha=0"], "mixup.alpha"),
    (["mixup.alpha=-1"], "mixup.alpha"),
    (["mixup.layers=[2,1]"], "mixup.layers"),
    (["mixup.layers=[0,4]"], "mixup.layers"),
    (["mixup.layers=[-1,0]"], "mixup.layers"),
    (["mixup.layers=[1]"], "mixup.layers"),
    (["model.hidden_dims=[]"], "model.hidden_dims"),
    (["model.hidden_dims=[32,0]"], "model.hidden_dims"),
    (["trainer.max_steps=0"], "trainer.max_steps"),
    (["data.batch_size=0"], "data.batch_size"),
    (["trainer.eval_every_n_steps=0"], "trainer.eval_every_n_steps"),
    (["trainer.eval_every_n_steps=333"], "trainer.eval_every_n_steps"),
    (["data.batch_size=60"], "data.batch_size"),
    (["mixup.pairing=other"], "mixup.pairing"),
    (["seeds=[1,1]"], "seeds"),
    (["trainer.accelerator=tpu"], "trainer.accelerator"),
    (["evaluation.temperature_scaling=true"], "evaluation.temperature_scaling"),  # no val split
]


@pytest.mark.parametrize(("overrides", "key"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_validate_rejects_bad_values_naming_the_key(with_overrides, overrides, key):
    cfg = with_overrides(*overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize(("override", "key"), [("mixup.layers=[-1,0]", "mixup.layers")])
def test_validate_rejects_a_bad_command_line_override(make_cfg, override, key):
    with pytest.raises(ConfigError, match=key):
        validate(make_cfg(override))


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.batch_size=60", "mixup.pairing=permute"],
        ["data.batch_size=50"],
        ["seeds=[1,2,3]"],
        ["data.test_fraction=0.8", "data.val_fraction=0.1"],
    ],
)
def test_validate_accepts_edge_values(with_overrides, overrides):
    validate(with_overrides(*overrides))


@pytest.mark.parametrize(
    ("n_samples", "test_fraction", "val_fraction"),
    [(1000, 0.9, 0.0), (1000, 0.8, 0.1), (10, 0.5, 0.25), (30, 0.35, 0.3), (998, 0.7, 0.15)],
)
def test_split_sizes_match_the_datamodule(with_overrides, n_samples, test_fraction, val_fraction):
    cfg = with_overrides(
        f"data.n_samples={n_samples}",
        f"data.test_fraction={test_fraction}",
        f"data.val_fraction={val_fraction}",
        "data.batch_size=1",
    )
    dm = SpiralDataModule(
        seeds=[cfg.seed],
        n_samples=cfg.data.n_samples,
        test_fraction=cfg.data.test_fraction,
        val_fraction=cfg.data.val_fraction,
        batch_size=cfg.data.batch_size,
    )
    dm.setup()
    made = {name: getattr(dm, f"{name}_y").shape[1] for name in ("train", "val", "test")}
    assert split_sizes(cfg) == made
    assert sum(made.values()) == n_samples


# --- data sets ---------------------------------------------------------------------------------

DATA_SETS = {"spirals": 2, "spirals3": 3, "moons": 2, "circles": 2, "checkerboard": 2, "blobs": 2}


@pytest.mark.parametrize(("name", "K"), DATA_SETS.items())
def test_every_data_set_composes_and_validates(make_cfg, name, K):
    cfg = make_cfg(f"data={name}", "regularizer=mixup")
    validate(cfg)
    assert cfg.data.name == name and cfg.data.n_classes == K
    assert cfg.data._target_.startswith("spiralmix.datasets.")
    sizes = split_sizes(cfg)
    assert sum(sizes.values()) == cfg.data.n_samples and sizes["train"] >= 64


BAD_DATA = [
    (["data.n_classes=1"], "data.n_classes"),
    (["data.n_classes=0"], "data.n_classes"),
    (["data=moons", "data.n_classes=3"], "data.n_classes"),
    (["data=circles", "data.n_classes=4"], "data.n_classes"),
    (["data=checkerboard", "data.n_classes=3"], "data.n_classes"),
    (["data=checkerboard", "data.board_size=1"], "data.board_size"),
    (["data=circles", "data.factor=1.0"], "data.factor"),
    (["data=circles", "data.factor=0"], "data.factor"),
    (["data=circles", "data.factor=-0.5"], "data.factor"),
    (["data=moons", "data.noise=-0.1"], "data.noise"),
    (["data=blobs", "data.spread=0"], "data.spread"),
    (["data=spirals3", "data.n_samples=1000"], "data.n_samples"),
    (["data.n_cycles=0"], "data.n_cycles"),
    (["data.radius=0"], "data.radius"),
    (["data.center=[1.0]"], "data.center"),
    (["data._target_=spiralmix.datasets.nothing"], "data._target_"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD_DATA, ids=[" ".join(o) for o, _ in BAD_DATA])
def test_bad_data_set_values_are_rejected_naming_the_key(make_cfg, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        validate(make_cfg(*overrides))
    assert "\n" not in str(err.value)


def test_k_classes_where_the_data_set_has_them(make_cfg):
    for overrides in (["data=blobs", "data.n_classes=5"], ["data=spirals3"],
                      ["data.n_classes=5", "data.n_samples=2500"]):  # fmt: skip
        validate(make_cfg(*overrides))


def test_the_datasets_preset_trains_every_data_set_and_regularizer(make_cfg):
    cfg = make_cfg("experiment=datasets")
    validate(cfg)
    assert sorted(cfg.regularizers) == sorted(REGULARIZERS)
    assert len(cfg.seeds) == 10


@pytest.mark.parametrize(("n_samples", "n_train"), [(920, 20), (1000, 100), (1700, 800)])
def test_data_size_preset_keeps_the_test_set_fixed(make_cfg, n_samples, n_train):
    cfg = make_cfg("experiment=data_size", f"data.n_samples={n_samples}")
    validate(cfg)
    assert split_sizes(cfg) == {"train": n_train, "val": 0, "test": 900}
    assert cfg.seeds == list(range(1, 11)) and cfg.trainer.max_steps == 10_000


def test_data_size_preset_rejects_fewer_points_than_the_test_set(make_cfg):
    with pytest.raises(ConfigError, match=r"data\.test_fraction=1\.125 is invalid"):
        validate(make_cfg("experiment=data_size", "data.n_samples=800"))


def test_noise_and_compare_presets_validate(make_cfg):
    cfg = make_cfg("experiment=noise", "data.noise=0.3")
    validate(cfg)
    assert cfg.data.noise == 0.3 and len(cfg.seeds) == 10
    assert len(make_cfg("experiment=compare").seeds) == 10


# --- multirun job folders --------------------------------------------------------------------


def test_job_folder_names_only_what_the_sweep_varies(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      mixup.alpha: 0.5,2\n"
        "  overrides:\n    task: ['seed=1,2', trainer.max_steps=2000, regularizer=mixup]\n"
    )
    job = ["seed=2", "trainer.max_steps=2000", "regularizer=mixup", "mixup.alpha=0.5"]
    assert swept_dirname(str(tmp_path), job) == "mixup.alpha=0.5,seed=2"
    # Without the sweep's plan, or with nothing swept, every override names the folder.
    assert swept_dirname(str(tmp_path / "none"), job[:2]) == "seed=2,trainer.max_steps=2000"
    assert swept_dirname(str(tmp_path), ["trainer.max_steps=2000"]) == "trainer.max_steps=2000"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA has no such error")
def test_gpu_without_cuda_is_rejected(make_cfg):
    with pytest.raises(ConfigError, match="trainer.accelerator='gpu' is invalid: no CUDA"):
        validate(make_cfg("trainer.accelerator=gpu"))


# --- regularizer plugins -----------------------------------------------------------------------

BAD_REGULARIZER_VALUES = [
    (["regularizer=dropout", "regularizer.p=1.0"], "regularizer.p"),
    (["regularizer.p=-0.1"], "regularizer.p"),
    (["regularizer.weight_decay=-1"], "regularizer.weight_decay"),
    (["regularizer=mixup", "regularizer.alpha=0"], "regularizer.alpha"),
    (["regularizer=mixup", "regularizer.layers=[2,1]"], "regularizer.layers"),
    (["regularizer=mixup", "regularizer.layers=[0,4]"], "regularizer.layers"),
    (["regularizer=mixup", "regularizer.layers=[1]"], "regularizer.layers"),
    (["+regularizer.alpha=1"], "regularizer.alpha"),  # not a setting of the none preset
    (["regularizer._target_=spiralmix.nothing.Here"], "regularizer._target_"),
    (["regularizer._target_=spiralmix.step.EnsembleStep"], "regularizer._target_"),
]


@pytest.mark.parametrize(
    ("overrides", "key"),
    BAD_REGULARIZER_VALUES,
    ids=[" ".join(o) for o, _ in BAD_REGULARIZER_VALUES],
)
def test_regularizer_rejects_bad_values_naming_the_key(make_cfg, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        regularizers.build(make_cfg(*overrides))


@pytest.mark.parametrize(("moved", "new"), list(MOVED_KEYS.items()))
def test_a_moved_key_names_its_new_place(with_overrides, moved, new):
    value = "true" if moved == "mixup.enabled" else "0.5"
    with pytest.raises(ConfigError, match=re.escape(new)) as info:
        validate(with_overrides(f"{moved}={value}"))
    assert info.value.key == moved


def test_regularizer_accepts_edge_values(make_cfg):
    built = regularizers.build(make_cfg("regularizer=mixup", "regularizer.layers=[3,3]"))
    assert built.layer_range(3) == (3, 3) and built.p == 0.0
