"""TensorBoard's HPARAMS tab shows the settings that tell runs apart, in the order given."""

from __future__ import annotations

from tensorboard.plugins.hparams.backend_context import _sort_and_reduce_to_hparams_limit
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from spiralmix.hparams import hparams_summaries

# What the tab shows before anything is ticked (tf-hparams-query-pane: the first five).
SHOWN_BY_DEFAULT = 5


def test_the_tab_orders_columns_as_given_where_tensorboard_sorts_by_name():
    params = {"regularizer_name": "mixup", "data.name": "moons", "seed": 3, "mixup.alpha": 0.5,
              "data._target_": "spiralmix.datasets.moons", "data.batch_size": 32,
              **{f"model.key{i}": i for i in range(12)}}  # fmt: skip
    experiment, start, _ = hparams_summaries(params, {"test/acc": 0.9})
    data = HParamsPluginData.FromString(experiment.value[0].metadata.plugin_data.content)
    shown = data.experiment
    _sort_and_reduce_to_hparams_limit(shown)  # TensorBoard's own order: differs, then name
    assert [h.display_name for h in shown.hparam_infos] == list(params)
    assert [h.display_name for h in shown.hparam_infos][:SHOWN_BY_DEFAULT] == [
        "regularizer_name", "data.name", "seed", "mixup.alpha", "data._target_"]  # fmt: skip
    session = HParamsPluginData.FromString(start.value[0].metadata.plugin_data.content)
    values = session.session_start_info.hparams
    assert {h.name: h.display_name for h in shown.hparam_infos}["00 regularizer_name"] == (
        "regularizer_name")  # fmt: skip
    assert values["00 regularizer_name"].string_value == "mixup"
    assert values["02 seed"].number_value == 3
