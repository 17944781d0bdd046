"""Runs whose checkpoints hold constructed policies (no training): a CartPole MLP, a HalfCheetah-shaped Gaussian
policy with its observation normaliser, and a Pong Nature CNN; and raw observations for each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rayac.checkpoint import save_checkpoint
from rayac.config import build_config
from rayac.envs import SpaceSpec
from rayac.policy import build_policy

CARTPOLE = SpaceSpec(obs_shape=(4,), obs_dtype="float32", obs_low=None, obs_high=None, action_kind="discrete",
                     action_n=2, action_shape=(), action_low=None, action_high=None)  # fmt: skip
HALFCHEETAH = SpaceSpec(obs_shape=(17,), obs_dtype="float64", obs_low=None, obs_high=None, action_kind="box",
                        action_n=None, action_shape=(6,), action_low=[-1.0] * 6, action_high=[1.0] * 6)  # fmt: skip
PONG = SpaceSpec(obs_shape=(4, 84, 84), obs_dtype="uint8", obs_low=None, obs_high=None, action_kind="discrete",
                 action_n=6, action_shape=(), action_low=None, action_high=None, obs_image=True)  # fmt: skip
CASES = {"cartpole": ("a2c_cartpole", CARTPOLE), "halfcheetah": ("a2c_halfcheetah", HALFCHEETAH),
         "pong": ("a2c_pong", PONG)}  # fmt: skip


def make_run(
    run_dir: Path | str, name: str, *, steps: tuple[int, ...] = (1000,), evals: tuple | None = None
) -> Path:
    """A run dir whose checkpoints hold a constructed policy of ``CASES[name]``: heads drawn large enough that
    actions and probabilities vary across observations as a trained policy's do (logits of O(1)), and
    (HalfCheetah) a normaliser far from identity."""
    run_dir, (preset, spec) = Path(run_dir), CASES[name]
    cfg = build_config(preset=preset)
    torch.manual_seed(0)
    for k, step in enumerate(steps):
        policy = build_policy(
            spec, cfg.model, estimator=cfg.algo.estimator, scale_rewards=cfg.algo.scale_rewards
        )
        with torch.no_grad():
            for param in policy.parameters():  # the initialisation's trunk; non-zero biases, sharper heads
                if param.dim() == 1:
                    param.normal_(0.0, 0.1)
            for head in (policy.policy_head, policy.value_head):
                head.weight.normal_(0.0, 0.1 if name == "pong" else 0.5)
            if policy.obs_norm is not None:
                policy.obs_norm.mean.copy_(torch.linspace(-3, 3, 17))
                policy.obs_norm.var.copy_(torch.linspace(0.1, 25, 17))
        state = {"env_steps": step, "iterations": k, "episodes": 0, "version": k,
                 "eval_return": None if evals is None else evals[k]}  # fmt: skip
        save_checkpoint(run_dir / "checkpoints" / f"ckpt_{step:012d}", weights=policy.state_dict(),
                        optimizer_state=None, cfg=cfg, spec=spec, state=state)  # fmt: skip
    return run_dir


def observations(name: str, n: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(1)
    if name == "pong":
        return rng.integers(0, 256, (n, 4, 84, 84), dtype=np.uint8)
    if name == "halfcheetah":  # raw scale, past the normaliser's ±10 clip for some
        return (rng.normal(0, 1, (n, 17)) * np.linspace(1, 40, 17)).astype(np.float32)
    return rng.normal(0, 1.5, (n, 4)).astype(np.float32)
