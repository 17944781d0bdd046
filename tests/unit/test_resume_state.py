"""The pieces of an exact resume: the worker's sampling state, which envs can keep it, the schedules, and the
episode-mode step count."""

import numpy as np
import pytest

from rayac.config import Config
from rayac.envs import describe_env, make_training_env
from rayac.runner import Every
from rayac.sampling.rollout import RolloutWorker


def cartpole(**algo) -> Config:
    return Config.model_validate({"env": {"id": "CartPole-v1", "num_envs": 4, "seed": 3},
                                  "algo": {"rollout_steps": 16, **algo}})  # fmt: skip


def test_a_worker_continues_from_its_saved_state_exactly():
    cfg = cartpole()
    spec = describe_env(cfg.env)
    a = RolloutWorker(cfg, spec)
    a.sample()  # mid-episode: CartPole episodes outlast 16 random steps only sometimes
    blob = a.get_state()
    assert blob is not None
    b = RolloutWorker(cfg, spec, seed_offset=99)  # another start: other seeds, other episodes
    b.policy.load_state_dict(a.policy.state_dict())
    b.set_state(blob)
    for _ in range(3):
        ra, rb = a.sample(), b.sample()
        for field in ("obs", "actions", "rewards", "terminated", "truncated", "log_probs"):
            np.testing.assert_array_equal(getattr(ra, field), getattr(rb, field), err_msg=field)
        assert ra.episode_returns.tolist() == rb.episode_returns.tolist()


def test_envs_with_simulator_state_are_not_pickled_for_resume():
    pong = Config.model_validate({"env": {"id": "ALE/Pong-v5", "num_envs": 1, "atari": "auto"}})
    envs = make_training_env(pong.env, describe_env(pong.env), seed=0)
    try:
        assert not envs.state_is_picklable()  # ALE pickles, but comes back re-initialised
    finally:
        envs.close()
    worker = RolloutWorker(cartpole(), describe_env(cartpole().env))
    assert worker.envs.state_is_picklable()
    worker.envs = envs  # closed, but only its kind is asked
    assert worker.get_state() is None


def test_episode_mode_counts_every_step_the_envs_executed():
    cfg = cartpole(estimator="mc")
    ro = RolloutWorker(cfg, describe_env(cfg.env)).sample()
    executed = ro.obs.shape[0] * 4  # every env steps until the longest episode ends
    assert ro.env_steps == executed
    assert ro.mask.sum() < executed  # the shorter episodes' padding is no training data, but it was run


@pytest.mark.parametrize(
    ("interval", "start", "counts", "due"),
    [
        (100, 0, [50, 100, 150, 199, 200, 450], [False, True, False, False, True, True]),
        (100, 250, [260, 299, 300], [False, False, True]),  # a resumed run: the next multiple, not 100
        (None, 0, [0, 10**9], [False, False]),
        (0, 0, [5], [False]),
    ],
)
def test_every_is_due_once_per_multiple(interval, start, counts, due):
    every = Every(interval, start)
    assert [every.due(c) for c in counts] == due
