"""The Atari pipeline for one env, as in the DQN / A3C papers, built from gymnasium's own wrappers.

ALE/*-v5 ids already skip 4 frames and repeat the last action with probability 0.25 (sticky actions).
The env is made with ``frameskip=1`` so ``AtariPreprocessing`` does the skipping (with the max over the
last two frames that removes flicker); ``repeat_action_probability`` comes from ``env.kwargs`` (the presets
set 0.0, as the NoFrameskip-v4 ids used by the A3C paper and RL-Zoo; leave it out for v5's 0.25).

Life loss and reward clipping are *not* wrappers here: they are training-only transforms that the
training vector env applies (``rayac.envs.vector``) on top of the same pipeline, so evaluation and the
episode statistics always see the game as played, with its raw score.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rayac.config import ConfigError, EnvConfig


class FireOnReset(gym.Wrapper):
    """Press FIRE to start play, for games that wait for it: after a reset and after each lost life.

    Breakout serves the ball only on FIRE; a greedy policy that never presses it would idle until the time
    limit (27k steps) after its first lost life. Baselines get the same effect in training from
    EpisodicLifeEnv + FireResetEnv; doing it here makes evaluation behave the same way.
    """

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        for action in (1, 2):  # FIRE, then another action: some games need both to start (as in baselines)
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = info.get("lives")
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = info.get("lives")
        if (
            not (terminated or truncated)
            and lives is not None
            and self.lives is not None
            and lives < self.lives
        ):
            obs, extra, terminated, truncated, info = self.env.step(1)  # serve again after the lost life
            reward += extra
        self.lives = info.get("lives")
        return obs, reward, terminated, truncated, info


def needs_fire(env: gym.Env) -> bool:
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


def game_needs_fire(env_id: str) -> bool:
    """Whether the game serves on FIRE, read from ALE's action meanings (envpool does not expose them)."""
    from rayac.envs.extras import register_atari

    register_atari()
    env = gym.make(env_id)
    try:
        return needs_fire(env)
    finally:
        env.close()


def make_atari(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """ALE env → AtariPreprocessing (no-ops, skip, 84x84 gray) → fire on reset → FrameStackObservation."""
    kwargs = dict(cfg.kwargs)
    if kwargs.get("frameskip", 1) != 1:
        raise ConfigError(
            "env.kwargs.frameskip", "the Atari pipeline skips frames itself: set env.frame_skip"
        )
    kwargs["frameskip"] = 1
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    env = gym.make(cfg.id, **kwargs)
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=cfg.noop_max, frame_skip=cfg.frame_skip, screen_size=84, terminal_on_life_loss=False,
        grayscale_obs=True, scale_obs=False,
    )  # fmt: skip
    if (
        cfg.max_episode_steps is not None
    ):  # in agent steps, as envpool counts them (v5's own limit is in frames)
        env = gym.wrappers.TimeLimit(env, cfg.max_episode_steps)
    if needs_fire(env):
        env = FireOnReset(env)
    return gym.wrappers.FrameStackObservation(env, cfg.frame_stack)


def envpool_kwargs(cfg: EnvConfig) -> dict[str, Any]:
    """The same pipeline in envpool's terms; life loss and clipping stay off (the training env applies them)."""
    return {
        "stack_num": cfg.frame_stack,
        "frame_skip": cfg.frame_skip,
        "noop_max": cfg.noop_max,
        "img_height": 84,
        "img_width": 84,
        "gray_scale": True,
        "episodic_life": False,
        "reward_clip": False,
        "use_fire_reset": True,
        "repeat_action_probability": float(cfg.kwargs.get("repeat_action_probability", 0.25)),
    }


def sign_rewards(rewards: np.ndarray) -> np.ndarray:
    return np.sign(rewards).astype(np.float32)
