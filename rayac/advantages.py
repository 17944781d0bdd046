"""Advantage estimators: pure functions over time-major (T, N) numpy arrays.

Every estimator is built on ``next_values``: the value the step at t bootstraps from.
- ``terminated[t]``: 0. The episode is over; there is no future.
- ``truncated[t]``: V(final observation). The time limit cut the episode, the future still exists.
- otherwise V(s_{t+1}) (``values[t+1]``, or ``last_value`` at the rollout's end).
A step that ends the episode (terminated or truncated) also cuts every backward recursion, so no
return ever leaks from one episode into the next.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rayac.config import AlgoConfig
from rayac.types import Batch, Rollout


def next_values(
    values: np.ndarray,
    last_value: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    final_values: np.ndarray,
) -> np.ndarray:
    nxt = np.concatenate([values[1:], last_value[None]], axis=0)
    nxt = np.where(truncated, final_values, nxt)
    return np.where(terminated, 0.0, nxt).astype(np.float32)


def td_errors(rewards: np.ndarray, values: np.ndarray, last_value: np.ndarray, terminated: np.ndarray,
              truncated: np.ndarray, final_values: np.ndarray, *, gamma: float) -> np.ndarray:  # fmt: skip
    """δ_t = r_t + γ V(s_{t+1}) − V(s_t): the one-step TD error (batched TD actor-critic)."""
    nxt = next_values(values, last_value, terminated, truncated, final_values)
    return (rewards + gamma * nxt - values).astype(np.float32)


def gae(rewards: np.ndarray, values: np.ndarray, last_value: np.ndarray, terminated: np.ndarray,
        truncated: np.ndarray, final_values: np.ndarray, *, gamma: float, lam: float
        ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """GAE(λ): A_t = δ_t + γλ A_{t+1} within an episode. Returns (advantages, returns = A + V)."""
    delta = td_errors(rewards, values, last_value, terminated, truncated, final_values, gamma=gamma)
    done = terminated | truncated
    advantages = np.zeros_like(delta)
    running = np.zeros_like(delta[0])
    for t in reversed(range(len(delta))):
        running = delta[t] + gamma * lam * np.where(done[t], 0.0, running)
        advantages[t] = running
    return advantages, (advantages + values).astype(np.float32)


def nstep_returns(rewards: np.ndarray, values: np.ndarray, last_value: np.ndarray, terminated: np.ndarray,
                  truncated: np.ndarray, final_values: np.ndarray, *, gamma: float, n: int | None = None
                  ) -> np.ndarray:  # fmt: skip
    """R_t = r_t + γ r_{t+1} + … + γ^{k-1} r_{t+k-1} + γ^k V(s_{t+k}), k = min(n, steps to episode/rollout end).

    ``n=None`` bootstraps every step from the rollout's end (the A3C paper's t_max targets).
    """
    nxt = next_values(values, last_value, terminated, truncated, final_values)
    done = terminated | truncated
    horizon, n_envs = rewards.shape
    if n is None:
        returns = np.zeros_like(rewards, dtype=np.float32)
        running = nxt[-1]
        for t in reversed(range(horizon)):
            running = rewards[t] + gamma * np.where(done[t] | (t == horizon - 1), nxt[t], running)
            returns[t] = running
        return returns
    returns = np.zeros((horizon, n_envs), dtype=np.float32)
    for t in range(horizon):
        total = np.zeros(n_envs, dtype=np.float64)
        boot = np.zeros(n_envs, dtype=np.float64)
        discount = np.ones(n_envs, dtype=np.float64)
        active = np.ones(n_envs, dtype=bool)
        for i in range(t, min(t + n, horizon)):
            total += np.where(active, discount * rewards[i], 0.0)
            boot = np.where(active, discount * gamma * nxt[i], boot)  # bootstrap after the last step taken
            discount *= gamma
            active &= ~done[i]
        returns[t] = total + boot
    return returns


def mc_returns(
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    final_values: np.ndarray,
    mask: np.ndarray,
    *,
    gamma: float,
) -> np.ndarray:
    """Discounted returns of whole episodes, G_t = r_t + γ G_{t+1}; a truncated end bootstraps V(final).

    Each env's data (``mask``) must end with its episode's end: 'mc' never guesses the future.
    """
    done = terminated | truncated
    last_valid = mask.shape[0] - 1 - np.argmax(mask[::-1], axis=0)
    has_data = mask.any(axis=0)
    if not np.all(done[last_valid, np.arange(mask.shape[1])] | ~has_data):
        raise ValueError("'mc' needs whole episodes: an env's data ends before its episode does")
    zeros = np.zeros_like(rewards[0])
    return nstep_returns(rewards, zeros[None].repeat(len(rewards), 0), zeros, terminated, truncated, final_values,
                         gamma=gamma)  # fmt: skip


class VTrace(NamedTuple):
    """V-trace's outputs, each (T, N): ``vs`` the critic's targets, ``pg_advantages`` the policy-gradient weights."""

    vs: np.ndarray
    pg_advantages: np.ndarray


def vtrace(rewards: np.ndarray, values: np.ndarray, last_value: np.ndarray, terminated: np.ndarray,
           truncated: np.ndarray, final_values: np.ndarray, *, log_rhos: np.ndarray, gamma: float,
           rho_bar: float = 1.0, c_bar: float = 1.0, lam: float = 1.0) -> VTrace:  # fmt: skip
    """V-trace (Espeholt et al. 2018, "IMPALA", eq. 1 and Remark 1), off-policy targets for a lagging behaviour μ.

    log_rhos = log π(a_t|x_t) − log μ(a_t|x_t), the learner's policy π against the one that sampled (μ).
        ρ_t = min(ρ̄, π/μ)                        truncated importance weight: which value function is learnt
        c_t = λ · min(c̄, π/μ)                    "trace" coefficients: how fast a correction propagates back
        δ_t V = ρ_t (r_t + γ V(x_{t+1}) − V(x_t))
        v_s − V(x_s) = δ_s V + γ c_s (v_{s+1} − V(x_{s+1}))
        A_s = ρ_s (r_s + γ v_{s+1} − V(x_s))       the policy-gradient advantage
    V(x_{t+1}) is ``next_values``: 0 after a termination, V(final observation) after a truncation, and an episode's
    end cuts the recursion (v_{t+1} = V(x_{t+1}) there), as in every other estimator here. At the rollout's end
    v_T = V(x_T) = ``last_value``. With π = μ and ρ̄ = c̄ = λ = 1, v_s is the n-step return to the rollout's end.
    """
    rhos = np.exp(log_rhos.astype(np.float64))
    clipped_rhos = np.minimum(rho_bar, rhos)
    cs = lam * np.minimum(c_bar, rhos)
    nxt = next_values(values, last_value, terminated, truncated, final_values).astype(np.float64)
    not_done = ~(terminated | truncated)
    deltas = clipped_rhos * (rewards + gamma * nxt - values)
    vs_minus_v = np.zeros_like(deltas)  # v_s − V(x_s)
    acc = np.zeros_like(deltas[0])  # v_{s+1} − V(x_{s+1}); 0 past the rollout's end
    next_vs = np.zeros_like(deltas)  # v_{s+1}: what A_s bootstraps from
    for t in reversed(range(len(deltas))):
        next_vs[t] = nxt[t] + np.where(not_done[t], acc, 0.0)
        acc = deltas[t] + gamma * cs[t] * np.where(not_done[t], acc, 0.0)
        vs_minus_v[t] = acc
    vs = values + vs_minus_v
    pg_advantages = clipped_rhos * (rewards + gamma * next_vs - values)
    return VTrace(vs.astype(np.float32), pg_advantages.astype(np.float32))


def compute_advantages(rollout: Rollout, algo: AlgoConfig) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns), both (T, N): the policy-gradient weight and the critic's target."""
    r, v, lv = rollout.rewards, rollout.values, rollout.last_value
    term, trunc, fv = rollout.terminated, rollout.truncated, rollout.final_values
    gamma = algo.gamma
    if algo.estimator == "gae":
        return gae(r, v, lv, term, trunc, fv, gamma=gamma, lam=algo.gae_lambda)
    if algo.estimator == "td":
        delta = td_errors(r, v, lv, term, trunc, fv, gamma=gamma)
        return delta, delta + v
    if algo.estimator == "nstep":
        returns = nstep_returns(r, v, lv, term, trunc, fv, gamma=gamma, n=algo.n_step)
        return returns - v, returns
    if algo.estimator == "mc":
        returns = mc_returns(r, term, trunc, fv, rollout.mask, gamma=gamma)
        return returns - v, returns
    if algo.estimator == "q":
        # SARSA target r + γ Q(s', a'); the critic's Q(s, a) itself is the policy weight.
        sarsa_target = r + gamma * next_values(v, lv, term, trunc, fv)
        return v.copy(), sarsa_target.astype(np.float32)
    raise ValueError(f"unknown estimator {algo.estimator!r}")


def make_batch(rollouts: list[Rollout], algo: AlgoConfig) -> Batch:
    """Advantages per rollout (time-major), then flatten and drop padding."""
    parts = []
    for ro in rollouts:
        adv, ret = compute_advantages(ro, algo)
        m = ro.mask
        parts.append((ro.obs[m], ro.actions[m], adv[m], ret[m]))
    return Batch(*(np.concatenate(cols, axis=0) for cols in zip(*parts, strict=True)))
