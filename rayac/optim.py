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
