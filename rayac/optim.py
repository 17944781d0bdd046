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
    parameter, read in place of ``p.grad`` (the kernel only reads it: a shard steps on the pushed buffer without
    copying it). All step counters move in one call, and groups with the same settings share one kernel call
    (the kernel treats each tensor on its own, so the bits are the same). Returns False, having done nothing,
    when this does not apply — another optimiser, an option the kernel call here does not pass (amsgrad,
    maximize, capturable, a tensor lr), or a first step, where torch creates the state — and the caller then
    calls ``step()``."""
    kernel = getattr(torch, "_fused_adam_", None)
    if kernel is None or not isinstance(optimizer, torch.optim.Adam):
        return False
    calls: list[tuple[tuple[Any, ...], list[torch.Tensor], list[torch.Tensor], list[dict[str, Any]]]] = []
    for group in optimizer.param_groups:
        if not _fusable(group):
            return False
        pairs = [(p, p.grad if grads is None else grads.get(p)) for p in group["params"]]
        params = [p for p, g in pairs if g is not None]
        states = [optimizer.state.get(p) for p in params]
        if not all(states) or any(s["step"].device != p.device for s, p in zip(states, params, strict=True)):
            return False
        if not params:
            continue
        beta1, beta2 = group["betas"]
        key = (group["lr"], float(beta1), float(beta2), group["weight_decay"], group["eps"])
        if calls and calls[-1][0] == key:  # same settings as the previous group: one kernel call for both
            calls[-1][1].extend(params)
            calls[-1][2].extend(g for _, g in pairs if g is not None)
            calls[-1][3].extend(states)
        else:
            calls.append((key, params, [g for _, g in pairs if g is not None], states))
    if not calls:
        return True
    with torch.no_grad():
        torch._foreach_add_([s["step"] for call in calls for s in call[3]], 1)
        for (lr, beta1, beta2, weight_decay, eps), params, grad_list, states in calls:
            kernel(params, grad_list, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
                   [s["step"] for s in states], amsgrad=False, lr=lr, beta1=beta1, beta2=beta2,
                   weight_decay=weight_decay, eps=eps, maximize=False, grad_scale=None, found_inf=None)  # fmt: skip
    return True


class FusedAdamPlan:
    """Fused Adam steps of a fixed list of CPU parameters whose state exists, everything but the kernel prepared
    once: a parameter-server shard steps its slice thousands of times a second, and each torch call it saves
    (state lookups, step counters, tensor lists) is worth ~10-25 µs in a process that has just run Ray's
    machinery (cold caches), several times what it costs in a loop.

    Bit for bit ``Adam.step()``: the same kernel on the same tensors with the group's settings, read at every
    step; the step counters (float32 tensors) move through numpy views, the same float32 ``+ 1``. ``of`` returns
    None where ``fused_adam_step`` would not apply. Make a new plan whenever the optimiser's state is replaced."""

    def __init__(self, groups: list[tuple[dict[str, Any], list[torch.Tensor], list[dict[str, Any]]]]):
        self.groups = [(group, params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                        [s["step"] for s in states]) for group, params, states in groups]  # fmt: skip
        self.counters = [s["step"].numpy() for _, _, states in groups for s in states]
        self.size = sum(len(params) for _, params, _ in groups)

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> FusedAdamPlan | None:
        if getattr(torch, "_fused_adam_", None) is None or not isinstance(optimizer, torch.optim.Adam):
            return None
        groups = []
        for group in optimizer.param_groups:
            if not _fusable(group):
                return None
            states = [optimizer.state.get(p) for p in group["params"]]
            if not all(states) or any(p.device.type != "cpu" or s["step"].device.type != "cpu"
                                      for p, s in zip(group["params"], states, strict=True)):  # fmt: skip
                return None
            if group["params"]:
                groups.append((group, list(group["params"]), states))
        return cls(groups)

    def step(self, grads: list[torch.Tensor]) -> None:
        """One step; ``grads``: one per parameter, in ``optimizer.param_groups`` order (read, never written)."""
        if len(grads) != self.size:
            raise ValueError(f"{len(grads)} gradients for {self.size} parameters")
        for counter in self.counters:
            np.add(counter, 1, out=counter)
        i = 0
        with torch.no_grad():
            for group, params, exp_avgs, exp_avg_sqs, steps in self.groups:
                beta1, beta2 = group["betas"]
                torch._fused_adam_(params, grads[i : i + len(params)], exp_avgs, exp_avg_sqs, [], steps,
                                   amsgrad=False, lr=group["lr"], beta1=float(beta1), beta2=float(beta2),
                                   weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                                   grad_scale=None, found_inf=None)  # fmt: skip
                i += len(params)
