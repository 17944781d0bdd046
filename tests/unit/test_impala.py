"""IMPALA without Ray: in process it alternates sampling and learning, so the data is on-policy and a seed gives
the same weights bit for bit; ρ̄ reaches the loss; rollouts beyond max_lag are dropped and counted."""

import numpy as np
import pytest
import torch

from rayac.algorithms.impala import IMPALA
from rayac.config import build_config
from rayac.learning.learner import Learner
from rayac.sampling.rollout import RolloutWorker


def impala_cfg(*overrides: str):
    return build_config(preset="impala_cartpole", overrides=["resources.num_workers=0", *overrides])


def run_steps(cfg, spec, n):
    algo = IMPALA(cfg, spec)
    try:
        results = [algo.train_step() for _ in range(n)]
        return algo.get_weights(), results
    finally:
        algo.stop()


def test_in_process_impala_is_on_policy_and_reproducible(cartpole_spec):
    cfg = impala_cfg("env.seed=3")
    weights_a, results = run_steps(cfg, cartpole_spec, 6)
    weights_b, _ = run_steps(cfg, cartpole_spec, 6)
    for key in weights_a:
        np.testing.assert_array_equal(weights_a[key], weights_b[key])
    for res in results:  # the learner sees exactly the policy that sampled: ρ = 1, no lag, nothing clipped
        m = res.metrics
        assert abs(m["impala/rho_mean"] - 1.0) < 1e-5 and m["impala/rho_clipped_frac"] == 0.0
        assert m["impala/lag_mean"] == m["impala/lag_max"] == 0 and m["impala/dropped"] == 0
        assert res.num_steps == 2 * cfg.env.num_envs * cfg.algo.rollout_steps  # learner_batch_rollouts = 2
    other, _ = run_steps(impala_cfg("env.seed=4"), cartpole_spec, 6)
    assert any(not np.array_equal(weights_a[k], other[k]) for k in weights_a)


def test_rho_bar_reaches_the_loss(cartpole_spec):
    """A behaviour policy that made each action e times less likely than the learner's: ρ = e everywhere."""
    worker = RolloutWorker(impala_cfg(), cartpole_spec)
    rollout = worker.sample()
    worker.close()
    learner_rollout = None
    outcomes = {}
    for rho_bar in (1.0, 100.0):
        learner = Learner(impala_cfg(f"algo.rho_bar={rho_bar}", f"algo.c_bar={rho_bar}"), cartpole_spec)
        with torch.no_grad():  # the learner's own log π of the sampled actions
            obs = torch.as_tensor(rollout.obs).flatten(0, 1)
            log_pi = learner.policy.evaluate_actions(obs, torch.as_tensor(rollout.actions).flatten(0, 1))[0]
        learner_rollout = rollout._replace(log_probs=log_pi.view(rollout.rewards.shape).numpy() - 1.0)
        metrics = learner.update([learner_rollout])
        outcomes[rho_bar] = (metrics, learner.get_weights())
    clipped, wide = outcomes[1.0], outcomes[100.0]
    assert clipped[0]["impala/rho_mean"] == pytest.approx(np.e, rel=1e-4)
    assert clipped[0]["impala/rho_clipped_frac"] == 1.0 and wide[0]["impala/rho_clipped_frac"] == 0.0
    assert clipped[0]["train/policy_loss"] != pytest.approx(wide[0]["train/policy_loss"], rel=0.05)
    assert any(not np.array_equal(clipped[1][k], wide[1][k]) for k in clipped[1])


class StaleFeed:
    """Hands out the wrapped rollouts with the versions given, as a lagging worker group would."""

    def __init__(self, rollout, versions):
        self.items = [rollout._replace(version=v) for v in versions]

    def get(self, count):
        out, self.items = self.items[:count], self.items[count:]
        return out

    def sampler_wait_s(self):
        return 0.25

    def close(self):
        pass


def test_rollouts_beyond_max_lag_are_dropped_and_counted(cartpole_spec):
    algo = IMPALA(impala_cfg("algo.max_lag=2", "algo.learner_batch_rollouts=2"), cartpole_spec)
    try:
        rollout = algo.group.sample_local()
        algo.learner.local.version = 5
        algo.feed = StaleFeed(rollout, [1, 4, 2, 5])  # lags 4, 1, 3, 0: the first and third are dropped
        res = algo.train_step()
    finally:
        algo.stop()
    m = res.metrics
    assert (
        m["impala/dropped"] == 2
        and m["impala/dropped_total"] == 2
        and algo.counters()["impala/dropped_total"] == 2
    )
    assert m["impala/lag_mean"] == 0.5 and m["impala/lag_max"] == 1
    assert res.num_steps == 4 * rollout.env_steps  # dropped rollouts' env steps happened: they still count
    assert m["time/sampler_wait_s"] == 0.25 and 0 <= m["time/learner_idle_frac"] <= 1
    assert algo.version == 6
