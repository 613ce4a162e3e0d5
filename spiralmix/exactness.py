"""Where an ensemble member's bits equal its run alone's, and the checks that say so.

A member of an ensemble equals its run alone, bit for bit, only where torch computes a
member's slice of a batched operation exactly as the one-member operation. Each assumption
the ensemble relies on is checked by a function here, and tests/test_compat.py calls each
one, so that a torch build (or a processor) that breaks one fails naming it and torch's
version instead of as a mismatch somewhere in a member's history.
"""

from __future__ import annotations

import torch

from spiralmix.compat import LibraryChanged


def check_adamw_vector_width(vector_floats: int) -> None:
    """The fused AdamW kernel runs over a tensor in vectors of ``vector_floats`` floats and
    rounds the remainder differently (:mod:`spiralmix.adamw`): a tensor of two members'
    ``vector_floats`` floats each, stepped at once, equals each member stepped alone."""
    g = torch.Generator().manual_seed(0)
    both = torch.randn(2, vector_floats, generator=g)
    grad = torch.randn(2, vector_floats, generator=g)

    def step(p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        p = p.clone().requires_grad_()
        opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.3, fused=True)
        for _ in range(3):
            p.grad = d.clone()
            opt.step()
        return p.detach()

    together = step(both, grad)
    alone = torch.cat([step(both[e : e + 1], grad[e : e + 1]) for e in range(2)])
    if not torch.equal(together, alone):
        raise LibraryChanged("torch", f"the fused AdamW kernel's {vector_floats}-float vectors")


def check_one_logit_layer() -> None:
    """One-logit output layers (:func:`spiralmix.model.one_logit`): the element-wise product
    summed over the last axis, and its gradients (the weights' a sum over the rows), give
    every member of a batch the bits of the same computation on that member alone."""
    from spiralmix.model import one_logit

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 64, 32, generator=g), torch.randn(3, 32, 1, generator=g)
    b, grad = torch.randn(3, 1, 1, generator=g), torch.randn(3, 64, generator=g)

    def run(e: slice) -> list[torch.Tensor]:
        inputs = [t[e].clone().requires_grad_() for t in (b, x, w)]
        out = one_logit(*inputs)
        return [out.detach(), *torch.autograd.grad(out, inputs, grad[e])]

    together = run(slice(None))
    alone = [torch.cat(parts) for parts in zip(*(run(slice(e, e + 1)) for e in range(3)))]
    if not all(torch.equal(t, a) for t, a in zip(together, alone)):
        raise LibraryChanged("torch", "a sum over the last axis (one-logit output layer)")


def check_mixing_arithmetic() -> None:
    """Mixing by halves (:func:`spiralmix.mixup.mix_halves`): ``a·first + b·second`` with
    per-member weights broadcast over rows equals the one-run ``λ·a + (1−λ)·b`` elementwise,
    and (1, 0) gives the rows back unchanged."""
    from spiralmix.mixup import mix, mix_halves

    g = torch.Generator().manual_seed(0)
    t, lam = torch.randn(2, 64, 32, generator=g), torch.rand(2, generator=g)
    weights = torch.stack([torch.stack([lam[0], 1 - lam[0]]), torch.tensor([1.0, 0.0])])
    out = mix_halves(t, weights.unsqueeze(-1))
    mixed = mix(t[0, :32], t[0, 32:], lam[0])
    if not (torch.equal(out[0, :32], mixed) and torch.equal(out[1], t[1])):
        raise LibraryChanged("torch", "elementwise mixing arithmetic under broadcasting")


def check_loss_blocks() -> None:
    """Training losses on rows padded to whole blocks (:func:`spiralmix.metrics.block_aligned`):
    the binary cross-entropy of each of 64 members' 10 and 20 points, and its gradient,
    equal that member's alone. Unpadded, about one member in six differs in the last bits
    (the vectorized and the scalar sigmoid, exp and log round differently)."""
    from spiralmix.metrics import binary_nll_rows, block_aligned

    rows = block_aligned(binary_nll_rows)

    def run(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = logits.clone().requires_grad_()
        loss = rows(z, y)
        return loss.detach(), torch.autograd.grad(loss.sum(), z)[0]

    g = torch.Generator().manual_seed(0)
    for n in (10, 20):
        logits, y = torch.randn(64, n, generator=g) * 4, torch.rand(64, n, generator=g)
        together = run(logits, y)
        each = [run(logits[e : e + 1], y[e : e + 1]) for e in range(64)]
        alone = [torch.cat(parts) for parts in zip(*each)]
        if not all(torch.equal(t, a) for t, a in zip(together, alone)):
            raise LibraryChanged("torch", f"element-wise losses of {n} points in whole blocks")


def check_probability_blocks() -> None:
    """Probabilities of two-class logits (:func:`spiralmix.metrics.probabilities`): each of
    18 members' sigmoids of its 900 test points, padded to whole blocks, equal that
    member's alone. Unpadded, a run alone's last 4 points get the scalar sigmoid."""
    from spiralmix.metrics import probabilities

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(18, 900, generator=g) * 5
    alone = torch.cat([probabilities(logits[e : e + 1]) for e in range(18)])
    if not torch.equal(probabilities(logits), alone):
        raise LibraryChanged("torch", "the sigmoid of rows padded to whole blocks")


def check_half_row_sums() -> None:
    """The bias gradient of members mixing by halves (``model._BiasByHalves``): for each of
    64 members, the sum of the first B of its 2·B rows plus the zero sum of the rest equals
    the sum of those B rows alone, for B = 10 (below a vector) and 20 (past one). The sum
    of all 2·B rows at once differs for about one member in six."""
    g = torch.Generator().manual_seed(0)
    for batch in (10, 20):
        rows = torch.randn(64, 2 * batch, generator=g)
        rows[:, batch:] = 0
        first, second = rows.chunk(2, 1)
        halves = first.sum(1, keepdim=True) + second.sum(1, keepdim=True)
        alone = torch.cat([rows[e : e + 1, :batch].clone().sum(1, keepdim=True) for e in range(64)])
        if not torch.equal(halves, alone):
            raise LibraryChanged("torch", f"a sum over {batch} of {2 * batch} rows")
