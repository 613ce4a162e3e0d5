"""The ensemble step (spiralmix.step): mixing layers, pairings, ensemble members."""

from __future__ import annotations

import pytest
import torch

from spiralmix import metrics
from spiralmix.step import Draws, EnsembleStep
from spiralmix.train import build_module
from tests.conftest import REGULARIZERS, compose_config, members

LAYER_RANGES = {"mixup": (0, 3), "input_mixup": (0, 0), "hidden_mixup": (1, 3)}


@pytest.mark.parametrize("regularizer", REGULARIZERS)
def test_mixing_layer_stays_in_configured_range(regularizer):
    cfg = compose_config([f"regularizer={regularizer}"])
    draws = step(cfg, [1, 2, 3]).draw(chunk=0)
    if regularizer not in LAYER_RANGES:
        assert draws.groups == []
        return
    k_min, k_max = LAYER_RANGES[regularizer]
    (mixup,) = draws.groups
    k = mixup["k"]
    assert k.shape == (cfg.trainer.steps_per_call, 3)
    assert set(k.unique().tolist()) == set(range(k_min, k_max + 1))
    assert ((mixup["lam"] > 0) & (mixup["lam"] < 1)).all()


def test_hidden_mixup_range_follows_the_number_of_hidden_layers():
    cfg = compose_config(["regularizer=hidden_mixup", "model.hidden_dims=[8,8,8,8,8]"])
    assert set(step(cfg, [1]).draw(0).groups[0]["k"].unique().tolist()) == {1, 2, 3, 4, 5}


def step(cfg, seeds: list[int]) -> EnsembleStep:
    """The ensemble step of ``cfg`` for these seeds."""
    return build_module(members(cfg, seeds)).ensemble


def mixing(k: list[int], lam: torch.Tensor) -> Draws:
    """One step's draws for an ensemble whose members all mix: layers k, weights lam."""
    return Draws([{"k": torch.tensor(k), "lam": lam}])


