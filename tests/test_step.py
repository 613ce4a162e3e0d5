"""The ensemble step's groups: a regularizer's members gathered by views when they are
consecutive and by index otherwise, each member's numbers its run alone's either way."""

from __future__ import annotations

from spiralmix.regularizers import Mixup, RegMixup, Regularizer
from spiralmix.step import EnsembleStep
from tests.test_controls import _assert_same_run, _chunk


def test_groups_know_whether_their_members_are_consecutive():
    step = EnsembleStep([1, 2, 3, 4, 5], [Mixup(), Regularizer(), Mixup(), RegMixup(),
                                          RegMixup()])  # fmt: skip
    spans = {group.cls: group.span for group in step.groups}
    assert spans == {Mixup: None, RegMixup: (3, 5)}  # Regularizer() does not act


def test_members_of_a_scattered_or_consecutive_group_equal_their_runs_alone():
    scattered = [Mixup(), Regularizer(), Mixup(layers=[0, 0]), RegMixup(), Mixup(layers=[1, 2])]
    consecutive = [Regularizer(), Mixup(), Mixup(layers=[0, 0]), Mixup(layers=[1, 2]),
                   RegMixup()]  # fmt: skip
    for n_classes in (2, 3):
        for regularizers in (scattered, consecutive):
            seeds = list(range(20, 20 + len(regularizers)))
            together = _chunk(regularizers, seeds, n_classes)
            for e, regularizer in enumerate(regularizers):
                alone = _chunk([regularizer], [seeds[e]], n_classes)
                _assert_same_run(together, alone, e_a=e)
