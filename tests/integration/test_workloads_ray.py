"""Real workloads on Ray rollout workers: uint8 frames cross Ray as uint8; normaliser statistics from every worker."""

import numpy as np
import pytest

from rayac.algorithms.a2c import A2C
from rayac.config import build_config
from rayac.envs import check_config_against_env

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_atari_frames_cross_ray_as_uint8(ray_session):
    import ray

    cfg = build_config(overrides=["env.id=ALE/Pong-v5", "env.num_envs=2", "resources.num_workers=2",
                                  "env.backend=envpool", "algo.rollout_steps=4"])  # fmt: skip
    algo = A2C(cfg, check_config_against_env(cfg))
    try:
        rollout = ray.get(algo.group.actors[0].sample_with.remote(algo.get_weights(), 0), timeout=300)
        assert rollout.obs.dtype == np.uint8 and rollout.obs.shape == (4, 2, 4, 84, 84)
        result = algo.train_step()
        assert result.num_steps == 2 * 2 * 4  # Pong ends no game in 4 steps: no envpool reset step to mask
    finally:
        algo.stop()


def test_learner_merges_observation_statistics_from_both_ray_workers(ray_session):
    cfg = build_config(overrides=["env.id=Pendulum-v1", "env.num_envs=2", "resources.num_workers=2",
                                  "model.normalize_obs=true", "algo.rollout_steps=8"])  # fmt: skip
    algo = A2C(cfg, check_config_against_env(cfg))
    try:
        for _ in range(3):
            algo.train_step()
        # 3 updates × 2 workers × 2 envs × 8 steps observations, on top of the 1e-4 prior
        assert float(algo.learner.local.policy.obs_norm.count) == pytest.approx(96, abs=1e-3)
        weights = algo.get_weights()
        assert weights["obs_norm.count"] == pytest.approx(96, abs=1e-3)  # what the workers sample with next
    finally:
        algo.stop()
