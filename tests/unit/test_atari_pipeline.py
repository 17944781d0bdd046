"""The Atari pipeline: shapes and dtypes end to end, clipped training rewards vs raw scores, life loss in training only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayac.advantages import make_batch
from rayac.config import build_config
from rayac.envs import check_config_against_env, make_env, make_training_env
from rayac.learning.learner import Learner
from rayac.losses import to_tensors
from rayac.sampling.rollout import RolloutWorker


def atari_config(env_id: str = "ALE/Pong-v5", *extra: str):
    return build_config(overrides=[f"env.id={env_id}", "env.num_envs=2", "algo.rollout_steps=8", *extra])


def test_uint8_84x84_frames_stay_uint8_from_env_to_learner():
    cfg = atari_config()
    spec = check_config_against_env(cfg)
    assert spec.obs_shape == (4, 84, 84) and spec.obs_dtype == "uint8" and spec.is_image

    env = make_env(cfg.env)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    env.close()

    worker = RolloutWorker(cfg, spec)
    rollout = worker.sample()
    assert rollout.obs.shape == (8, 2, 4, 84, 84) and rollout.obs.dtype == np.uint8
    assert rollout.obs.max() > 0  # real frames, not an empty buffer
    batch = to_tensors(make_batch([rollout], cfg.algo), torch.device("cpu"))
    assert batch.obs.dtype == torch.uint8  # the learner moves uint8; the CNN's first layer scales it

    learner = Learner(cfg, spec)
    metrics = learner.update([rollout])
    assert np.isfinite(metrics["train/loss"])
    worker.close()


def test_cnn_divides_uint8_images_by_255_and_inits_orthogonally():
    cfg = atari_config()
    spec = check_config_against_env(cfg)
    learner = Learner(cfg, spec)
    cnn = learner.policy.actor_body
    frames = torch.full((1, 4, 84, 84), 255, dtype=torch.uint8)
    ones = torch.ones((1, 4, 84, 84))
    torch.testing.assert_close(cnn(frames), cnn.fc(cnn.conv(ones)))
    conv = cnn.conv[0].weight.detach().reshape(32, -1)
    # orthogonal rows with gain sqrt(2): W Wᵀ = 2 I
    torch.testing.assert_close(conv @ conv.T, 2 * torch.eye(32), atol=1e-4, rtol=1e-4)


def run_training_env(cfg, steps: int, seed: int = 0):
    spec = check_config_against_env(cfg)
    env = make_training_env(cfg.env, spec, seed=seed)
    env.reset(seed=[seed + i for i in range(env.num_envs)])
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield env.step(rng.integers(0, spec.action_n, size=env.num_envs))
    env.close()


def test_training_rewards_are_clipped_while_games_report_the_raw_score():
    # Space Invaders pays 5..30 points per alien: clipping to the sign shows at once
    cfg = atari_config("ALE/SpaceInvaders-v5", "env.max_episode_steps=250")
    clipped, raw_scores = np.zeros(2), []
    for step in run_training_env(cfg, 260):
        assert set(np.unique(step.rewards)) <= {-1.0, 0.0, 1.0}
        clipped += step.rewards
        raw_scores += step.game_return[step.game_over].tolist()
        if len(raw_scores) == 2:
            break
    assert len(raw_scores) == 2
    assert sum(raw_scores) > 0 and sum(raw_scores) >= 5 * clipped.sum()  # raw points, not reward counts

    raw_cfg = atari_config("ALE/SpaceInvaders-v5", "env.max_episode_steps=250", "env.clip_rewards=false")
    assert any(step.rewards.max() >= 5 for step in run_training_env(raw_cfg, 250))


def test_life_loss_ends_an_episode_in_training_only():
    cfg = atari_config("ALE/Breakout-v5")
    life_ends = game_overs = 0
    for step in run_training_env(cfg, 3000):
        life_ends += int((step.terminated & ~step.game_over).sum())
        game_overs += int(step.game_over.sum())
        if game_overs:
            break
    assert game_overs >= 1
    assert life_ends >= 4  # Breakout has 5 lives: four end the learner's episode before the game is over

    # evaluation plays the whole game: terminated only when the last life is gone
    env = make_env(cfg.env)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5000):
        _, _, terminated, truncated, info = env.step(int(rng.integers(0, 4)))
        if terminated or truncated:
            break
        assert info["lives"] >= 1
    assert terminated and info["lives"] == 0
    env.close()

    no_life_loss = atari_config("ALE/Breakout-v5", "env.terminal_on_life_loss=false")
    for step in run_training_env(no_life_loss, 3000):
        assert not (step.terminated & ~step.game_over).any()
        if step.game_over.any():
            break


def test_fire_on_reset_only_for_games_that_need_it():
    from rayac.envs.atari import FireOnReset

    def has_fire(env) -> bool:
        while hasattr(env, "env"):
            if isinstance(env, FireOnReset):
                return True
            env = env.env
        return False

    assert has_fire(make_env(atari_config("ALE/Breakout-v5").env))
    assert not has_fire(make_env(atari_config("ALE/MsPacman-v5").env))


def test_frameskip_in_kwargs_is_a_config_error():
    from rayac.config import ConfigError

    with pytest.raises(ConfigError, match="env.frame_skip"):
        check_config_against_env(atari_config("ALE/Pong-v5", "env.kwargs={frameskip: 4}"))


def test_ale_prints_no_banner_per_env():
    """`A.L.E: Arcade Learning Environment (version …)` and `[Powered by Stella]`, once per env and Ray worker, came
    after a Pong run's summary as worker log lines."""
    import subprocess
    import sys

    code = ("from rayac.envs.extras import register_atari; register_atari(); import gymnasium as gym; "
            "e = gym.make('ALE/Pong-v5'); e.reset(seed=0); e.step(0); print('stepped')")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "stepped\n", done.stderr
    assert "A.L.E" not in done.stderr and "Stella" not in done.stderr, done.stderr
