"""Tests for spiralmix.streams: counter-based named random streams."""

from __future__ import annotations

import pytest
import torch

from spiralmix.streams import permutations, stream


def draws(seed: int, name: str, block: int = 0) -> torch.Tensor:
    return torch.rand(16, generator=stream(seed, name, block))


def test_same_key_same_draws():
    assert torch.equal(draws(123, "data", 4), draws(123, "data", 4))
    assert torch.equal(draws(123, "data"), draws(123, "data", 0))


@pytest.mark.parametrize(
    "other",
    [(124, "data", 4), (123, "init", 4), (123, "data", 5), (-123, "data", 4), (4, "data", 123)],
)
def test_any_different_component_gives_different_draws(other):
    assert not torch.equal(draws(123, "data", 4), draws(*other))


def test_distinct_across_many_keys():
    keys = [(s, n, b) for s in range(5) for n in ("data", "batches", "init") for b in range(5)]
    firsts = {draws(*key)[0].item() for key in keys}
    assert len(firsts) == len(keys)


def test_each_call_is_a_fresh_generator():
    """A block's draws do not depend on how much an earlier generator was used."""
    used = stream(1, "batches", 0)
    torch.rand(1000, generator=used)
    assert torch.equal(torch.rand(16, generator=stream(1, "batches", 0)), draws(1, "batches", 0))
    assert isinstance(used, torch.Generator) and used.device.type == "cpu"


def test_permutations_are_the_argsort_of_the_streams_numbers_with_and_without_ties():
    """A chunk's batches (250 permutations of 100 training points), many chunks: chunks
    with tied keys in a row (about one in fifteen) go to argsort; the others must agree."""
    chunks_with_ties = 0
    for block in range(200):
        keys = torch.rand(250, 100, generator=stream(7, "batches", block))
        chunks_with_ties += bool((keys.sort(dim=1).values.diff(dim=1) == 0).any())
        got = permutations(250, 100, stream(7, "batches", block))
        assert torch.equal(got, keys.argsort(dim=1)), block
        assert got.dtype == torch.int64
    assert 3 <= chunks_with_ties <= 40  # both paths ran
