"""TensorBoard's HPARAMS tab: each run's settings, those that tell runs apart first.

TensorBoard orders the tab's columns by hparam name and shows the first five by default,
whatever order they were written in. Each hparam is therefore named by its place
(``00 regularizer_name``) and displayed by its config key, so that the order of the
settings given here is the order of the columns.
"""

from __future__ import annotations

from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams


def hparams_summaries(params: dict, results: dict[str, float]) -> list[Summary]:
    """The experiment, session-start and session-end summaries of one run, its ``params``
    (config key → scalar) in the tab in the order given, its ``results`` as metrics."""
    width = len(str(len(params) - 1))
    names = {f"{place:0{width}d} {key}": key for place, key in enumerate(params)}
    experiment, start, end = hparams({name: params[k] for name, k in names.items()}, results)
    value = experiment.value[0]
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.display_name = names[info.name]
    value.metadata.plugin_data.content = data.SerializeToString()
    return [experiment, start, end]
