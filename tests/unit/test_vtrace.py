"""V-trace against a brute-force loop over the paper's sum (Espeholt et al. 2018, eq. 1), with terminations,
truncations (bootstrap from V of the final observation) and importance-weight clips that bind."""

import numpy as np
import pytest

from rayac.advantages import nstep_returns, vtrace

from .test_advantages import ARGS, FINAL, LAST, TERM, TRUNC, G, R, V, col


def brute_force_vtrace(rewards, values, last_value, terminated, truncated, final_values, log_rhos, *, gamma,
                       rho_bar, c_bar, lam):  # fmt: skip
    """v_s = V(x_s) + Σ_{t≥s} γ^{t−s} (Π_{i<t} c_i) δ_t V, the sum stopping at the step that ends the episode."""
    horizon, n_envs = rewards.shape
    ratio = np.exp(log_rhos.astype(np.float64))
    rho, c = np.minimum(rho_bar, ratio), lam * np.minimum(c_bar, ratio)

    def v_next(t, e):  # V(x_{t+1}) as the env saw it
        if terminated[t, e]:
            return 0.0
        if truncated[t, e]:
            return float(final_values[t, e])
        return float(last_value[e]) if t == horizon - 1 else float(values[t + 1, e])

    vs = np.zeros((horizon, n_envs))
    adv = np.zeros((horizon, n_envs))
    for e in range(n_envs):
        for s in range(horizon):
            total, trace = 0.0, 1.0
            for t in range(s, horizon):
                delta = rho[t, e] * (rewards[t, e] + gamma * v_next(t, e) - values[t, e])
                total += gamma ** (t - s) * trace * delta
                if terminated[t, e] or truncated[t, e]:
                    break
                trace *= c[t, e]
            vs[s, e] = values[s, e] + total
        for s in range(horizon):
            ended = terminated[s, e] or truncated[s, e] or s == horizon - 1
            following = v_next(s, e) if ended else vs[s + 1, e]
            adv[s, e] = rho[s, e] * (rewards[s, e] + gamma * following - values[s, e])
    return vs, adv


def random_rollout(seed, horizon=12, n_envs=5):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(horizon, n_envs)).astype(np.float32)
    values = rng.normal(size=(horizon, n_envs)).astype(np.float32)
    last_value = rng.normal(size=n_envs).astype(np.float32)
    terminated = rng.random((horizon, n_envs)) < 0.12
    truncated = (rng.random((horizon, n_envs)) < 0.12) & ~terminated
    terminated[3, 0], truncated[5, 1] = True, True  # at least one of each
    final_values = np.where(truncated, rng.normal(size=(horizon, n_envs)), 0).astype(np.float32)
    log_rhos = rng.normal(scale=0.8, size=(horizon, n_envs)).astype(np.float32)
    return (rewards, values, last_value, terminated, truncated, final_values), log_rhos


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("rho_bar", "c_bar", "lam"), [(1.0, 1.0, 1.0), (1.5, 0.8, 0.9), (0.7, 1.2, 0.5)])
def test_vtrace_equals_the_brute_force_sum(seed, rho_bar, c_bar, lam):
    args, log_rhos = random_rollout(seed)
    ratio = np.exp(log_rhos)
    assert (ratio > rho_bar).any() and (ratio > c_bar).any()  # both clips bind somewhere
    out = vtrace(*args, log_rhos=log_rhos, gamma=0.9, rho_bar=rho_bar, c_bar=c_bar, lam=lam)
    vs, adv = brute_force_vtrace(*args, log_rhos, gamma=0.9, rho_bar=rho_bar, c_bar=c_bar, lam=lam)
    np.testing.assert_allclose(out.vs, vs, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out.pg_advantages, adv, atol=1e-6, rtol=0)


def test_on_policy_vtrace_is_the_nstep_return_to_the_rollout_end():
    """ρ = 1, ρ̄ = c̄ = λ = 1: v_s is rayac's n-step target (n=None), and the advantage is v_s − V(x_s)."""
    for args in (ARGS, random_rollout(7)[0]):
        zeros = np.zeros_like(args[0])
        out = vtrace(*args, log_rhos=zeros, gamma=G, rho_bar=1.0, c_bar=1.0, lam=1.0)
        returns = nstep_returns(*args, gamma=G)
        np.testing.assert_allclose(out.vs, returns, atol=1e-6)
        np.testing.assert_allclose(out.pg_advantages, returns - args[1], atol=1e-6)
    # the hand-worked numbers of test_advantages: env 0 terminates at t=1, env 1 is truncated at t=2
    out = vtrace(R, V, LAST, TERM, TRUNC, FINAL, log_rhos=np.zeros_like(R), gamma=G)
    np.testing.assert_allclose(out.vs[:, 0], col(1.5, 1, 2.75, 3.5))
    np.testing.assert_allclose(out.vs[:, 1], col(4, 6, 8, 5))


def test_the_clips_bind():
    """One step, π/μ = 5: ρ̄ = 1 keeps δ at its on-policy size; c̄ = 1 keeps the correction from growing 5x."""
    r, v, last = np.array([[1.0], [1.0]], np.float32), np.zeros((2, 1), np.float32), np.zeros(1, np.float32)
    none = np.zeros((2, 1), bool)
    log_rhos = np.full((2, 1), np.log(5.0), np.float32)
    out = vtrace(r, v, last, none, none, np.zeros((2, 1), np.float32), log_rhos=log_rhos, gamma=0.5)
    # δ_1 = min(1, 5)·1 = 1; v_0 = δ_0 + γ·min(1, 5)·δ_1 = 1 + 0.5 = 1.5 (unclipped: 5 + 0.5·5·5 = 17.5)
    np.testing.assert_allclose(out.vs[:, 0], [1.5, 1.0])
    np.testing.assert_allclose(out.pg_advantages[:, 0], [1.5, 1.0])  # ρ_0 (r_0 + γ v_1 − V) = 1 + 0.5
    wide = vtrace(r, v, last, none, none, np.zeros((2, 1), np.float32), log_rhos=log_rhos, gamma=0.5,
                  rho_bar=10.0, c_bar=10.0)  # fmt: skip
    np.testing.assert_allclose(wide.vs[:, 0], [17.5, 5.0])
