"""Greedy evaluation on separate envs, and GIF rendering of a trained policy."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rayac.checkpoint import atomic_write_file
from rayac.config import EnvConfig
from rayac.envs import SpaceSpec, make_env, make_vector_env
from rayac.policy import ActorCritic, load_numpy_weights

EVAL_SEED_OFFSET = 1_000_003


class Evaluator:
    """Runs ``episodes`` episodes at once (one env each) with deterministic actions.

    The env seeds are a function of ``at_step`` (the training step count the evaluation is for): successive
    evaluations see different start states, and a resumed run evaluates on the seeds a straight run would.
    """

    def __init__(self, env_cfg: EnvConfig, policy: ActorCritic, *, episodes: int, max_steps: int = 100_000):
        self.env_cfg = env_cfg
        self.policy = policy.eval()
        self.episodes = episodes
        self.max_steps = max_steps
        self.envs = make_vector_env(env_cfg.model_copy(update={"vectorization": "sync"}), num_envs=episodes)
        self.spec: SpaceSpec = policy.spec

    @torch.inference_mode()
    def evaluate(self, weights: dict[str, np.ndarray] | None = None, *, at_step: int = 0) -> dict[str, float]:
        if weights is not None:
            load_numpy_weights(self.policy, weights)
        base = self.env_cfg.seed + EVAL_SEED_OFFSET + at_step * self.episodes  # disjoint for distinct steps
        obs, _ = self.envs.reset(seed=[base + i for i in range(self.episodes)])
        returns = np.zeros(self.episodes)
        lengths = np.zeros(self.episodes, dtype=np.int64)
        alive = np.ones(self.episodes, dtype=bool)
        for _ in range(self.max_steps):
            actions = self.policy.actions(torch.as_tensor(obs), deterministic=True)
            obs, rewards, terminated, truncated, _ = self.envs.step(self.spec.clip_actions(actions.numpy()))
            returns += np.where(alive, rewards, 0.0)
            lengths += alive
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
        return {
            "eval/return_mean": float(returns.mean()),
            "eval/return_std": float(returns.std()),
            "eval/return_min": float(returns.min()),
            "eval/length_mean": float(lengths.mean()),
        }

    def close(self) -> None:
        self.envs.close()


def downscale_frame(frame: np.ndarray, k: int) -> np.ndarray:
    """``frame`` (H, W, C) at 1/k resolution, each pixel the mean of its k×k block: a 1-pixel line (CartPole's
    track) stays as a fainter line, where taking every k-th pixel drops it when it falls between."""
    if k == 1:
        return frame
    h, w = frame.shape[0] // k * k, frame.shape[1] // k * k
    total = np.zeros((h // k, w // k, *frame.shape[2:]), np.uint16)
    for dy in range(k):  # k² strided adds: ~10x faster than a sum over a reshaped block axis
        for dx in range(k):
            total += frame[dy:h:k, dx:w:k]
    return (total // (k * k)).astype(np.uint8)


@torch.inference_mode()
def play_episode(policy: ActorCritic, env_cfg: EnvConfig, *, seed: int = 0, max_steps: int = 1000,
                 downscale: int = 1) -> tuple[list[np.ndarray], float, int]:  # fmt: skip
    """One greedy episode, rendered: (frames at 1/``downscale`` resolution, its return, its length)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen; no display needed
    env = make_env(env_cfg, render_mode="rgb_array")
    k = downscale
    try:
        obs, _ = env.reset(seed=seed)
        frames = [downscale_frame(env.render(), k)]
        total, steps = 0.0, 0
        for steps in range(1, max_steps + 1):  # noqa: B007
            action = policy.actions(torch.as_tensor(obs[None]), deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(policy.spec.clip_actions(action.numpy())[0])
            total += float(reward)
            frames.append(downscale_frame(env.render(), k))
            if terminated or truncated:
                break
    finally:
        env.close()
    return frames, total, steps


def render_gif(policy: ActorCritic, env_cfg: EnvConfig, path: Path, *, seed: int = 0, max_steps: int = 1000,
               fps: int = 30, downscale: int = 1) -> dict[str, float]:  # fmt: skip
    """Play one greedy episode and write it as an animated GIF (atomically), in this process: a renderer that
    aborts (MuJoCo without GL) ends it, so rayac's own callers use ``rayac.render.render_episode``. Returns its
    return, length and frame count."""
    import imageio.v2 as imageio

    frames, total, steps = play_episode(policy, env_cfg, seed=seed, max_steps=max_steps, downscale=downscale)
    atomic_write_file(
        Path(path), lambda tmp: imageio.mimsave(tmp, frames, format="GIF", duration=1000 / fps, loop=0)
    )
    return {"return": total, "length": steps, "frames": len(frames)}
