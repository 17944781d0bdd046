"""Learner (A2C): owns the global policy and its optimiser; turns rollouts into one gradient step.

``build_optimizer`` and ``apply_gradients`` are shared with the A3C ParameterServer, so a push and
a synchronous update are the same arithmetic.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from rayac.advantages import make_batch
from rayac.config import Config, ConfigError, OptimConfig
from rayac.envs import SpaceSpec
from rayac.losses import actor_critic_loss, to_tensors, vtrace_loss
from rayac.optimizers import RMSpropTF
from rayac.policy import ActorCritic, build_policy, weights_to_numpy
from rayac.types import Rollout


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("resources.device", "'cuda' requested but torch sees no CUDA device")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("resources.device", "'mps' requested but torch sees no MPS device")
    return torch.device(name)


def build_optimizer(policy: ActorCritic, optim: OptimConfig) -> torch.optim.Optimizer:
    """Two parameter groups, actor then critic, so separate nets can have separate learning rates."""
    groups = [
        {"params": policy.actor_parameters(), "lr": optim.actor_lr or optim.lr, "name": "actor"},
        {"params": policy.critic_parameters(), "lr": optim.critic_lr or optim.lr, "name": "critic"},
    ]
    if optim.name == "rmsprop_tf":
        return RMSpropTF(groups, lr=optim.lr, alpha=optim.rmsprop_alpha, eps=optim.eps)
    if optim.name == "rmsprop":
        return torch.optim.RMSprop(
            groups, lr=optim.lr, alpha=optim.rmsprop_alpha, eps=optim.eps, foreach=True
        )
    return torch.optim.Adam(groups, lr=optim.lr, eps=optim.eps, foreach=True)  # foreach: one kernel per group


def set_learning_rates(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, total_env_steps: int | None
) -> None:
    """The config's learning rates, over whatever a loaded optimiser state carried (a resume with
    ``--set optim.lr=...`` changes the rate; the moments and step counts stay). Under ``lr_schedule: linear``
    the schedule restarts from the new rate at the progress already made."""
    for group in optimizer.param_groups:
        base = (optim.critic_lr if group.get("name") == "critic" else optim.actor_lr) or optim.lr
        group["lr"] = group["initial_lr"] = base
        if optim.lr_schedule == "linear" and total_env_steps:
            group["lr"] = base * max(0.0, 1.0 - group.get("env_steps", 0) / total_env_steps)


def apply_gradients(
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    grads: list[torch.Tensor] | None,
    max_grad_norm: float | None,
) -> float:
    """Set ``grads`` (or keep the ones from backward), clip the global norm, step. Returns the pre-clip norm."""
    params = list(policy.parameters())
    if grads is not None:
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.tensor(g, device=p.device, dtype=p.dtype)  # a copy: arrays from Ray are read-only
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    optimizer.step()
    return float(norm)


class Learner:
    def __init__(self, cfg: Config, spec: SpaceSpec):
        self.cfg = cfg
        self.device = resolve_device(cfg.resources.device)
        torch.manual_seed(cfg.env.seed)  # network init is part of the seed
        self.policy = build_policy(
            spec, cfg.model, estimator=cfg.algo.estimator, scale_rewards=cfg.algo.scale_rewards
        ).to(self.device)
        self.optimizer = build_optimizer(self.policy, cfg.optim)
        self.version = 0

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        lr = self._anneal(sum(r.env_steps for r in rollouts))
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.algo.name == "impala":  # V-trace on the learner's own V and log π, side by side in time
            loss, metrics = vtrace_loss(self.policy, side_by_side(rollouts), self.cfg.algo, self.device)
        else:
            batch = to_tensors(make_batch(rollouts, self.cfg.algo), self.device)
            loss, metrics = actor_critic_loss(self.policy, batch, self.cfg.algo)
        loss.backward()
        metrics["train/grad_norm"] = apply_gradients(
            self.policy, self.optimizer, None, self.cfg.algo.max_grad_norm
        )
        self.merge_statistics(rollouts)
        self.version += 1
        if lr is not None:
            metrics["train/lr"] = lr
        return metrics

    def _anneal(self, num_steps: int) -> float | None:
        """optim.lr_schedule=linear: lr = lr₀ · (1 − env steps so far / total), counting this batch, as SB3 does.

        The count lives in the optimiser's param groups, so it is saved in optimizer.pt and a resumed run
        continues the schedule where it stopped."""
        total = self.cfg.run.stop.total_env_steps
        if self.cfg.optim.lr_schedule != "linear" or total is None:
            return None
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["env_steps"] = group.get("env_steps", 0) + num_steps
            group["lr"] = group["initial_lr"] * max(0.0, 1.0 - group["env_steps"] / total)
        return float(self.optimizer.param_groups[0]["lr"])

    def merge_statistics(self, rollouts: list[Rollout]) -> None:
        """Fold every worker's observation / return moments into the policy's normalisers, after the update:
        the update used the statistics the rollouts were sampled with; the next rollouts use the merged ones."""
        if self.policy.obs_norm is not None:
            self.policy.obs_norm.merge([r.obs_moments for r in rollouts if r.obs_moments is not None])
        if self.policy.return_norm is not None:
            self.policy.return_norm.merge(
                [r.return_moments for r in rollouts if r.return_moments is not None]
            )

    def get_weights(self) -> dict[str, np.ndarray]:
        return weights_to_numpy(self.policy)

    def published(self) -> tuple[dict[str, np.ndarray], int]:
        """(weights, version) for a Ray actor called with ``num_returns=2``: the driver waits on the small
        version alone, which tells it the weights are in the object store, without fetching them."""
        return self.get_weights(), self.version

    def update_each(self, *rollouts: Rollout) -> dict[str, float]:
        """``update`` for a Ray actor: each rollout a separate argument, so Ray hands it over resolved, fetched
        from the object store of the node that sampled it, without passing through the driver."""
        return self.update(list(rollouts))

    # the same checkpoint shape as the A3C ParameterServer: (weights, optimiser state, version)
    def get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
        weights = {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}
        return weights, tensors_to_cpu(self.optimizer.state_dict()), self.version

    def restore(self, weights: dict[str, Any], optimizer_state: dict[str, Any] | None, version: int) -> None:
        self.policy.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
            set_learning_rates(self.optimizer, self.cfg.optim, self.cfg.run.stop.total_env_steps)
        self.version = version

    def get_version(self) -> int:
        return self.version

    def pid(self) -> int:
        """This learner's process (fault tests SIGKILL it)."""
        return os.getpid()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


def side_by_side(rollouts: list[Rollout]) -> Rollout:
    """Rollouts of the same length as one: their envs side by side, (T, N₁ + N₂ + …)."""
    if len(rollouts) == 1:
        return rollouts[0]
    first = rollouts[0]

    def cat(name: str, axis: int) -> np.ndarray:
        return np.concatenate([getattr(r, name) for r in rollouts], axis=axis)

    time_major = ("obs", "actions", "rewards", "terminated", "truncated", "values", "log_probs", "final_values",
                  "mask")  # fmt: skip
    last_obs = None if any(r.last_obs is None for r in rollouts) else cat("last_obs", 0)
    return first._replace(
        **{name: cat(name, 1) for name in time_major},
        last_value=cat("last_value", 0),
        last_obs=last_obs,
        env_steps=sum(r.env_steps for r in rollouts),
        episode_returns=cat("episode_returns", 0),
        episode_lengths=cat("episode_lengths", 0),
        obs_moments=None,
        return_moments=None,
    )


def tensors_to_cpu(obj: Any) -> Any:
    """A nested state (an optimiser's) with every tensor on the CPU: what crosses Ray and goes to disk."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: tensors_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [tensors_to_cpu(v) for v in obj]
    return obj
