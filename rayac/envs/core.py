"""Environment construction, seeding and config checks that need the env's spaces.

``make_env`` / ``make_vector_env`` build the env as played (evaluation, GIFs, reading the spaces);
``make_training_env`` builds what rollout workers step: a ``TrainingEnv`` over gymnasium or envpool,
with the training-only transforms (Atari life loss, reward clipping) on top.
"""

from __future__ import annotations

import importlib.util
import os

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from rayac.config import Config, ConfigError, EnvConfig
from rayac.envs.atari import game_needs_fire, make_atari
from rayac.envs.extras import extra_for, missing_extra_message, register_atari
from rayac.envs.spec import SpaceSpec, image_layout
from rayac.envs.vector import TrainingEnv, make_envpool


def _make_one(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    if cfg.id.startswith("ALE/"):
        register_atari()
    if cfg.is_atari:
        return make_atari(cfg, render_mode)
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    return gym.make(cfg.id, **kwargs)


def _cannot_make(cfg: EnvConfig, err: Exception) -> ConfigError:
    """The field and the reason an env could not be made: the extra to install, or gymnasium's words (and, for a
    MuJoCo env, the MUJOCO_GL it was made under: a backend that is not installed fails at ``import mujoco``)."""
    extra = extra_for(cfg.id)
    gl = os.environ.get("MUJOCO_GL") if extra == "mujoco" else None
    # with mujoco installed, an ImportError under MUJOCO_GL is its GL backend, not a missing extra
    installed = gl is not None and importlib.util.find_spec("mujoco") is not None
    if extra is not None and not installed and (isinstance(err, gym.error.DependencyNotInstalled | ImportError)
                                                or (isinstance(err, ValueError) and "extra" in str(err))):  # fmt: skip
        return ConfigError("env.id", missing_extra_message(cfg.id, extra))
    hint = f" (MUJOCO_GL={gl} is set: unset it, or install that GL backend)" if gl else ""
    return ConfigError("env.id", f"cannot make '{cfg.id}': {err}{hint}")


def make_env(cfg: EnvConfig, *, render_mode: str | None = None) -> gym.Env:
    """One env, for rendering and for reading spaces."""
    try:
        return _make_one(cfg, render_mode)
    except ConfigError:
        raise
    except Exception as err:  # gymnasium raises many types; the user needs the field and the reason
        raise _cannot_make(cfg, err) from None


def make_vector_env(
    cfg: EnvConfig, *, num_envs: int | None = None, seed: int | None = None
) -> gym.vector.VectorEnv:
    """A gymnasium vector env of ``num_envs`` copies with SAME_STEP autoreset, as played (no training transforms)."""
    n = num_envs or cfg.num_envs
    fns = [lambda: _make_one(cfg) for _ in range(n)]
    vec_cls = gym.vector.AsyncVectorEnv if cfg.vectorization == "async" else gym.vector.SyncVectorEnv
    try:
        envs = vec_cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    except ConfigError:
        raise
    except Exception as err:  # as make_env: evaluation made this way printed a traceback
        raise _cannot_make(cfg, err) from None
    envs.action_space.seed(cfg.seed if seed is None else seed)
    return envs


def make_training_env(cfg: EnvConfig, spec: SpaceSpec, *, seed: int) -> TrainingEnv:
    """What a rollout worker steps: env ``i`` is seeded ``seed + i`` on either backend."""
    atari = cfg.is_atari
    transforms = {
        "life_loss": atari and cfg.terminal_on_life_loss,
        "clip_rewards": atari and cfg.clip_rewards,
    }
    if cfg.backend == "envpool":
        engine = make_envpool(cfg, num_envs=cfg.num_envs, seed=seed, atari=atari)
        shape = tuple(engine.observation_space.shape)
        if shape != spec.obs_shape:
            raise ConfigError(
                "env.backend", f"envpool's observations are {shape}, gymnasium's {spec.obs_shape}"
            )
        # envpool presses FIRE on reset itself (use_fire_reset), not after a lost life: the training env does
        fire = atari and game_needs_fire(cfg.id)
        return TrainingEnv(engine, next_step_reset=True, fire_after_life_loss=fire, **transforms)
    engine = make_vector_env(cfg, seed=seed)
    return TrainingEnv(engine, next_step_reset=False, **transforms)


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
            "model.encoder",
            f"'cnn' needs uint8 image observations bounded 0..255; {cfg.env.id} has {spec.obs_dtype} "
            f"{spec.obs_shape}",
        )
    if cfg.model.encoder != "mlp" and spec.is_image:
        image_layout(spec.obs_shape)  # a layout the CNN cannot read is a config error naming the shape
    if cfg.model.encoder == "mlp" and spec.is_image and np.prod(spec.obs_shape) > 100_000:
        raise ConfigError(
            "model.encoder", f"'mlp' on {spec.obs_shape} images is too large; use 'cnn' or 'auto'"
        )
    if cfg.model.normalize_obs and spec.is_image:
        raise ConfigError("model.normalize_obs", "is for vector observations; images are scaled by 1/255")
    if cfg.env.backend == "envpool":
        make_training_env(cfg.env.model_copy(update={"num_envs": 1}), spec, seed=cfg.env.seed).close()
    return spec
