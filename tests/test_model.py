"""Tests for spiralmix.model: the split forward pass of the MLP and of the stacked ensemble."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spiralmix.model import MLP, MLPEnsemble, one_logit

HIDDEN = (5, 7, 3)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(2, HIDDEN).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(11, 2, generator=gen(1))


# --- MLP ---------------------------------------------------------------------------------------


def test_start_equals_end_zero_is_identity(mlp, x):
    assert torch.equal(mlp(x, 0, 0), x)


def test_output_is_one_logit_per_point(mlp, x):
    assert mlp(x).shape == (11,)
    assert mlp.n_hidden == 3


@pytest.mark.parametrize("k", range(len(HIDDEN) + 1))
def test_split_forward_equals_full_forward(mlp, x, k):
    h = mlp(x, 0, k)
    assert h.shape == (11, (2, *HIDDEN)[k])
    assert torch.allclose(mlp(h, k, None), mlp(x), atol=1e-6)


def test_layers_are_linear_leaky_relu_then_linear_logit(mlp, x):
    """Recompute the pass by hand from the parameters: LeakyReLU(0.2) after each hidden Linear."""
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [*HIDDEN, 1]
    h = x
    for k, lin in enumerate(linears[:-1], start=1):
        h = F.leaky_relu(h @ lin.weight.T + lin.bias, 0.2)
        assert torch.allclose(mlp(x, 0, k), h, atol=1e-6)
    logits = (h @ linears[-1].weight.T + linears[-1].bias).squeeze(-1)
    assert torch.allclose(mlp(x), logits, atol=1e-6)


def test_dropout_active_in_train_mode_only(x):
    torch.manual_seed(0)
    model = MLP(2, (200,), p=0.5)
    x = x.repeat(20, 1)  # 220 points × 200 units
    model.train()
    h = model(x, 0, 1)
    # LeakyReLU is never exactly 0 for a nonzero pre-activation: zeros are dropped units.
    dropped = (h == 0).float().mean().item()
    assert dropped == pytest.approx(0.5, abs=0.02)
    model.eval()
    h_eval = model(x, 0, 1)
    assert (h_eval == 0).sum() == 0
    assert torch.equal(model(x, 0, 1), h_eval)  # deterministic in eval mode
    # Inverted dropout: kept units are scaled by 1 / (1 - p).
    kept = h != 0
    assert torch.allclose(h[kept], 2 * h_eval[kept], atol=1e-6)


def test_no_dropout_when_p_is_zero(x):
    model = MLP(2, (50,), p=0.0).train()
    assert torch.equal(model(x), model(x))


# --- MLPEnsemble -------------------------------------------------------------------------------


@pytest.fixture
def ensemble() -> MLPEnsemble:
    return MLPEnsemble([gen(s) for s in (1, 2, 3)], 2, HIDDEN).eval()


@pytest.fixture
def xe() -> torch.Tensor:
    return torch.randn(3, 9, 2, generator=gen(2))


def test_ensemble_shapes(ensemble, xe):
    assert ensemble(xe).shape == (3, 9)
    assert ensemble.n_hidden == 3 and ensemble.n_members == 3
    assert ensemble(xe, 0, 0).shape == (3, 9, 2)
    assert torch.equal(ensemble(xe, 0, 0), xe)


@pytest.mark.parametrize("k", range(len(HIDDEN) + 1))
def test_ensemble_split_forward_equals_full_forward(ensemble, xe, k):
    h = ensemble(xe, 0, k)
    assert h.shape == (3, 9, (2, *HIDDEN)[k])
    assert torch.allclose(ensemble(h, k, None), ensemble(xe), atol=1e-6)


def test_member_matches_ensemble(ensemble, x):
    out = ensemble(x.expand(3, -1, -1))
    for e in range(3):
        member = ensemble.member(e)
        assert isinstance(member, MLP)
        assert torch.allclose(member(x), out[e], atol=1e-6)
        for k in range(len(HIDDEN) + 1):
            assert torch.allclose(
                member(x, 0, k), ensemble(x.expand(3, -1, -1), 0, k)[e], atol=1e-6
            )


def test_member_is_a_copy(ensemble, x):
    member = ensemble.member(0)
    before = ensemble(x.expand(3, -1, -1)).clone()
    with torch.no_grad():
        for param in member.parameters():
            param.add_(1.0)
    assert torch.equal(ensemble(x.expand(3, -1, -1)), before)


def test_members_depend_only_on_their_own_generator(x):
    same = MLPEnsemble([gen(7), gen(7)], 2, HIDDEN)
    for w, b in zip(same.weights, same.biases):
        assert torch.equal(w[0], w[1]) and torch.equal(b[0], b[1])
    mixed = MLPEnsemble([gen(8), gen(7)], 2, HIDDEN)
    alone = MLPEnsemble([gen(7)], 2, HIDDEN)
    for w_mixed, w_alone, b_mixed, b_alone in zip(
        mixed.weights, alone.weights, mixed.biases, alone.biases
    ):
        assert torch.equal(w_mixed[1], w_alone[0]) and torch.equal(b_mixed[1], b_alone[0])
        assert not torch.equal(w_mixed[0], w_mixed[1])
    xs = x.expand(2, -1, -1)
    assert not torch.allclose(mixed(xs)[0], mixed(xs)[1])


def test_init_within_linear_bounds():
    model = MLPEnsemble([gen(s) for s in range(4)], 2, (32, 32, 32))
    fan_ins = [2, 32, 32, 32]
    assert len(model.weights) == 4
    for w, b, fan_in in zip(model.weights, model.biases, fan_ins):
        bound = 1 / math.sqrt(fan_in)
        assert w.shape[:2] == (4, fan_in)
        for t in (w, b):
            assert t.abs().max() <= bound
        # Uniform on ±bound: with ≥ 128 draws the extremes come close to the bound.
        assert w.abs().max() > 0.9 * bound
        assert w.min() < 0 < w.max()


def test_zero_dropout_mask_zeroes_that_layer(ensemble, xe):
    ones = [torch.ones(3, 9, d) for d in HIDDEN]
    ensemble.train()
    assert torch.allclose(ensemble(xe, dropout_masks=ones), ensemble.eval()(xe), atol=1e-6)
    for j in range(len(HIDDEN)):
        masks = list(ones)
        masks[j] = torch.zeros(3, 9, HIDDEN[j])
        assert torch.all(ensemble(xe, 0, j + 1, dropout_masks=masks) == 0)
        assert not torch.all(ensemble(xe, 0, j + 1, dropout_masks=ones) == 0)
    # With the last hidden layer zeroed the logit is the classifier's bias alone.
    masks = [*ones[:-1], torch.zeros(3, 9, HIDDEN[-1])]
    logits = ensemble(xe, dropout_masks=masks)
    assert torch.allclose(logits, ensemble.biases[-1][:, :, 0].detach().expand(3, 9))


def test_dropout_mask_scales_the_layer(ensemble, xe):
    """A mask of c on the last hidden layer scales the logit minus its bias by c."""
    ones = [torch.ones(3, 9, d) for d in HIDDEN]
    bias = ensemble.biases[-1][:, :, 0].detach()
    base = ensemble(xe, dropout_masks=ones) - bias
    scaled = ensemble(xe, dropout_masks=[*ones[:-1], 2 * ones[-1]]) - bias
    assert torch.allclose(scaled, 2 * base, atol=1e-5)


def test_ensemble_dropout_active_in_train_mode_only():
    torch.manual_seed(0)
    model = MLPEnsemble([gen(1), gen(2)], 2, (200,), p=0.5)
    x = torch.randn(2, 100, 2, generator=gen(3))
    model.train()
    h = model(x, 0, 1)
    assert (h == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    model.eval()
    h_eval = model(x, 0, 1)
    assert (h_eval == 0).sum() == 0
    kept = h != 0
    assert torch.allclose(h[kept], 2 * h_eval[kept], atol=1e-6)


@pytest.mark.parametrize("K", [3, 5])
def test_k_classes_give_k_logits_and_members_match(x, K):
    model = MLPEnsemble([gen(s) for s in (1, 2)], 2, HIDDEN, n_classes=K).eval()
    out = model(x.expand(2, -1, -1))
    assert out.shape == (2, len(x), K)
    assert model(x.expand(2, -1, -1), 0, len(HIDDEN)).shape == (2, len(x), HIDDEN[-1])
    for e in range(2):
        member = model.member(e)
        assert member.classifier.out_features == K
        assert torch.allclose(member(x), out[e], atol=1e-6)


def test_two_classes_keep_one_logit_and_the_same_initial_weights():
    two = MLPEnsemble([gen(4)], 2, HIDDEN, n_classes=2)
    default = MLPEnsemble([gen(4)], 2, HIDDEN)
    assert two.dims[-1] == 1
    assert all(torch.equal(a, b) for a, b in zip(two.parameters(), default.parameters()))


def test_the_bias_gradient_by_halves_is_the_bias_gradient():
    """Summed half by half, the one-logit bias gradient is the same gradient (to rounding)
    for any gradients, and exactly the first half's sum when the second half is zero."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 20, 32, generator=g), torch.randn(3, 32, 1, generator=g)
    b = torch.randn(3, 1, 1, generator=g).requires_grad_()
    grad = torch.randn(3, 20, generator=g)
    marked = torch.tensor([True, False, True])
    plain = torch.autograd.grad(one_logit(b, x, w), b, grad)[0]
    halves = torch.autograd.grad(one_logit(b, x, w, marked), b, grad)[0]
    assert torch.allclose(halves, plain, rtol=1e-6) and torch.equal(halves[1], plain[1])
    grad[:, 10:] = 0
    halves = torch.autograd.grad(one_logit(b, x, w, marked), b, grad)[0]
    assert torch.equal(halves.view(3)[marked], grad[marked, :10].sum(1))
    assert torch.equal(one_logit(b, x, w, marked), one_logit(b, x, w))  # the same logits


def test_block_aligned_losses_are_the_losses_of_the_rows():
    from spiralmix.metrics import binary_nll_rows, block_aligned, soft_cross_entropy_rows

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(2, 10, generator=g), torch.rand(2, 10, generator=g)
    padded = block_aligned(binary_nll_rows)(logits, y)
    assert padded.shape == (2, 10) and torch.allclose(padded, binary_nll_rows(logits, y))
    logits3, y3 = torch.randn(2, 10, 3, generator=g), torch.rand(2, 10, 3, generator=g).softmax(-1)
    padded3 = block_aligned(soft_cross_entropy_rows)(logits3, y3)
    assert padded3.shape == (2, 10)
    assert torch.allclose(padded3, soft_cross_entropy_rows(logits3, y3))
