"""spiralmix.adamw: the fused AdamW kernel called directly steps exactly like AdamW.step()."""

from __future__ import annotations

import pytest
import torch

from spiralmix.adamw import adamw_stepper


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(3, 4, 5, generator=gen)) for _ in range(3)]


def _grads(params, step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen) for p in params]


@pytest.mark.parametrize("weight_decay", [0.0, 0.6])
def test_direct_kernel_steps_bit_for_bit_like_the_optimizer(weight_decay):
    ours, theirs = _params(0), _params(0)
    kwargs = {"lr": 1e-2, "weight_decay": weight_decay, "fused": True}
    opt_ours = torch.optim.AdamW(ours, **kwargs)
    opt_theirs = torch.optim.AdamW(theirs, **kwargs)
    step = adamw_stepper(opt_ours)  # creates the state that step() would create
    for s in range(5):
        step(_grads(ours, s))
        for p, g in zip(theirs, _grads(theirs, s)):
            p.grad = g
        opt_theirs.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    for a, b in zip(ours, theirs):
        sa, sb = opt_ours.state[a], opt_theirs.state[b]
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
        assert float(sa["step"]) == float(sb["step"]) == 5
    assert all(p.grad is None for p in ours)


@pytest.mark.parametrize("weight_decay", [0.0, 0.6])
def test_each_member_steps_like_its_own_one_member_optimizer(weight_decay):
    """Stacked members (20 × a 3×5 matrix, 20 × one float, 20 × 32 floats) step exactly like
    one-member runs, whether a member's slice fills whole CPU vectors or not."""
    shapes = [(3, 5), (1, 1), (1, 32)]
    E = 20

    def params(members: range) -> list[torch.nn.Parameter]:
        return [
            torch.nn.Parameter(torch.stack([torch.full(shape, 0.1 * e + 1) for e in members]))
            for shape in shapes
        ]

    def grads(members: range, step: int) -> list[torch.Tensor]:
        return [
            torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(
                1000 * e + 10 * step + i)) for e in members])
            for i, shape in enumerate(shapes)
        ]  # fmt: skip

    kwargs = {"lr": 1e-2, "weight_decay": weight_decay, "fused": True}
    together = params(range(E))
    step = adamw_stepper(torch.optim.AdamW(together, **kwargs), n_members=E)
    for s in range(5):
        step(grads(range(E), s))
    for e in range(E):
        alone = params(range(e, e + 1))
        step_alone = adamw_stepper(torch.optim.AdamW(alone, **kwargs))
        for s in range(5):
            step_alone(grads(range(e, e + 1), s))
        for a, b in zip(together, alone):
            assert torch.equal(a[e : e + 1], b), e


def test_unfused_optimizer_steps_like_its_own_step():
    ours, theirs = _params(1), _params(1)
    opt_ours = torch.optim.AdamW(ours, lr=1e-2, fused=False)
    opt_theirs = torch.optim.AdamW(theirs, lr=1e-2, fused=False)
    for s in range(3):
        adamw_stepper(opt_ours)(_grads(ours, s))
        for p, g in zip(theirs, _grads(theirs, s)):
            p.grad = g
        opt_theirs.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
