"""Tests for spiralmix.mixup: mixing, and the seeded draws of k, λ and permutations."""

from __future__ import annotations

import math

import pytest
import torch

from spiralmix.mixup import (
    halves_mixing_weights,
    mix,
    mix_halves,
    sample_gamma,
    sample_lambda,
    sample_layers,
    sample_permutations,
)

N = 20_000  # draws for moment checks: tolerances below are several standard errors at this n


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- mix ---------------------------------------------------------------------------------------


def test_mix_endpoints():
    a, b = torch.randn(4, 3, generator=gen(0)), torch.randn(4, 3, generator=gen(1))
    assert torch.equal(mix(a, b, 1.0), a)
    assert torch.equal(mix(a, b, 0.0), b)
    assert torch.allclose(mix(a, b, 0.25), 0.25 * a + 0.75 * b)


def test_mix_broadcasts_a_member_lambda():
    E, N_, D = 3, 5, 4
    a, b = torch.randn(E, N_, D, generator=gen(0)), torch.randn(E, N_, D, generator=gen(1))
    lam = torch.tensor([0.0, 0.3, 1.0]).view(E, 1, 1)
    out = mix(a, b, lam)
    assert out.shape == (E, N_, D)
    assert torch.equal(out[0], b[0])
    assert torch.allclose(out[1], 0.3 * a[1] + 0.7 * b[1])
    assert torch.equal(out[2], a[2])


def test_mixed_binary_targets_are_soft_labels_in_unit_interval():
    ya = torch.randint(0, 2, (1000,), generator=gen(0)).float()
    yb = torch.randint(0, 2, (1000,), generator=gen(1)).float()
    lam = sample_lambda(2.0, 1000, gen(2))
    y = mix(ya, yb, lam)
    assert torch.all((y >= 0) & (y <= 1))
    same = ya == yb
    assert torch.allclose(y[same], ya[same])
    differ = ~same
    assert torch.allclose(y[differ], torch.where(ya[differ] == 1, lam[differ], 1 - lam[differ]))


# --- sample_layers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("k_min", "k_max"), [(0, 3), (1, 3), (0, 0), (2, 2)])
def test_sample_layers_covers_the_inclusive_range(k_min, k_max):
    k = sample_layers(k_min, k_max, 1000, gen(0))
    assert k.shape == (1000,) and k.dtype == torch.int64
    assert set(k.tolist()) == set(range(k_min, k_max + 1))


def test_sample_layers_is_roughly_uniform():
    k = sample_layers(0, 3, N, gen(0))
    counts = torch.bincount(k, minlength=4).float() / N
    # Each share has standard error sqrt(0.25·0.75/N) ≈ 0.003.
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.015)


@pytest.mark.parametrize(("k_min", "k_max"), [(2, 1), (-1, 0)])
def test_sample_layers_rejects_bad_range(k_min, k_max):
    with pytest.raises(ValueError, match="k_min"):
        sample_layers(k_min, k_max, 5, gen(0))


def test_sample_layers_reproducible():
    assert torch.equal(sample_layers(0, 3, 50, gen(4)), sample_layers(0, 3, 50, gen(4)))
    assert not torch.equal(sample_layers(0, 3, 50, gen(4)), sample_layers(0, 3, 50, gen(5)))


# --- sample_gamma / sample_lambda --------------------------------------------------------------


@pytest.mark.parametrize("sampler", [sample_gamma, sample_lambda])
@pytest.mark.parametrize("alpha", [2.0, 0.4])
def test_same_seed_same_draws(sampler, alpha):
    assert torch.equal(sampler(alpha, 100, gen(3)), sampler(alpha, 100, gen(3)))
    assert not torch.equal(sampler(alpha, 100, gen(3)), sampler(alpha, 100, gen(4)))


@pytest.mark.parametrize("alpha", [0.4, 1.0, 2.0, 5.0])
def test_gamma_moments(alpha):
    g = sample_gamma(alpha, N, gen(0))
    assert g.shape == (N,) and g.dtype == torch.float64
    assert torch.all(g > 0)
    # Gamma(α, 1): mean α, variance α, excess kurtosis 6 / α; six standard errors.
    se_var = math.sqrt((6 / alpha + 2) * alpha**2 / N)
    assert g.mean().item() == pytest.approx(alpha, abs=6 * math.sqrt(alpha / N))
    assert g.var().item() == pytest.approx(alpha, abs=6 * se_var)


