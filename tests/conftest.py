"""Shared fixtures. Ray tests share one local Ray started here (never `ray stop`: other Ray processes on the
host are not ours)."""

from __future__ import annotations

import os
import tempfile

import gymnasium as gym
import numpy as np
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.pop("RAY_ADDRESS", None)


class CounterEnv(gym.Env):
    """obs = [t]; reward 1 per step; never terminates by itself (a TimeLimit truncates it)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = bool(action == 1 and self.t >= 100)  # practically never
        return np.array([float(self.t)], np.float32), 1.0, terminated, False, {}


if "rayac-test/Counter-v0" not in gym.registry:
    gym.register("rayac-test/Counter-v0", entry_point=CounterEnv, max_episode_steps=3)


@pytest.fixture(scope="session")
def cartpole_spec():
    """The spaces of CartPole-v1, the default env (reading them makes an env: once per session)."""
    from rayac.config import EnvConfig
    from rayac.envs import describe_env

    return describe_env(EnvConfig())


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session, on loopback, with its own temp dir."""
    import ray

    short_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    os.environ["RAY_TMPDIR"] = short_tmp
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        _temp_dir=short_tmp,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
