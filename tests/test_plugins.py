"""A regularizer from outside the package: one class and one YAML, found through
``hydra.searchpath``; alone and in a mixed ensemble, its member is its run alone, bit for bit."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from spiralmix.train import train
from tests.conftest import CONF_DIR, TINY

PLUGIN = '''
from dataclasses import dataclass

import torch

from spiralmix.config import ConfigError
from spiralmix.regularizers import Regularizer


@dataclass
class LabelSmoothing(Regularizer):
    """Targets moved towards the uniform distribution over K classes by epsilon."""

    epsilon: float = 0.1

    def check(self, n_hidden: int) -> None:
        super().check(n_hidden)
        if not 0 <= self.epsilon <= 1:
            raise ConfigError("regularizer.epsilon", self.epsilon, "must be in [0, 1]")

    def draw(self, n_steps, context, generator):
        return {"epsilon": torch.full((n_steps,), float(self.epsilon))}  # per member

    @classmethod
    def targets(cls, y, draw, context):
        eps = draw["epsilon"].view(-1, *[1] * (y.ndim - 1))  # (E', 1) or (E', 1, 1)
        return y * (1 - eps) + eps / context.n_classes
'''

PRESET = """\
# @package _global_
regularizer_name: smooth_labels
regularizer:
  _target_: my_regularizers.LabelSmoothing
  epsilon: 0.2
"""


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """my_regularizers.py on sys.path and conf/regularizer/smooth_labels.yaml beside it."""
    (tmp_path / "my_regularizers.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "conf" / "regularizer").mkdir(parents=True)
    (tmp_path / "conf" / "regularizer" / "smooth_labels.yaml").write_text(PRESET)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_regularizers", None)


def _train(run_dir: Path, plugin_dir: Path, overrides: list[str]) -> list[dict]:
    overrides = [*TINY, f"hydra.searchpath=[file://{plugin_dir / 'conf'}]", *DATA, *overrides]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return train(compose("config", overrides=overrides), run_dir, overrides)


KEYS = ("status", "steps", "final", "best", "history")
# Three classes: K logits. (With one logit, the output layer's batched weight gradient is a
# matrix-vector product whose summation order this CPU's BLAS may choose differently for one
# member and for many: see spiralmix/compat.py.)
DATA = ["data=spirals3"]


def test_a_regularizer_from_outside_the_package_trains_alone_and_in_a_mixed_ensemble(
    tmp_path, plugin_dir
):
    alone = _train(tmp_path / "alone", plugin_dir, ["regularizer=smooth_labels", "seed=5"])[0]
    none = _train(tmp_path / "none", plugin_dir, ["regularizer=none", "seed=5"])[0]
    assert alone["regularizer"] == "smooth_labels"
    assert alone["config"]["regularizer"]["epsilon"] == 0.2
    assert alone["final"] != none["final"]  # the plugin changes training
    together = _train(
        tmp_path / "together", plugin_dir,
        ["regularizers=[none,smooth_labels,mixup]", "seeds=[4,5]"],
    )  # fmt: skip
    member = together[3]
    assert (member["regularizer"], member["seed"]) == ("smooth_labels", 5)
    for key in KEYS:
        assert member[key] == alone[key], key
    for key in KEYS:
        assert together[1][key] == none[key], key  # its neighbour: unchanged by the plugin


def test_a_plugin_setting_is_checked_by_its_class(tmp_path, plugin_dir):
    from spiralmix.config import ConfigError

    with pytest.raises(ConfigError, match=r"regularizer\.epsilon"):
        _train(tmp_path, plugin_dir, ["regularizer=smooth_labels", "regularizer.epsilon=2"])
    assert not list(tmp_path.rglob("metrics.json"))
