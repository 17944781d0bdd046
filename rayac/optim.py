"""RMSprop in TensorFlow's form, as the A3C paper and OpenAI baselines' A2C used it.

    v ← α v + (1 − α) g²            (v starts at 1, as TF's RMSPropOptimizer initialises it)
    θ ← θ − lr · g / sqrt(v + ε)    (ε inside the square root)

torch's RMSprop divides by sqrt(v) + ε instead: with ε = 1e-5 and a gradient whose v is ~1e-10, TF's
step is g / sqrt(1e-5) and torch's g / 1e-5 — ~300x larger. SB3's ``RMSpropTFLike`` is the same idea.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class RMSpropTF(torch.optim.Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 7e-4, alpha: float = 0.99, eps: float = 1e-5):
        if lr <= 0 or not 0 < alpha < 1 or eps <= 0:
            raise ValueError(f"invalid RMSpropTF settings: lr={lr}, alpha={alpha}, eps={eps}")
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            square_avg = []
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                square_avg.append(state["square_avg"])
            # one fused kernel per op for the whole group (foreach), as torch's own optimisers do
            torch._foreach_mul_(square_avg, group["alpha"])
            torch._foreach_addcmul_(square_avg, grads, grads, value=1 - group["alpha"])
            denom = torch._foreach_add(square_avg, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
        return loss


def fused_adam_step(optimizer: torch.optim.Optimizer) -> bool:
    """``step()`` of a fused ``torch.optim.Adam`` whose state exists: the kernel torch's step calls, on the same
    tensors with the same arguments (so bit for bit the same result), without the Python machinery around it.

    That machinery (hooks, profiler records, grouping by device) costs ~0.1 ms per parameter group per step:
    most of an A3C parameter-server shard's time per push for a small network. Returns False, having done
    nothing, when this does not apply — another optimiser, an option the kernel call here does not pass
    (amsgrad, maximize, capturable, a tensor lr), or a first step, where torch creates the state — and the
    caller then calls ``step()``."""
    kernel = getattr(torch, "_fused_adam_", None)
    if kernel is None or not isinstance(optimizer, torch.optim.Adam):
        return False
    calls = []
    for group in optimizer.param_groups:
        if (not group.get("fused") or group["amsgrad"] or group["maximize"] or group["capturable"]
                or group["differentiable"] or group.get("decoupled_weight_decay")
                or isinstance(group["lr"], torch.Tensor)):  # fmt: skip
            return False
        params = [p for p in group["params"] if p.grad is not None]
        states = [optimizer.state.get(p) for p in params]
        if not all(states) or any(s["step"].device != p.device for s, p in zip(states, params, strict=True)):
            return False
        calls.append((group, params, states))
    with torch.no_grad():
        for group, params, states in calls:
            if not params:
                continue
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            kernel(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                   [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False, lr=group["lr"],
                   beta1=float(beta1), beta2=float(beta2), weight_decay=group["weight_decay"], eps=group["eps"],
                   maximize=False, grad_scale=None, found_inf=None)  # fmt: skip
    return True
