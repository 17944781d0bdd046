"""The 'q' estimator: a Q(s,a) critic on SARSA targets, and its optional expected-value baseline."""

import numpy as np
import pytest
import torch

from rayac.advantages import compute_advantages
from rayac.config import ConfigError, build_config
from rayac.envs import describe_env
from rayac.losses import actor_critic_loss
from rayac.policy import build_policy
from rayac.sampling.rollout import RolloutWorker
from rayac.types import Batch


def q_setup(*overrides):
    cfg = build_config(overrides=["algo.estimator=q", "algo.ent_coef=0", "algo.vf_coef=0", *overrides])
    torch.manual_seed(0)
    return cfg, build_policy(describe_env(cfg.env), cfg.model, estimator="q")


@pytest.mark.parametrize("baseline", ["none", "expected"])
def test_policy_weight_is_q_or_q_minus_its_policy_average(baseline):
    cfg, policy = q_setup(f"algo.q_baseline={baseline}")
    obs, actions = torch.randn(6, 4), torch.tensor([0, 1, 1, 0, 1, 0])
    with torch.no_grad():
        q_all = policy.value_head(policy.critic_body(obs))
        probs = policy.action_probs(obs)
    q_sa = q_all.gather(1, actions[:, None]).squeeze(1)
    batch = Batch(obs, actions, q_sa, torch.zeros(6))  # compute_advantages hands the loss Q(s_t, a_t)
    loss, _ = actor_critic_loss(policy, batch, cfg.algo)
    log_prob, _, _ = policy.evaluate_actions(obs, actions)
    weight = q_sa - (probs * q_all).sum(1) if baseline == "expected" else q_sa
    torch.testing.assert_close(loss, -(weight * log_prob).mean())
    if baseline == "expected":  # zero mean under the policy: it says which action is better, not which state
        torch.testing.assert_close((probs * (q_all - (probs * q_all).sum(1, keepdim=True))).sum(1),
                                   torch.zeros(6), atol=1e-6, rtol=0)  # fmt: skip


def test_sarsa_targets_from_a_rollout():
    cfg, _ = q_setup("env.id=rayac-test/Counter-v0", "env.num_envs=2", "algo.rollout_steps=7")
    ro = RolloutWorker(cfg, describe_env(cfg.env)).sample()
    weight, target = compute_advantages(ro, cfg.algo)
    np.testing.assert_array_equal(weight, ro.values)  # Q(s_t, a_t) as sampled
    g = cfg.algo.gamma
    # mid-episode: r + γ Q(s_{t+1}, a_{t+1}); a truncated end: r + γ V(final obs); the rollout's end: r + γ V(s_T)
    np.testing.assert_allclose(target[0], 1 + g * ro.values[1], rtol=1e-6)
    np.testing.assert_allclose(target[2], 1 + g * ro.final_values[2], rtol=1e-6)
    np.testing.assert_allclose(target[6], 1 + g * ro.last_value, rtol=1e-6)


def test_q_baseline_needs_the_q_estimator():
    with pytest.raises(ConfigError, match="algo.q_baseline") as err:
        build_config(overrides=["algo.estimator=gae", "algo.q_baseline=expected"])
    assert "'q' estimator" in err.value.message
    assert (
        build_config(overrides=["algo.estimator=q", "algo.q_baseline=expected"]).algo.q_baseline == "expected"
    )
