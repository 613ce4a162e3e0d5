"""TensorBoard's HPARAMS tab: the regularizer, the data set and the seed lead, then what the
command line set; every setting has one name in every run, so runs line up in one table."""

from __future__ import annotations

from tensorboard.plugins.hparams.backend_context import _sort_and_reduce_to_hparams_limit
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from spiralmix.hparams import Hparams, hparams_summaries

# What the tab shows before anything is ticked (tf-hparams-query-pane: the first five).
SHOWN_BY_DEFAULT = 5
OTHER = {"data._target_": "spiralmix.datasets.moons", "data.batch_size": 32,
         **{f"model.key{i}": i for i in range(12)}}  # fmt: skip


def columns(params: dict) -> tuple[list[str], dict]:
    """The tab's columns for a run, in TensorBoard's own order, and its hparam values."""
    experiment, start, _ = hparams_summaries(params, {"test/acc": 0.9})
    shown = HParamsPluginData.FromString(experiment.value[0].metadata.plugin_data.content)
    _sort_and_reduce_to_hparams_limit(shown.experiment)  # differs first, then by name
    session = HParamsPluginData.FromString(start.value[0].metadata.plugin_data.content)
    return [h.display_name for h in shown.experiment.hparam_infos], dict(
        session.session_start_info.hparams
    )


def test_the_regularizer_data_set_seed_then_the_swept_keys_are_the_columns_shown():
    values = {"regularizer_name": "mixup", "data.name": "moons", "seed": 3, "mixup.alpha": 0.5,
              "trainer.max_steps": 100, **OTHER}  # fmt: skip
    params = Hparams(values, first=["trainer.max_steps", "mixup.alpha"])
    shown, _ = columns(params)
    assert shown[:SHOWN_BY_DEFAULT] == [
        "regularizer_name", "data.name", "seed", "mixup.alpha", "trainer.max_steps"]  # fmt: skip
    assert sorted(shown) == sorted(values)  # every setting, once
    assert shown[SHOWN_BY_DEFAULT:] == sorted(OTHER)  # by name: TensorBoard's order


def test_a_setting_has_the_same_name_in_runs_of_different_commands():
    one = Hparams({"regularizer_name": "none", "data.name": "moons", "seed": 1, "model.p": 0.1,
                   "trainer.max_steps": 100}, first=["model.p"])  # fmt: skip
    two = Hparams(
        {
            "regularizer_name": "mixup",
            "data.name": "circles",
            "seed": 2,
            "trainer.max_steps": 200,
            "model.p": 0.0,
        },
        first=["trainer.max_steps"],
    )
    _, values_one = columns(one)
    _, values_two = columns(two)
    assert set(values_one) == set(values_two)  # one column per setting across both
    assert values_one["2 seed"].number_value == 1 and values_two["2 seed"].number_value == 2
    assert values_two["0 regularizer_name"].string_value == "mixup"
    assert values_two["trainer.max_steps"].number_value == 200
