"""Regularizers as plugins: one class each, named by ``conf/regularizer/<name>.yaml``.

See :mod:`spiralmix.regularizers.base` for what a regularizer states, and README.md
("Writing a regularizer") for a complete example.
"""

from __future__ import annotations

import inspect

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from spiralmix.config import ConfigError
from spiralmix.regularizers.base import Dropout, Regularizer, StepContext, WeightDecay
from spiralmix.regularizers.controls import (
    KernelMixup,
    LabelSmoothing,
    LocalMixup,
    MixupIO,
    NoisyMixup,
    RegMixup,
)
from spiralmix.regularizers.mixup import Mixup

__all__ = [
    "Dropout",
    "KernelMixup",
    "LabelSmoothing",
    "LocalMixup",
    "Mixup",
    "MixupIO",
    "NoisyMixup",
    "RegMixup",
    "Regularizer",
    "StepContext",
    "WeightDecay",
    "build",
]


def build(cfg: DictConfig) -> Regularizer:
    """The member's regularizer from its config's ``regularizer`` node, checked; a bad
    ``_target_``, an unknown key or a bad value raise :class:`ConfigError` naming it."""
    node = cfg.regularizer
    target = node.get("_target_")
    try:
        cls = get_class(target)
    except Exception as err:  # noqa: BLE001  Hydra raises several kinds
        raise ConfigError("regularizer._target_", target, str(err).splitlines()[0]) from None
    if not (inspect.isclass(cls) and issubclass(cls, Regularizer)):
        raise ConfigError("regularizer._target_", target,
                          "must name a subclass of spiralmix.regularizers.Regularizer")  # fmt: skip
    known = set(inspect.signature(cls).parameters)
    for key in node:
        if key != "_target_" and key not in known:
            raise ConfigError(f"regularizer.{key}", node[key], f"is not a setting of {target}")
    try:
        regularizer = instantiate(node, _convert_="all")
    except InstantiationException as err:
        raise ConfigError("regularizer", target, str(err).splitlines()[-1]) from None
    regularizer.check(len(cfg.model.hidden_dims))
    return regularizer
