"""AdamW steps for the training loop: the optimizer's own fused kernel, called directly.

``torch.optim.AdamW(fused=True).step()`` spends most of its time on a small model in Python
(grouping tensors, checking flags) around one kernel call. :func:`adamw_stepper` makes that
kernel call on the optimizer's own state, so the result is bit for bit that of ``step()``
and checkpoints see the usual optimizer state.

For an ensemble (parameters stacked along a leading member axis) it also keeps every
member's numbers those of its separate run: the kernel runs over each tensor in CPU vectors
of up to ``VECTOR_FLOATS`` floats and finishes the remainder one float at a time, and the
two round differently. A member's slice lands on the same side of that line as in its own
run only when its size is a multiple of the vector width; other parameters (a one-logit
output bias: one float per member) are handed to the kernel member by member.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from spiralmix.compat import foreach_add_, fused_adamw_kernel

Stepper = Callable[[Sequence[torch.Tensor]], None]

VECTOR_FLOATS = 16  # floats in the widest CPU vector the kernel uses (AVX-512)


def init_adamw_state(optimizer: torch.optim.AdamW) -> None:
    """Create the state that AdamW's first ``step()`` creates (zero moments, step 0), so
    that the first step can take the kernel path too."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not optimizer.state[p]:
                optimizer.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }


def adamw_stepper(optimizer: torch.optim.Optimizer, n_members: int = 1) -> Stepper:
    """A function that applies one AdamW step given the gradients of the parameters.

    Takes the kernel path for a single fused, plain AdamW parameter group (creating its
    state if there is none yet); otherwise each call sets ``.grad`` and calls ``step()``.
    With ``n_members`` > 1 the parameters' first axis is the member axis. Build the stepper
    again after the optimizer's state is replaced (e.g. a checkpoint is loaded).
    """
    groups = optimizer.param_groups
    group = groups[0]
    params = list(group["params"])
    direct = (
        isinstance(optimizer, torch.optim.AdamW)
        and len(groups) == 1
        and group.get("fused")
        and not (group["amsgrad"] or group["maximize"] or group["capturable"])
        and not group["differentiable"]
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

    init_adamw_state(optimizer)
    kernel = fused_adamw_kernel()
    state = [optimizer.state[p] for p in params]
    steps = [s["step"] for s in state]
    by_member = [n_members > 1 and p[0].numel() % VECTOR_FLOATS != 0 for p in params]

    def pieces(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The tensors as the kernel gets them: whole, or one per member."""
        out: list[torch.Tensor] = []
        for tensor, split in zip(tensors, by_member):
            out.extend(tensor.unbind(0) if split else (tensor,))
        return out

    kernel_params = pieces(params)
    exp_avgs = pieces([s["exp_avg"] for s in state])
    exp_avg_sqs = pieces([s["exp_avg_sq"] for s in state])
    copies = [n_members if split else 1 for split in by_member]
    kernel_steps = [step for step, n in zip(steps, copies) for _ in range(n)]
    beta1, beta2 = group["betas"]

    def step_fused(grads: Sequence[torch.Tensor]) -> None:
        # What AdamW.step does for one device and dtype (torch.optim.adam._fused_adam).
        foreach_add_(steps, 1)
        kernel(
            kernel_params, pieces(grads), exp_avgs, exp_avg_sqs, [], kernel_steps,
            amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
            grad_scale=None, found_inf=None,
        )  # fmt: skip

    return step_fused
