"""The MLP, and a stack of independent MLPs trained together as one ensemble."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.2


def n_logits(n_classes: int) -> int:
    """One logit (of class 1) for two classes, one per class for more."""
    return 1 if n_classes == 2 else n_classes


class MLP(nn.Module):
    """Classifier: hidden layers Linear → LeakyReLU(0.2) → Dropout(p), then a Linear layer to
    one logit (two classes) or K logits (``n_classes`` = K > 2).

    ``forward(x, start, end)`` runs hidden layers ``start..end-1``, and the classifier only
    when ``end`` is None; ``forward(x, 0, 0)`` is the identity. Splitting the pass at layer
    k is what manifold mixup needs: run both samples up to k, mix, run the rest.
    """

    def __init__(
        self,
        n_features: int = 2,
        hidden_dims: Sequence[int] = (32, 32, 32),
        p: float = 0.0,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        dims = [n_features, *hidden_dims]
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(i, o), nn.LeakyReLU(NEGATIVE_SLOPE), nn.Dropout(p))
            for i, o in zip(dims[:-1], dims[1:])
        )
        self.classifier = nn.Linear(dims[-1], n_logits(n_classes))

    @property
    def n_hidden(self) -> int:
        return len(self.hidden)

    def forward(self, x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """x: (N, width of layer ``start``) → hidden state (N, width of ``end``) or logits (N,)
        for two classes, (N, K) for K > 2."""
        for layer in self.hidden[start:end]:
            x = layer(x)
        return x if end is not None else self.classifier(x).squeeze(-1)


def one_logit(
    b: torch.Tensor, x: torch.Tensor, w: torch.Tensor, by_halves: torch.Tensor | None = None
) -> torch.Tensor:
    """The output layer of two-class runs, x (E, N, fan_in) · w (E, fan_in, 1) + b (E, 1, 1)
    → (E, N), as a product and a sum over fan_in, not a matrix product.

    A one-column matrix product is a matrix-vector product, which the BLAS sums in another
    order for a batch of matrices than for one: a member's logits would depend on how many
    members it trains beside. The element-wise product and the sum over the last axis (and,
    in the backward pass, the weights' gradient as a sum over the rows) reduce each member's
    row with the same kernel whatever the batch, so every member gets its run alone's bits
    (checked by :func:`spiralmix.exactness.check_one_logit_layer`), and in two kernels
    instead of one BLAS call per member and pass.

    ``by_halves`` (E,) bool marks the members that mix by halves; their bias gradient is
    summed half by half (:class:`_BiasByHalves`).
    """
    z = (x * w.transpose(1, 2)).sum(-1)
    if by_halves is None:
        return z + b.squeeze(-1)
    return _BiasByHalves.apply(z, b.squeeze(-1), by_halves)


class _BiasByHalves(torch.autograd.Function):
    """z (E, N) + b (E, 1), whose gradient for b is, for the members marked in ``by_halves``,
    the sum over the first N/2 rows plus the sum over the others.

    Torch sums a row of fewer than 16 floats, or the tail past a multiple of 16, in another
    order than a longer one, so a sum over 2·B rows whose second half is zero is not the sum
    over B rows to the bit. A member mixing by halves has zero gradients in its second half
    (its loss reads the first), and its run alone goes on with its B mixed rows: the first
    half's sum plus zero is that run's bias gradient at any batch size. (Were the second
    half's gradients not zero, the sum would still be right, only not that run's bits.)
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, b: torch.Tensor, by_halves: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(by_halves)
        return z + b

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        (by_halves,) = ctx.saved_tensors
        first, second = grad.chunk(2, 1)
        halves = first.sum(1, keepdim=True) + second.sum(1, keepdim=True)
        return grad, torch.where(by_halves.view(-1, 1), halves, grad.sum(1, keepdim=True)), None


class MLPEnsemble(nn.Module):
    """E independent MLPs with stacked weights, evaluated with batched matrix products.

    Member e is initialised like ``nn.Linear`` (uniform in ±1/sqrt(fan_in)) from its own
    ``generators[e]``, so it starts and (with its own batches) trains exactly like a
    one-member ensemble of the same seed. Inputs and hidden states have shape (E, N, width).
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        n_features: int = 2,
        hidden_dims: Sequence[int] = (32, 32, 32),
        p: float | Sequence[float] = 0.0,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        self.n_members = len(generators)
        self.n_classes = n_classes
        self.p = list(p) if isinstance(p, Sequence) else [p] * self.n_members
        self.dims = [n_features, *hidden_dims, n_logits(n_classes)]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(self.dims[:-1], self.dims[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            w = [(torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound for g in generators]
            b = [(torch.rand(1, fan_out, generator=g) * 2 - 1) * bound for g in generators]
            self.weights.append(nn.Parameter(torch.stack(w)))  # (E, fan_in, fan_out)
            self.biases.append(nn.Parameter(torch.stack(b)))  # (E, 1, fan_out)
        # Plain references to the same parameters: ParameterList indexing is slow per step.
        self._layers = tuple(zip(self.weights, self.biases))

    @property
    def n_hidden(self) -> int:
        return len(self.dims) - 2

    def forward(
        self,
        x: torch.Tensor,
        start: int = 0,
        end: int | None = None,
        dropout_masks: Sequence[torch.Tensor] | None = None,
        by_halves: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (E, N, width) → hidden state (E, N, width of ``end``) or logits: (E, N) for two
        classes, (E, N, K) for K > 2.

        ``dropout_masks[j]`` (E, N, width of layer j, already scaled by 1/(1-p)) replaces
        random dropout after hidden layer j; without masks, dropout (member e with
        probability ``p[e]``) uses torch's global RNG. ``by_halves``: see :func:`one_logit`.
        """
        stop = self.n_hidden if end is None else end
        layers = self._layers
        for j in range(start, stop):
            w, b = layers[j]
            x = F.leaky_relu(torch.baddbmm(b, x, w), NEGATIVE_SLOPE)
            if dropout_masks is not None:
                x = x * dropout_masks[j]
            elif self.training and any(self.p):
                keep = 1 - torch.tensor(self.p).view(-1, 1, 1)
                x = x * torch.bernoulli(keep.expand_as(x)) / keep
        if end is not None:
            return x
        w, b = layers[-1]
        if w.shape[-1] == 1:
            return one_logit(b, x, w, by_halves)
        return torch.baddbmm(b, x, w)

    def member(self, e: int) -> MLP:
        """Member e as a standalone :class:`MLP` (a copy)."""
        mlp = MLP(self.dims[0], self.dims[1:-1], self.p[e], self.n_classes)
        linears = [layer[0] for layer in mlp.hidden] + [mlp.classifier]
        with torch.no_grad():
            for linear, w, b in zip(linears, self.weights, self.biases):
                linear.weight.copy_(w[e].T)
                linear.bias.copy_(b[e, 0])
        return mlp
