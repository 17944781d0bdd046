"""envpool's NEXT_STEP autoreset: the step after an episode ends is a reset, not a transition.

A scripted engine with envpool's semantics makes the hand-worked expectations exact; a real envpool
CartPole checks that envpool behaves as the script says.
"""

from __future__ import annotations

import numpy as np
import torch

from rayac.advantages import compute_advantages, make_batch
from rayac.config import build_config
from rayac.envs import TrainingEnv, check_config_against_env
from rayac.sampling.rollout import RolloutWorker


class NextStepEngine:
    """Two envs with envpool's semantics. obs = [steps into the episode, 10 * env index].

    env 0 terminates on its 2nd step, env 1 is truncated on its 3rd. Reward = 1 per real step; the step
    after an end ignores the action, returns the first observation of the next episode, reward 0, not done.
    """

    num_envs = 2
    ends = {0: (2, "terminated"), 1: (3, "truncated")}

    def reset(self, **_):
        self.t = np.zeros(2, dtype=int)
        self.pending = np.zeros(2, dtype=bool)
        return self._obs(), {"env_id": np.arange(2)}

    def _obs(self):
        return np.stack([self.t, [0, 10]], axis=1).astype(np.float32)

    def step(self, actions):
        rew, term, trunc = np.zeros(2, np.float32), np.zeros(2, bool), np.zeros(2, bool)
        for i in range(2):
            if self.pending[i]:
                self.t[i], self.pending[i] = 0, False
                continue
            self.t[i] += 1
            rew[i] = 1.0
            length, kind = self.ends[i]
            if self.t[i] == length:
                (term if kind == "terminated" else trunc)[i] = True
                self.pending[i] = True
        return self._obs(), rew, term, trunc, {"env_id": np.arange(2)}

    def close(self):
        pass


