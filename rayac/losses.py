"""The actor-critic loss: the whole of the math on one screen."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rayac.config import AlgoConfig
from rayac.policy import ActorCritic
from rayac.types import Batch


def to_tensors(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(torch.as_tensor(x, device=device) for x in batch))


def actor_critic_loss(
    policy: ActorCritic, batch: Batch, cfg: AlgoConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """``batch`` holds tensors. Returns (loss, metrics)."""
    log_prob, entropy, values = policy.evaluate_actions(batch.obs, batch.actions)
    advantages = batch.advantages
    if cfg.estimator == "q" and cfg.q_baseline == "expected":
        # A(s,a) = Q(s,a) − V(s), V(s) = Σ_a' π(a'|s) Q(s,a'): a baseline that depends only on s leaves the
        # expected gradient unchanged and removes the part of Q that says "this state is good", not "this action"
        with torch.no_grad():
            advantages = advantages - policy.value(batch.obs)
    advantage_mean = float(advantages.mean())  # the policy weight as used (before any normalisation)
    if cfg.normalize_advantages and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    # policy gradient: raise log π(a|s) in proportion to how much better than expected a was
    policy_loss = -(advantages.detach() * log_prob).mean()
    # critic: regress V(s) (or Q(s,a)) on its target
    value_loss = F.mse_loss(values, batch.returns)
    # entropy bonus: subtracting β·H keeps the policy from collapsing early
    entropy_mean = entropy.mean()
    loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy_mean

    with torch.no_grad():
        var_returns = batch.returns.var()
        explained = (
            1.0 - (batch.returns - values).var() / var_returns if var_returns > 0 else torch.tensor(0.0)
        )
    metrics = {
        "train/loss": loss.item(),
        "train/policy_loss": policy_loss.item(),
        "train/value_loss": value_loss.item(),
        "train/entropy": entropy_mean.item(),
        "train/explained_variance": float(explained),
        "train/advantage_mean": advantage_mean,
    }
    return loss, metrics
