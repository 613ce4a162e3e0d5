"""TensorBoard's HPARAMS tab: the settings that tell runs apart, first and shown.

TensorBoard sorts the tab's columns by (not ``differs``, name), whatever order they were
written in, and shows the first five before any is ticked. Runs of different commands
share one logdir, so a setting keeps one name in every run (the tab lines values up by
name): the regularizer, the data set and the seed are named ``0 regularizer_name``,
``1 data.name`` and ``2 seed`` (displayed by their keys) and always lead; the run's own
swept keys are marked as differing and come next; every other key follows by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams

LEADING = ("regularizer_name", "data.name", "seed")


class Hparams(dict):
    """A run's hparams, config key → scalar, and the keys to mark as differing (``first``:
    what its command line set, such as a sweep's keys)."""

    def __init__(self, values: dict, first: Sequence[str] = ()) -> None:
        super().__init__(values)
        self.first = tuple(k for k in first if k in values)


def hparam_name(key: str) -> str:
    """A setting's name in every run's hparams: ``2 seed`` for the leading ones, else the key."""
    return f"{LEADING.index(key)} {key}" if key in LEADING else key


def hparams_summaries(params: dict, results: dict[str, float]) -> list[Summary]:
    """The experiment, session-start and session-end summaries of one run: its ``params``
    (an :class:`Hparams` or a plain dict) as hparams, its ``results`` as metrics."""
    first = {*LEADING, *getattr(params, "first", ())}
    names = {hparam_name(key): key for key in params}
    experiment, start, end = hparams({name: params[k] for name, k in names.items()}, results)
    value = experiment.value[0]
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.display_name = names[info.name]
        info.differs = names[info.name] in first
    value.metadata.plugin_data.content = data.SerializeToString()
    return [experiment, start, end]
