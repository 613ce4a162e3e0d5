"""The 2-unit bottleneck preset (Verma et al. 2019, Figure 1) and its hidden-space figure."""

from __future__ import annotations

import torch
from hydra import initialize_config_dir
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spiralmix.evaluation import Evaluations
from spiralmix.train import build_datamodule, build_module, evaluation_settings, train
from tests.conftest import CONF_DIR, TINY, compose_config, members

TAG = "bottleneck/hidden_space"


def _image_steps(run_dir) -> dict[str, list[int]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return {tag: [event.step for event in acc.Images(tag)] for tag in acc.Tags()["images"]}


def test_preset_composes_three_regularizers_with_a_2_unit_bottleneck():
    cfg = compose_config(["experiment=bottleneck"])
    assert list(cfg.model.hidden_dims) == [32, 32, 2]
    assert list(cfg.regularizers) == ["none", "input_mixup", "mixup"]
    assert list(cfg.seeds) == [123]
    # hidden_mixup's upper layer still counts the hidden layers, the bottleneck included.
    hidden = compose_config(["experiment=bottleneck", "regularizer=hidden_mixup"])
    assert OmegaConf.to_container(hidden.regularizer, resolve=True)["layers"] == [1, 3]


def test_bottleneck_run_logs_the_hidden_space_of_each_member_at_every_evaluation(tmp_path):
    overrides = [*TINY, "experiment=bottleneck"]
    cfg = compose_config(overrides)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        results = train(cfg, tmp_path, overrides)
    assert [r["status"] for r in results] == ["completed"] * 3
    for name in ("none", "input_mixup", "mixup"):
        steps = _image_steps(tmp_path / f"regularizer={name},seed=123")
        assert steps[TAG] == [0, 100, 200], name


def test_wide_last_hidden_layer_logs_no_hidden_space(tmp_path):
    train(compose_config([*TINY, "model.hidden_dims=[32,32]", "trainer.max_steps=100"]), tmp_path)
    steps = _image_steps(tmp_path)
    assert steps["boundary/probability"] == [0, 100]
    assert TAG not in steps


def test_hidden_codes_are_the_training_points_after_the_last_hidden_layer():
    cfg = compose_config(["experiment=bottleneck", "evaluation.grid_resolution=20"])
    runs = members(cfg, [1, 2])
    module, dm = build_module(runs), build_datamodule(runs)
    dm.setup()
    latest = Evaluations(module.net, dm, evaluation_settings(cfg), every_n_steps=1).measure(0)
    with torch.no_grad():
        codes = module.net(dm.train_X, 0, module.net.n_hidden)
    assert codes.shape == (2, dm.train_X.shape[1], 2)
    assert torch.equal(latest.hidden_codes, codes)
    # The hidden grid covers the codes, and its probabilities are the classifier's there.
    grid = latest.hidden_grid
    assert grid.shape == (2, 20 * 20, 2)
    assert (grid.amin(1) < codes.amin(1)).all() and (grid.amax(1) > codes.amax(1)).all()
    expected = torch.sigmoid(module.net(grid, module.net.n_hidden))
    assert torch.allclose(latest.hidden_grid_p, expected)