def beta_moment_tolerances(alpha: float) -> tuple[float, float]:
    """Six standard errors of the sample mean and variance of N draws of Beta(α, α)."""
    var = 1 / (4 * (2 * alpha + 1))
    kurtosis = 3 - 6 / (2 * alpha + 3)  # excess kurtosis of Beta(α, α) is −6 / (2α + 3)
    se_mean = math.sqrt(var / N)
    se_var = math.sqrt((kurtosis - 1) * var**2 / N)
    return 6 * se_mean, 6 * se_var


@pytest.mark.parametrize("alpha", [2.0, 0.4])
def test_lambda_beta_moments(alpha):
    lam = sample_lambda(alpha, N, gen(0))
    assert lam.shape == (N,) and lam.dtype == torch.float32
    assert torch.all((lam >= 0) & (lam <= 1))
    tol_mean, tol_var = beta_moment_tolerances(alpha)
    assert lam.mean().item() == pytest.approx(0.5, abs=tol_mean)
    assert lam.double().var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), abs=tol_var)


def test_lambda_strictly_inside_unit_interval_for_alpha_2():
    lam = sample_lambda(2.0, N, gen(1))
    assert torch.all((lam > 0) & (lam < 1))


def test_lambda_strictly_inside_unit_interval_for_alpha_below_1():
    lam = sample_lambda(0.4, N, gen(0))
    assert torch.all((lam > 0) & (lam < 1))


def test_lambda_is_never_nan_for_small_alpha():
    lam = sample_lambda(0.002, N, gen(0))
    assert not torch.any(torch.isnan(lam))


@pytest.mark.parametrize("sampler", [sample_gamma, sample_lambda])
@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_nonpositive_alpha_raises(sampler, alpha):
    with pytest.raises(ValueError, match="alpha"):
        sampler(alpha, 10, gen(0))


# --- sample_permutations -----------------------------------------------------------------------


def test_permutation_rows():
    perms = sample_permutations(50, 16, gen(0))
    assert perms.shape == (50, 16) and perms.dtype == torch.int64
    assert torch.equal(perms.sort(1).values, torch.arange(16).expand(50, 16))
    assert len({tuple(row) for row in perms.tolist()}) > 1  # independent rows
    assert torch.equal(perms, sample_permutations(50, 16, gen(0)))


# --- mixing on batch halves, all members at once ------------------------------------------------


def test_halves_mixing_weights_by_hand():
    k = torch.tensor([[0, 2, -1]])  # one step, three members: input, layer 2, no mixing
    lam = torch.tensor([[0.25, 0.5, 0.75]])
    layers, targets = halves_mixing_weights(k, lam, n_layers=2)
    assert layers.shape == (1, 3, 3, 2, 1) and targets.shape == (1, 3, 2, 1)
    keep = torch.tensor([[1.0], [0.0]])
    expected = {(0, 0): torch.tensor([[0.25], [0.75]]), (2, 1): torch.tensor([[0.5], [0.5]])}
    for j in range(3):
        for e in range(3):
            assert torch.equal(layers[0, j, e], expected.get((j, e), keep)), (j, e)
    assert torch.equal(targets[0, 0], expected[0, 0])
    assert torch.equal(targets[0, 1], expected[2, 1])
    assert torch.equal(targets[0, 2], keep)


def test_mix_halves_mixes_the_first_half_exactly_like_mix_or_keeps_it():
    E, B, W = 2, 4, 3
    t = torch.randn(E, 2 * B, W, generator=gen(0))
    lam = torch.rand(E, generator=gen(1))
    layers, _ = halves_mixing_weights(torch.tensor([0, -1]), lam, n_layers=0)
    out = mix_halves(t, layers[0])
    # The very arithmetic of a separate run: equal to the bit, not within a tolerance.
    assert torch.equal(out[0, :B], mix(t[:1, :B], t[:1, B:], lam[:1].view(-1, 1, 1))[0])
    assert torch.equal(out[0, B:], t[0, B:])  # carried along, unused
    assert torch.equal(out[1], t[1])  # (1, 0) leaves a member's rows exactly as they were


def test_mix_halves_carries_a_trailing_class_axis():
    E, B, K = 3, 5, 4
    targets = torch.nn.functional.one_hot(torch.randint(0, K, (E, 2 * B), generator=gen(1)), K)
    lam = torch.tensor([0.2, 0.6, 0.9])
    _, weights = halves_mixing_weights(torch.tensor([1, 1, 1]), lam, n_layers=2)
    out = mix_halves(targets.float(), weights)
    assert out.shape == (E, 2 * B, K)
    expected = mix(targets[:, :B].float(), targets[:, B:].float(), lam.view(-1, 1, 1))
    assert torch.equal(out[:, :B], expected)
    torch.testing.assert_close(out.sum(-1), torch.ones(E, 2 * B))