def _batch(module, n_rows: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(module.n_members, n_rows, 2, generator=gen)
    y = (torch.rand(module.n_members, n_rows, generator=gen) > 0.5).float()
    return x, y


@pytest.mark.parametrize(
    "overrides",
    [
        ["regularizer=mixup"],
        ["regularizer=mixup", "mixup.pairing=permute"],
        ["regularizer=mixup", "regularizer.p=0.3"],
        ["regularizer=hidden_mixup", "regularizer.p=0.3", "mixup.pairing=permute"],
        ["regularizer=dropout"],
    ],
)
def test_ensemble_member_loss_equals_single_run_loss(overrides):
    """Members mixing at different layers in one step get exactly their own loss."""
    cfg = compose_config(overrides)
    seeds = [11, 12, 13, 14, 15, 16]
    ensemble = step(cfg, seeds)
    draws = ensemble.draw(chunk=3, n_steps=20)
    n_rows = 64 if cfg.mixup.pairing == "halves" else 32
    singles = [step(cfg, [seed]) for seed in seeds]
    own = [single.draw(chunk=3, n_steps=20) for single in singles]
    for s in range(20):
        x, y = _batch(ensemble, n_rows, seed=s)
        loss = ensemble.loss(x, y, draws.step(s))
        for e, single in enumerate(singles):
            expected = single.loss(x[e : e + 1], y[e : e + 1], own[e].step(s))
            assert torch.equal(loss[e : e + 1], expected), (s, e)


def test_input_mixup_with_lambda_one_trains_on_the_first_half():
    cfg = compose_config(["regularizer=input_mixup"])
    module = step(cfg, [1])
    x, y = _batch(module, 64)
    expected = metrics.binary_nll(module.net(x[:, :32]), y[:, :32])
    torch.testing.assert_close(module.loss(x, y, mixing([0], torch.tensor([1.0]))), expected)


def test_mixed_targets_are_soft_labels_between_the_pair():
    cfg = compose_config(["regularizer=mixup"])
    module = step(cfg, [1])
    x, y = _batch(module, 64)
    y = torch.cat([torch.zeros(1, 32), torch.ones(1, 32)], 1)  # pairs are always (0, 1)
    lam = torch.tensor([0.3])
    # BCE against the soft target 0.7 (= 0.3·0 + 0.7·1) is minimal where p = 0.7.
    loss = module.loss(x, y, mixing([3], lam))
    mixed_h = 0.3 * module.net(x[:, :32], 0, 3) + 0.7 * module.net(x[:, 32:], 0, 3)
    expected = metrics.binary_nll(module.net(mixed_h, 3), torch.full((1, 32), 0.7))
    torch.testing.assert_close(loss, expected)


def test_without_mixup_every_sample_of_the_batch_is_used():
    cfg = compose_config(["regularizer=none"])
    module = step(cfg, [1])
    x, y = _batch(module, 64)
    expected = metrics.binary_nll(module.net(x), y)
    torch.testing.assert_close(module.loss(x, y, Draws([])), expected)
    # Changing only the second half changes the loss: it is not thrown away.
    y2 = y.clone()
    y2[:, 32:] = 1 - y2[:, 32:]
    assert not torch.allclose(module.loss(x, y2, Draws([])), expected)


# --- K classes ---------------------------------------------------------------------------------


def _k_class_batch(module, n_rows: int, K: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(module.n_members, n_rows, 2, generator=gen)
    labels = torch.randint(0, K, (module.n_members, n_rows), generator=gen)
    return x, torch.nn.functional.one_hot(labels, K).float()


def test_k_class_mixup_mixes_one_hot_targets_and_uses_softmax_cross_entropy():
    cfg = compose_config(["regularizer=mixup", "data=spirals3"])
    lightning_module = build_module(members(cfg, [1]))
    module = lightning_module.ensemble
    x, y = _k_class_batch(module, 64, 3)
    lam = torch.tensor([0.3])
    loss = module.loss(x, y, mixing([2], lam))
    mixed_h = 0.3 * module.net(x[:, :32], 0, 2) + 0.7 * module.net(x[:, 32:], 0, 2)
    targets = 0.3 * y[:, :32] + 0.7 * y[:, 32:]  # on the simplex
    assert torch.allclose(targets.sum(-1), torch.ones(1, 32))
    logits = module.net(mixed_h, 2)
    assert logits.shape == (1, 32, 3)
    expected = -(targets * torch.log_softmax(logits, -1)).sum(-1).mean(-1)
    torch.testing.assert_close(loss, expected)
    assert lightning_module(x[0]).shape == (1, 64, 3)
    assert torch.allclose(lightning_module(x[0]).sum(-1), torch.ones(1, 64))


@pytest.mark.parametrize("regularizers", [["none", "mixup", "dropout", "hidden_mixup"]])
def test_k_class_ensemble_member_loss_equals_single_run_loss(regularizers):
    """Members that mix at different layers, or not at all, each get their own K-class loss."""
    cfgs = [compose_config([f"regularizer={r}", "data=spirals3"]) for r in regularizers]
    ensemble = build_module([m for c in cfgs for m in members(c, [5])]).ensemble
    draws = ensemble.draw(chunk=1, n_steps=10)
    singles = [step(c, [5]) for c in cfgs]
    for s in range(10):
        x, y = _k_class_batch(ensemble, 64, 3, seed=s)
        loss = ensemble.loss(x, y, draws.step(s))
        for e, single in enumerate(singles):
            own = single.draw(chunk=1, n_steps=10).step(s)
            expected = single.loss(x[e : e + 1], y[e : e + 1], own)
            assert torch.equal(loss[e : e + 1], expected), (s, e)


@pytest.mark.parametrize("regularizer", ["mixup", "dropout"])
def test_one_run_chunk_steps_exactly_like_backward_and_optimizer_step(regularizer):
    """A one-member run keeps the reference's operations: its training loop gives the same
    weights, bit for bit, as autograd's backward and AdamW.step() on the same losses."""
    cfg = compose_config([f"regularizer={regularizer}"])
    ours, theirs = step(cfg, [5]), step(cfg, [5])
    opt_ours, opt_theirs = ours.optimizer(), theirs.optimizer()
    draws = ours.draw(chunk=0, n_steps=20)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(20, 1, 64, 2, generator=gen)
    y = (torch.rand(20, 1, 64, generator=gen) > 0.5).float()
    losses = ours.train_chunk(x, y, draws, opt_ours)
    for s in range(20):
        loss = theirs.loss(x[s], y[s], draws.step(s))
        opt_theirs.zero_grad()
        loss.sum().backward()
        opt_theirs.step()
        assert torch.equal(losses[s], loss.detach())
    for a, b in zip(ours.net.parameters(), theirs.net.parameters()):
        assert torch.equal(a, b)


def test_ensemble_chunk_trains_each_member_like_its_own_run():
    """Members mixing at different layers, with dropout, in one ensemble's training loop:
    17 members, so that some sit in full CPU vectors of the one-logit output bias."""
    cfg = compose_config(["regularizer=mixup", "regularizer.p=0.2"])
    seeds = list(range(21, 38))
    ensemble = step(cfg, seeds)
    draws = ensemble.draw(chunk=1, n_steps=30)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(30, len(seeds), 64, 2, generator=gen)
    y = (torch.rand(30, len(seeds), 64, generator=gen) > 0.5).float()
    losses = ensemble.train_chunk(x, y, draws, ensemble.optimizer())
    for e, seed in enumerate(seeds):
        single = step(cfg, [seed])
        own = single.draw(chunk=1, n_steps=30)
        expected = single.train_chunk(x[:, e : e + 1], y[:, e : e + 1], own, single.optimizer())
        assert torch.equal(losses[:, e : e + 1], expected), seed
        for w_ens, w_single in zip(ensemble.net.parameters(), single.net.parameters()):
            assert torch.equal(w_ens[e : e + 1], w_single), seed
