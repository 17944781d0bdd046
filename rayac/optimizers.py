"""RMSprop in TensorFlow's form, as the A3C paper and OpenAI baselines' A2C used it.

    v ← α v + (1 − α) g²            (v starts at 1, as TF's RMSPropOptimizer initialises it)
    θ ← θ − lr · g / sqrt(v + ε)    (ε inside the square root)

torch's RMSprop divides by sqrt(v) + ε instead: with ε = 1e-5 and a gradient whose v is ~1e-10, TF's
step is g / sqrt(1e-5) and torch's g / 1e-5 — ~300x larger. SB3's ``RMSpropTFLike`` is the same idea.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
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


def _fusable(group: dict[str, Any]) -> bool:
    """A fused Adam group with none of the options the kernel calls here leave out."""
    return bool(group.get("fused")) and not (
        group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]
        or group.get("decoupled_weight_decay") or isinstance(group["lr"], torch.Tensor)
    )  # fmt: skip


def fused_adam_step(
    optimizer: torch.optim.Optimizer, grads: Mapping[torch.nn.Parameter, torch.Tensor] | None = None
) -> bool:
    """``step()`` of a fused ``torch.optim.Adam`` whose state exists: the kernel torch's step calls, on the same
    tensors with the same arguments (so bit for bit the same result), without the Python machinery around it.

    That machinery (hooks, profiler records, grouping by device) costs ~0.1 ms per parameter group per step:
    most of an A3C parameter-server shard's time per push for a small network. ``grads``: the gradient of each
    parameter, read in place of ``p.grad`` (the kernel only reads it). Returns False, having done nothing, when
    this does not apply — another optimiser, an option the kernel call here does not pass (amsgrad, maximize,
    capturable, a tensor lr), a parameter without a gradient, or a first step, where torch creates the state —
    and the caller then calls ``step()``. A caller that steps often keeps the ``FusedAdamPlan`` instead."""
    plan = FusedAdamPlan.of(optimizer)
    if plan is None:
        return False
    chosen = [p.grad if grads is None else grads.get(p) for p in plan.params]
    if any(g is None for g in chosen):
        return False
    plan.step(chosen)  # type: ignore[arg-type]
    return True


class FusedAdamPlan:
    """Fused Adam steps of a fixed list of parameters whose state exists, everything but the kernel prepared
    once: a parameter-server shard steps its slice thousands of times a second, and each torch call it saves
    (state lookups, step counters, tensor lists) is worth ~10-25 µs in a process that has just run Ray's
    machinery (cold caches), several times what it costs in a loop.

    Bit for bit ``Adam.step()``: the same kernel on the same tensors with the group's settings, read at every
    step; step counters on the CPU (float32 tensors) move through numpy views, the same float32 ``+ 1``. ``of``
    returns None where it does not apply (see ``fused_adam_step``). Make a new plan whenever the optimiser's
    state is replaced."""

    def __init__(self, groups: list[tuple[dict[str, Any], list[torch.Tensor], list[dict[str, Any]]]]):
        self.groups = [(group, params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                        [s["step"] for s in states]) for group, params, states in groups]  # fmt: skip
        self.params = [p for _, params, _ in groups for p in params]
        self.steps = [s["step"] for _, _, states in groups for s in states]
        on_cpu = all(t.device.type == "cpu" for t in self.steps)
        self.counters = [t.numpy() for t in self.steps] if on_cpu else None

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> FusedAdamPlan | None:
        if getattr(torch, "_fused_adam_", None) is None or not isinstance(optimizer, torch.optim.Adam):
            return None
        groups = []
        for group in optimizer.param_groups:
            if not _fusable(group):
                return None
            states = [optimizer.state.get(p) for p in group["params"]]
            if not all(states) or any(
                s["step"].device != p.device for p, s in zip(group["params"], states, strict=True)
            ):
                return None
            if group["params"]:
                groups.append((group, list(group["params"]), states))
        return cls(groups)

    def step(self, grads: list[torch.Tensor]) -> None:
        """One step; ``grads``: one per parameter, in ``self.params`` order (read, never written)."""
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} parameters")
        i = 0
        with torch.no_grad():
            if self.counters is not None:
                for counter in self.counters:
                    np.add(counter, 1, out=counter)
            else:
                torch._foreach_add_(self.steps, 1)
            for group, params, exp_avgs, exp_avg_sqs, steps in self.groups:
                beta1, beta2 = group["betas"]
                torch._fused_adam_(params, grads[i : i + len(params)], exp_avgs, exp_avg_sqs, [], steps,
                                   amsgrad=False, lr=group["lr"], beta1=float(beta1), beta2=float(beta2),
                                   weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                                   grad_scale=None, found_inf=None)  # fmt: skip
                i += len(params)