def test_reset_steps_are_masked_and_truncation_bootstraps_from_the_final_observation():
    cfg = build_config(overrides=["env.id=CartPole-v1", "env.num_envs=2", "algo.estimator=nstep",
                                  "algo.gamma=0.5", "algo.rollout_steps=7"])  # fmt: skip
    spec = check_config_against_env(cfg)
    spec = type(spec)(**{**spec.to_dict(), "obs_shape": (2,), "obs_low": None, "obs_high": None})
    worker = RolloutWorker(cfg, spec)
    worker.envs = TrainingEnv(NextStepEngine(), next_step_reset=True)
    worker.obs = worker.envs.reset()
    ro = worker.sample()

    # hand-worked: t = 0..6. env 0: steps 1,2 (term at t=1), reset at t=2, steps at t=3,4 (term at t=4), reset t=5,
    # step t=6. env 1: steps t=0,1,2 (trunc at t=2), reset at t=3, steps t=4,5,6 (trunc at t=6).
    valid = np.array([[1, 1], [1, 1], [0, 1], [1, 0], [1, 1], [0, 1], [1, 1]], dtype=bool)
    np.testing.assert_array_equal(ro.mask, valid)
    np.testing.assert_array_equal(ro.terminated[:, 0], [0, 1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(ro.truncated[:, 1], [0, 0, 1, 0, 0, 0, 1])
    assert not ro.truncated[:, 0].any() and not ro.terminated[:, 1].any()
    np.testing.assert_array_equal(ro.rewards, valid.astype(np.float32))  # reset steps pay nothing
    assert ro.env_steps == 11  # 14 engine steps, 3 of them resets
    np.testing.assert_array_equal(ro.episode_lengths, [2, 3, 2, 3])
    np.testing.assert_array_equal(ro.episode_returns, [2.0, 3.0, 2.0, 3.0])

    # truncation bootstraps from V(final observation): NEXT_STEP hands it over as the step's own observation
    with torch.no_grad():
        v_final = worker.policy.value(torch.tensor([[3.0, 10.0], [3.0, 10.0]])).numpy()
    np.testing.assert_allclose(ro.final_values[[2, 6], 1], v_final, rtol=1e-5)  # float32 matmul: batch shape
    assert ro.final_values[:, 0].sum() == 0

    # n-step returns (gamma 0.5) to the rollout's end, by hand, for the valid steps of env 0 and env 1
    _, returns = compute_advantages(ro, cfg.algo)
    v = ro.values
    np.testing.assert_allclose(returns[0, 0], 1 + 0.5 * 1, rtol=1e-6)  # terminated at t=1: no bootstrap
    np.testing.assert_allclose(returns[1, 0], 1, rtol=1e-6)
    np.testing.assert_allclose(returns[3, 0], 1 + 0.5 * 1, rtol=1e-6)
    np.testing.assert_allclose(returns[6, 0], 1 + 0.5 * ro.last_value[0], rtol=1e-6)
    np.testing.assert_allclose(returns[0, 1], 1 + 0.5 + 0.25 * (1 + 0.5 * v_final[0]), rtol=1e-5)
    np.testing.assert_allclose(returns[4, 1], 1 + 0.5 * (1 + 0.5 * (1 + 0.5 * v_final[1])), rtol=1e-5)
    assert np.isfinite(v).all()

    batch = make_batch([ro], cfg.algo)
    assert len(batch.obs) == 11  # the reset steps are not training data
    # env 0's final observation [2, 0] is only ever acted on in a reset step: it must not be in the batch
    assert not np.any(np.all(batch.obs == [2.0, 0.0], axis=1))
    worker.close()


def test_real_envpool_resets_on_the_next_step_as_the_script_does():
    cfg = build_config(overrides=["env.id=CartPole-v1", "env.num_envs=2", "env.backend=envpool",
                                  "env.max_episode_steps=3", "algo.rollout_steps=8"])  # fmt: skip
    spec = check_config_against_env(cfg)
    worker = RolloutWorker(cfg, spec)
    assert worker.envs.next_step_reset
    ro = worker.sample()
    # with a 3-step limit (and CartPole never failing that early): 3 real steps, a reset step, 3 real, a reset
    expected = np.array([1, 1, 1, 0, 1, 1, 1, 0], dtype=bool)
    np.testing.assert_array_equal(ro.mask, np.stack([expected, expected], axis=1))
    np.testing.assert_array_equal(ro.truncated[:, 0], [0, 0, 1, 0, 0, 0, 1, 0])
    assert ro.env_steps == 12 and list(ro.episode_lengths) == [3, 3, 3, 3]
    assert (ro.final_values[[2, 6]] != 0).all()
    worker.close()


class LivesEngine:
    """Two envs (envpool's interface) that record the actions they get. Env 0 loses a life on its 2nd step;
    every step pays 1 point; nothing ever ends."""

    num_envs = 2

    def reset(self, **_):
        self.t, self.received = 0, []
        return np.zeros((2, 1), np.float32), {"lives": np.array([3, 3])}

    def step(self, actions):
        self.received.append(np.asarray(actions).tolist())
        self.t += 1
        lives = np.array([2 if self.t >= 2 else 3, 3])
        none = np.zeros(2, bool)
        return np.full((2, 1), self.t, np.float32), np.ones(2, np.float32), none, none, {"lives": lives}

    def close(self):
        pass


def test_after_a_lost_life_envpool_presses_fire_and_that_step_is_no_policy_decision():
    engine = LivesEngine()
    env = TrainingEnv(
        engine, next_step_reset=True, life_loss=True, clip_rewards=True, fire_after_life_loss=True
    )
    env.reset()
    steps = [env.step(np.array([3, 3])) for _ in range(4)]
    assert engine.received == [[3, 3], [3, 3], [1, 3], [3, 3]]  # FIRE (1) right after env 0's lost life only
    assert steps[1].terminated.tolist() == [True, False]  # the learner's episode ends with the life
    assert steps[2].valid.tolist() == [False, True] and steps[2].stepped.tolist() == [True, True]
    assert steps[2].rewards.tolist() == [0.0, 1.0]  # no training reward on the forced step ...
    assert env._return.tolist() == [4.0, 4.0]  # ... but the game's raw score and length count it
    assert steps[3].valid.all()

    plain = LivesEngine()
    env = TrainingEnv(plain, next_step_reset=True, life_loss=True)
    env.reset()
    for _ in range(4):
        env.step(np.array([3, 3]))
    assert plain.received == [[3, 3]] * 4  # games that need no FIRE are left alone


def test_real_envpool_breakout_serves_again_after_each_lost_life():
    from rayac.config import Config
    from rayac.envs import describe_env, make_training_env

    cfg = Config.model_validate({"env": {"id": "ALE/Breakout-v5", "num_envs": 2, "backend": "envpool"}})
    env = make_training_env(cfg.env, describe_env(cfg.env), seed=0)
    rng = np.random.default_rng(0)
    try:
        assert env.fire_after_life_loss
        env.reset()
        previous, forced = None, 0
        for _ in range(1500):
            step = env.step(rng.integers(0, 4, 2))
            fire = step.stepped & ~step.valid
            if fire.any():  # only right after a lost life (the learner's episode ended), never otherwise
                assert previous is not None and (previous.terminated[fire] & ~previous.game_over[fire]).all()
                forced += int(fire.sum())
            previous = step
        assert forced > 0
    finally:
        env.close()
