"""The actor-critic loss: the whole of the math on one screen."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from rayac.advantages import vtrace
from rayac.config import AlgoConfig
from rayac.policy import ActorCritic
from rayac.types import Batch, Rollout


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


def vtrace_loss(
    policy: ActorCritic, rollout: Rollout, cfg: AlgoConfig, device: torch.device
) -> tuple[torch.Tensor, dict[str, float]]:
    """IMPALA's loss on one (T, N) rollout sampled by a behaviour policy μ that may lag the learner's π.

    V-trace (rayac.advantages.vtrace) turns the learner's own V and log π into targets v_s and advantages."""
    horizon, n_envs = rollout.rewards.shape
    obs = torch.as_tensor(rollout.obs, device=device).flatten(0, 1)
    actions = torch.as_tensor(rollout.actions, device=device).flatten(0, 1)
    log_prob, entropy, values = policy.evaluate_actions(obs, actions)
    log_prob, entropy, values = (x.view(horizon, n_envs) for x in (log_prob, entropy, values))
    with torch.no_grad():
        if rollout.last_obs is not None:  # bootstrap from the learner's V(s_T), not the behaviour's
            last_value = policy.value(torch.as_tensor(rollout.last_obs, device=device)).cpu().numpy()
        else:
            last_value = rollout.last_value
        log_rhos = log_prob.detach().cpu().numpy() - rollout.log_probs  # log π(a|s) − log μ(a|s)
    targets = vtrace(rollout.rewards, values.detach().cpu().numpy(), last_value, rollout.terminated,
                     rollout.truncated, rollout.final_values, log_rhos=log_rhos, gamma=cfg.gamma,
                     rho_bar=cfg.rho_bar, c_bar=cfg.c_bar, lam=cfg.vtrace_lambda)  # fmt: skip
    mask = torch.as_tensor(rollout.mask, device=device)
    vs = torch.as_tensor(targets.vs, device=device)[mask]
    advantages = torch.as_tensor(targets.pg_advantages, device=device)[mask]
    advantage_mean = float(advantages.mean())
    if cfg.normalize_advantages and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    # policy gradient: ρ_s (r_s + γ v_{s+1} − V(x_s)) ∇ log π(a_s|x_s), the weight a constant
    policy_loss = -(advantages * log_prob[mask]).mean()
    # critic: regress V(x_s) on the V-trace target v_s
    value_loss = F.mse_loss(values[mask], vs)
    # entropy bonus
    entropy_mean = entropy[mask].mean()
    loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy_mean

    rhos = np.exp(log_rhos[rollout.mask])
    metrics = {
        "train/loss": loss.item(),
        "train/policy_loss": policy_loss.item(),
        "train/value_loss": value_loss.item(),
        "train/entropy": entropy_mean.item(),
        "train/advantage_mean": advantage_mean,
        "impala/rho_mean": float(rhos.mean()),
        "impala/rho_clipped_frac": float((rhos > cfg.rho_bar).mean()),
    }
    return loss, metrics
