"""Estimators against numbers worked out by hand (γ = 0.5, λ = 0.5).

Two envs, four steps:
- env 0 terminates at t=1 (no bootstrap there) and runs on; the rollout ends mid-episode (bootstrap 5).
- env 1 is truncated at t=2 (bootstrap from V(final obs) = 10) and runs on; bootstrap 2 at the end.
"""

import numpy as np
import pytest

from rayac.advantages import compute_advantages, gae, mc_returns, next_values, nstep_returns, td_errors
from rayac.config import AlgoConfig
from rayac.types import Rollout

G, LAM = 0.5, 0.5
R = np.array([[1, 1], [1, 2], [1, 3], [1, 4]], dtype=np.float32)
V = np.array([[1, 1], [2, 1], [3, 1], [4, 1]], dtype=np.float32)
LAST = np.array([5, 2], dtype=np.float32)
TERM = np.zeros((4, 2), bool)
TERM[1, 0] = True
TRUNC = np.zeros((4, 2), bool)
TRUNC[2, 1] = True
FINAL = np.zeros((4, 2), np.float32)
FINAL[2, 1] = 10.0
ARGS = (R, V, LAST, TERM, TRUNC, FINAL)


def col(a, b, c, d):
    return np.array([a, b, c, d], dtype=np.float32)


def test_next_values_terminated_zero_truncated_final():
    nxt = next_values(V, LAST, TERM, TRUNC, FINAL)
    np.testing.assert_allclose(nxt[:, 0], col(2, 0, 4, 5))
    np.testing.assert_allclose(nxt[:, 1], col(1, 1, 10, 2))


def test_td_errors():
    delta = td_errors(*ARGS, gamma=G)
    np.testing.assert_allclose(delta[:, 0], col(1, -1, 0, -0.5))
    np.testing.assert_allclose(delta[:, 1], col(0.5, 1.5, 7, 4))


def test_gae():
    adv, ret = gae(*ARGS, gamma=G, lam=LAM)
    np.testing.assert_allclose(adv[:, 0], col(0.75, -1, -0.125, -0.5))
    np.testing.assert_allclose(adv[:, 1], col(1.3125, 3.25, 7, 4))
    np.testing.assert_allclose(ret, adv + V)


def test_nstep_to_rollout_end_a3c_style():
    ret = nstep_returns(*ARGS, gamma=G)
    np.testing.assert_allclose(ret[:, 0], col(1.5, 1, 2.75, 3.5))
    np.testing.assert_allclose(ret[:, 1], col(4, 6, 8, 5))


def test_nstep_fixed_horizons():
    np.testing.assert_allclose(nstep_returns(*ARGS, gamma=G, n=1), td_errors(*ARGS, gamma=G) + V)
    ret2 = nstep_returns(*ARGS, gamma=G, n=2)
    np.testing.assert_allclose(ret2[:, 0], col(1.5, 1, 2.75, 3.5))
    np.testing.assert_allclose(ret2[:, 1], col(2.25, 6, 8, 5))


def test_gae_lambda_one_is_nstep_and_lambda_zero_is_td():
    adv1, _ = gae(*ARGS, gamma=G, lam=1.0)
    np.testing.assert_allclose(adv1, nstep_returns(*ARGS, gamma=G) - V, rtol=1e-6)
    adv0, _ = gae(*ARGS, gamma=G, lam=0.0)
    np.testing.assert_allclose(adv0, td_errors(*ARGS, gamma=G))


def test_mc_whole_episodes_with_truncation_and_padding():
    rewards = np.array([[1, 1], [1, 1], [1, 99]], np.float32)
    term = np.array([[0, 0], [0, 0], [1, 0]], bool)
    trunc = np.array([[0, 0], [0, 1], [0, 0]], bool)
    final = np.array([[0, 0], [0, 4], [0, 0]], np.float32)
    mask = np.array([[1, 1], [1, 1], [1, 0]], bool)  # env 1 is padding after its truncation
    ret = mc_returns(rewards, term, trunc, final, mask, gamma=G)
    np.testing.assert_allclose(ret[:, 0], [1.75, 1.5, 1])
    np.testing.assert_allclose(ret[:2, 1], [2.5, 3])  # 1 + .5 (1 + .5 * V(final)=4)


def test_mc_refuses_unfinished_episodes():
    rewards = np.ones((2, 1), np.float32)
    none = np.zeros((2, 1), bool)
    with pytest.raises(ValueError, match="whole episodes"):
        mc_returns(rewards, none, none, np.zeros((2, 1), np.float32), np.ones((2, 1), bool), gamma=G)


def _rollout(values=V):
    return Rollout(
        obs=np.zeros((4, 2, 1), np.float32),
        actions=np.zeros((4, 2), np.int64),
        rewards=R,
        terminated=TERM,
        truncated=TRUNC,
        values=values,
        log_probs=np.zeros((4, 2), np.float32),
        final_values=FINAL,
        mask=np.ones((4, 2), bool),
        last_value=LAST,
        env_steps=8,
        episode_returns=np.zeros(0),
        episode_lengths=np.zeros(0, np.int64),
        version=0,
    )


def test_q_estimator_uses_q_as_weight_and_sarsa_targets():
    # values are Q(s_t, a_t); the target bootstraps Q(s_{t+1}, a_{t+1}) within an episode (SARSA)
    adv, target = compute_advantages(_rollout(), AlgoConfig(estimator="q", gamma=G))
    np.testing.assert_allclose(adv, V)
    np.testing.assert_allclose(target[:, 0], col(2, 1, 3, 3.5))
    np.testing.assert_allclose(target[:, 1], col(1.5, 2.5, 8, 5))


@pytest.mark.parametrize("estimator", ["gae", "td", "nstep"])
def test_dispatch_returns_are_targets_minus_values(estimator):
    adv, ret = compute_advantages(_rollout(), AlgoConfig(estimator=estimator, gamma=G, gae_lambda=LAM))
    np.testing.assert_allclose(ret - V, adv, rtol=1e-6)
