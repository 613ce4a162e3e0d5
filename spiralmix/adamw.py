"""AdamW steps for the training loop: the optimizer's own fused kernel, called directly.

``torch.optim.AdamW(fused=True).step()`` spends most of its time on a small model in Python
(grouping tensors, checking flags) around one kernel call. :func:`adamw_stepper` makes that
kernel call on the optimizer's own state, so the result is bit for bit that of ``step()``
and checkpoints see the usual optimizer state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from spiralmix.compat import fused_adamw_kernel

Stepper = Callable[[Sequence[torch.Tensor]], None]


def adamw_stepper(optimizer: torch.optim.Optimizer) -> Stepper:
    """A function that applies one AdamW step given the gradients of the parameters.

    Takes the kernel path only for a single fused, plain AdamW parameter group whose state
    exists (after the first step); otherwise each call sets ``.grad`` and calls ``step()``.
    Build it again after the optimizer's state is replaced (e.g. a checkpoint is loaded).
    """
    groups = optimizer.param_groups
    group = groups[0]
    params = list(group["params"])
    state = [optimizer.state.get(p, {}) for p in params]
    direct = (
        isinstance(optimizer, torch.optim.AdamW)
        and len(groups) == 1
        and group.get("fused")
        and not (group["amsgrad"] or group["maximize"] or group["capturable"])
        and not group["differentiable"]
        and all("exp_avg" in s for s in state)
        and len({(p.device, p.dtype) for p in params}) == 1
    )
    if not direct:

        def step_with_optimizer(grads: Sequence[torch.Tensor]) -> None:
            for param, grad in zip(params, grads):
                param.grad = grad
            optimizer.step()
            for param in params:
                param.grad = None

        return step_with_optimizer

    kernel = fused_adamw_kernel()
    exp_avgs = [s["exp_avg"] for s in state]
    exp_avg_sqs = [s["exp_avg_sq"] for s in state]
    steps = [s["step"] for s in state]
    beta1, beta2 = group["betas"]

    def step_fused(grads: Sequence[torch.Tensor]) -> None:
        # What AdamW.step does for one device and dtype (torch.optim.adam._fused_adam).
        torch._foreach_add_(steps, 1)
        kernel(
            params, list(grads), exp_avgs, exp_avg_sqs, [], steps,
            amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
            grad_scale=None, found_inf=None,
        )  # fmt: skip

    return step_fused
