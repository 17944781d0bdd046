"""Environment construction, seeding and space descriptions.

Vector envs use gymnasium's SAME_STEP autoreset: when an episode ends, ``step`` returns the first
observation of the next episode and puts the true final observation in ``info["final_obs"]``,
which is what a truncated episode must bootstrap from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from rayac.config import Config, ConfigError, EnvConfig


def _make_one(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    return gym.make(cfg.id, **kwargs)


def make_env(cfg: EnvConfig, *, render_mode: str | None = None) -> gym.Env:
    """One env, for rendering and for reading spaces."""
    try:
        return _make_one(cfg, render_mode)
    except Exception as err:  # gymnasium raises many types; the user needs the field and the reason
        raise ConfigError("env.id", f"cannot make '{cfg.id}': {err}") from None


def make_vector_env(
    cfg: EnvConfig, *, num_envs: int | None = None, seed: int | None = None
) -> gym.vector.VectorEnv:
    """A vector env of ``num_envs`` copies with SAME_STEP autoreset; the caller resets it with seeds."""
    n = num_envs or cfg.num_envs
    fns = [lambda: _make_one(cfg) for _ in range(n)]
    vec_cls = gym.vector.AsyncVectorEnv if cfg.vectorization == "async" else gym.vector.SyncVectorEnv
    envs = vec_cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    envs.action_space.seed(cfg.seed if seed is None else seed)
    return envs


@dataclass(frozen=True)
class SpaceSpec:
    """A JSON-serialisable description of the observation and action spaces (no pickle, no env needed)."""

    obs_shape: tuple[int, ...]
    obs_dtype: str
    obs_low: list[Any] | None
    obs_high: list[Any] | None
    action_kind: str  # "discrete" | "box"
    action_n: int | None
    action_shape: tuple[int, ...]
    action_low: list[float] | None
    action_high: list[float] | None

    @classmethod
    def from_spaces(cls, obs_space: gym.Space, action_space: gym.Space) -> SpaceSpec:
        if not isinstance(obs_space, gym.spaces.Box):
            raise ConfigError("env.id", f"observation space {obs_space} is not supported (need a Box)")
        if isinstance(action_space, gym.spaces.Discrete):
            kind, n, shape, low, high = "discrete", int(action_space.n), (), None, None
        elif isinstance(action_space, gym.spaces.Box):
            kind, n, shape = "box", None, tuple(action_space.shape)
            low, high = action_space.low.tolist(), action_space.high.tolist()
        else:
            raise ConfigError(
                "env.id", f"action space {action_space} is not supported (need Discrete or Box)"
            )
        small = obs_space.low.size <= 4096
        return cls(
            obs_shape=tuple(int(d) for d in obs_space.shape),
            obs_dtype=str(obs_space.dtype),
            obs_low=obs_space.low.tolist() if small else None,
            obs_high=obs_space.high.tolist() if small else None,
            action_kind=kind,
            action_n=n,
            action_shape=shape,
            action_low=low,
            action_high=high,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpaceSpec:
        data = dict(data)
        data["obs_shape"] = tuple(data["obs_shape"])
        data["action_shape"] = tuple(data["action_shape"])
        return cls(**data)

    @property
    def discrete(self) -> bool:
        return self.action_kind == "discrete"

    @property
    def is_image(self) -> bool:
        return len(self.obs_shape) == 3

    def clip_actions(self, actions: np.ndarray) -> np.ndarray:
        if self.discrete:
            return actions
        return np.clip(actions, np.asarray(self.action_low), np.asarray(self.action_high))


def describe_env(cfg: EnvConfig) -> SpaceSpec:
    env = make_env(cfg)
    try:
        return SpaceSpec.from_spaces(env.observation_space, env.action_space)
    finally:
        env.close()


def check_config_against_env(cfg: Config) -> SpaceSpec:
    """Checks that need the env's spaces; raises ConfigError naming the field."""
    spec = describe_env(cfg.env)
    if cfg.algo.estimator == "q" and not spec.discrete:
        raise ConfigError(
            "algo.estimator", f"'q' needs a Discrete action space; {cfg.env.id} has Box actions"
        )
    if cfg.model.encoder == "cnn" and not spec.is_image:
        raise ConfigError(
            "model.encoder", f"'cnn' needs image observations; {cfg.env.id} has shape {spec.obs_shape}"
        )
    if cfg.model.encoder == "mlp" and spec.is_image and np.prod(spec.obs_shape) > 100_000:
        raise ConfigError(
            "model.encoder", f"'mlp' on {spec.obs_shape} images is too large; use 'cnn' or 'auto'"
        )
    return spec
