"""One gradient step that is skipped when the loss or a gradient is not finite.

An extreme input, or a learning rate too large for one batch, can give a NaN or inf loss or
gradient; one optimizer step with it turns every weight non-finite for good. The gradient
learners (er, uer, pl-fms through ReplayTraining._update, and mvp) take their steps through :func:`finite_step`, which leaves the
weights (and the optimizer's moments) untouched instead. The check is the sum of every
gradient: NaN and inf propagate through a sum, and one reduction per parameter plus one over
their sums costs half of ``torch.nn.utils.get_total_norm`` (bench/loop.py; the check runs every
step). A sum of finite gradients that overflows float32 (above 3e38) also counts as not finite.
"""

from __future__ import annotations

import math

import torch


def finite_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
    """``loss.backward()`` and ``optimizer.step()``, unless the loss or a gradient is NaN or
    inf; whether the step was taken.

    Gradients are cleared by setting them to None, which is what ``zero_grad(set_to_none=True)``
    does, without its per-call dispatch and profiling hooks (a third of the cost of a small
    model's step, bench/loop.py)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    _clear(params)
    if not math.isfinite(float(loss.detach())):
        return False
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    if grads and not math.isfinite(float(torch.stack([g.sum() for g in grads]).sum())):
        _clear(params)
        return False
    optimizer.step()
    return True


def _clear(params: list[torch.Tensor]) -> None:
    for p in params:
        p.grad = None
