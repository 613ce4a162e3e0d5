"""Tests for spiralmix.data: stratified splits, the datamodule and its batches."""

from __future__ import annotations

import pytest
import torch

from spiralmix.data import SpiralDataModule, SpiralDataset, stratified_split
from spiralmix.datasets import spirals


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def row_index(rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index in ``table`` (M, 2) of each of ``rows`` (..., 2), asserting an exact match."""
    equal = (rows.reshape(-1, 1, 2) == table).all(-1)  # (n_rows, M)
    assert torch.all(equal.sum(1) == 1), "a batch point is not exactly one training point"
    return equal.int().argmax(1).reshape(rows.shape[:-1])


# --- stratified_split --------------------------------------------------------------------------


@pytest.mark.parametrize("fractions", [[0.9], [0.8, 0.1], [0.25, 0.35]])
def test_stratified_split_sizes_balance_and_cover(fractions):
    # Unbalanced classes (30 zeros, 70 ones) so that per-class rounding is visible.
    y = torch.cat([torch.zeros(30), torch.ones(70)])[torch.randperm(100, generator=gen(0))]
    parts = stratified_split(y, fractions, gen(1))
    assert len(parts) == len(fractions) + 1
    for c, n_c in ((0, 30), (1, 70)):
        expected = [round(f * n_c) for f in fractions]
        expected.append(n_c - sum(expected))
        assert [int((y[p] == c).sum()) for p in parts] == expected
    everything = torch.cat(parts)
    assert len(everything) == 100
    assert torch.equal(everything.sort().values, torch.arange(100))


def test_stratified_split_depends_on_the_seed():
    _, y = spirals(1000, generator=gen(0))
    a = stratified_split(y, [0.9], gen(1))
    b = stratified_split(y, [0.9], gen(1))
    c = stratified_split(y, [0.9], gen(2))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert set(a[1].tolist()) != set(c[1].tolist())


# --- SpiralDataset -----------------------------------------------------------------------------


def test_dataset_items():
    X, y = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
    ds = SpiralDataset(X, y)
    assert len(ds) == 5
    x2, y2 = ds[2]
    assert torch.equal(x2, X[2]) and y2.item() == 1.0 and y2.dtype == torch.float32


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (torch.randn(4, 2), torch.tensor([0.0, 1.0, 2.0, 0.0]), "class indices"),
        (torch.randn(4, 2), torch.tensor([0.0, 0.5, 1.0, 0.0]), "class indices"),
        (torch.randn(4), torch.tensor([0.0, 1.0, 1.0, 0.0]), "X"),
        (torch.randn(4, 2, 1), torch.tensor([0.0, 1.0, 1.0, 0.0]), "X"),
        (torch.randn(4, 2), torch.tensor([0.0, 1.0, 1.0]), "y"),
        (torch.randn(4, 2), torch.zeros(4, 1), "y"),
    ],
)
def test_dataset_rejects_bad_input(X, y, match):
    with pytest.raises(ValueError, match=match):
        SpiralDataset(X, y)


# --- SpiralDataModule --------------------------------------------------------------------------


def make_dm(seeds=(1,), **kwargs) -> SpiralDataModule:
    dm = SpiralDataModule(seeds=seeds, **kwargs)
    dm.setup()
    return dm


def test_default_split_is_100_train_900_test():
    dm = make_dm()
    assert dm.train_X.shape == (1, 100, 2) and dm.train_y.shape == (1, 100)
    assert dm.test_X.shape == (1, 900, 2) and dm.test_y.shape == (1, 900)
    assert dm.val_X.shape[1] == 0
    assert int(dm.train_y.sum()) == 50 and int(dm.test_y.sum()) == 450
    # The parts are disjoint and together are the whole data set.
    allX = torch.cat([dm.train_X[0], dm.test_X[0]])
    assert len(torch.unique(allX, dim=0)) == 1000


def test_validation_split():
    dm = make_dm(test_fraction=0.8, val_fraction=0.1)
    assert (dm.train_X.shape[1], dm.val_X.shape[1], dm.test_X.shape[1]) == (100, 100, 800)
    assert int(dm.val_y.sum()) == 50
    allX = torch.cat([dm.train_X[0], dm.val_X[0], dm.test_X[0]])
    assert len(torch.unique(allX, dim=0)) == 1000


def test_split_depends_on_the_seed():
    a, b, c = make_dm([1]), make_dm([1]), make_dm([2])
    assert torch.equal(a.train_X, b.train_X) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_X, c.train_X)


def test_multi_seed_member_equals_single_seed_run():
    seeds = [5, 3, 11]
    multi = make_dm(seeds)
    assert multi.train_X.shape == (3, 100, 2)
    for e, seed in enumerate(seeds):
        single = make_dm([seed])
        for name in ("train_X", "train_y", "test_X", "test_y"):
            assert torch.equal(getattr(multi, name)[e], getattr(single, name)[0]), name


@pytest.mark.parametrize(("pairing", "factor"), [("halves", 2), ("permute", 1)])
def test_chunk_shapes_and_batches_of_distinct_training_points(pairing, factor):
    S, B = 4, 8
    dm = make_dm([1, 2], batch_size=B, pairing=pairing, steps_per_call=S)
    out = dm.chunk(0)
    N = factor * B
    assert out["x"].shape == (S, 2, N, 2) and out["y"].shape == (S, 2, N)
    for e in range(2):
        idx = row_index(out["x"][:, e], dm.train_X[e])  # (S, N)
        for step in idx:
            assert len(torch.unique(step)) == N, "a point repeats within one step"
        assert torch.equal(out["y"][:, e], dm.train_y[e][idx])


def test_chunks_are_reproducible_and_differ_between_indices():
    dm = make_dm([1], batch_size=4, steps_per_call=3)
    a, b, c = dm.chunk(2), dm.chunk(2), dm.chunk(3)
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    assert not torch.equal(a["x"], c["x"])
    # Steps within a chunk draw different batches too.
    assert not torch.equal(a["x"][0], a["x"][1])


def test_multi_seed_chunk_member_equals_single_seed_chunk():
    seeds = [4, 9]
    multi = make_dm(seeds, batch_size=4, steps_per_call=3)
    for e, seed in enumerate(seeds):
        single = make_dm([seed], batch_size=4, steps_per_call=3)
        for index in (0, 7):
            m, s = multi.chunk(index), single.chunk(index)
            assert torch.equal(m["x"][:, e], s["x"][:, 0])
            assert torch.equal(m["y"][:, e], s["y"][:, 0])


def test_training_set_too_small_for_a_step_raises():
    # 100 training points; halves pairing draws 2 × 60 per step.
    with pytest.raises(ValueError, match="120"):
        make_dm(batch_size=60, pairing="halves")
    assert make_dm(batch_size=60, pairing="permute").train_X.shape[1] == 100


def test_k_classes_split_stratified_and_one_hot_batches():
    dm = make_dm([1, 2], dataset="spiralmix.datasets.spirals", n_samples=600, n_classes=3,
                 batch_size=8, steps_per_call=2)  # fmt: skip
    assert dm.train_X.shape == (2, 60, 2)
    for c in range(3):
        assert int((dm.train_y[0] == c).sum()) == 20 and int((dm.test_y[1] == c).sum()) == 180
    out = dm.chunk(0)
    assert out["y"].shape == (2, 2, 16, 3)
    idx = row_index(out["x"][:, 0], dm.train_X[0])
    assert torch.equal(out["y"][:, 0].argmax(-1), dm.train_y[0][idx].long())
    assert torch.equal(out["y"].sum(-1), torch.ones(2, 2, 16))


def test_generator_options_reach_the_generator():
    dm = make_dm(dataset="spiralmix.datasets.circles", noise=0.0, options={"factor": 0.3})
    r = dm.test_X[0].norm(dim=1)
    assert torch.allclose(r[dm.test_y[0] == 1], torch.full((450,), 0.3), atol=1e-6)
