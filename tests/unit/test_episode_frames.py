"""The dashboard's half-size episode GIF keeps thin lines: CartPole's 1-pixel track must survive."""

import numpy as np

from rayac.config import Config, EnvConfig
from rayac.envs import describe_env
from rayac.evaluate import downscale_frame, play_episode
from rayac.policy import build_policy


def _track_rows(frame: np.ndarray, darker_than: int) -> list[int]:
    """Rows dark across (nearly) the whole width: the cart's track."""
    dark = frame.min(axis=2) < darker_than
    return [y for y in range(frame.shape[0]) if dark[y].mean() > 0.9]


def test_half_size_frames_keep_the_cartpole_track():
    env_cfg = EnvConfig(id="CartPole-v1")
    policy = build_policy(describe_env(env_cfg), Config().model, estimator="gae")
    full, _, _ = play_episode(policy, env_cfg, seed=0, max_steps=3)
    half, _, _ = play_episode(policy, env_cfg, seed=0, max_steps=3, downscale=2)  # the same episode at 1/2
    assert _track_rows(full[0], 50) == [299]  # one pixel high, on an odd row: every 2nd row would miss it
    assert half[0].shape == (200, 300, 3)
    assert _track_rows(half[0], 200) == [149]  # still there, a grey line (the mean of black and white)
    assert _track_rows(full[0][::2, ::2], 200) == []  # what taking every 2nd pixel showed


def test_downscale_is_the_block_mean():
    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 2
    out = downscale_frame(frame, 2)
    expected = frame.reshape(2, 2, 3, 2, 3).astype(int).sum(axis=(1, 3)) // 4
    np.testing.assert_array_equal(out, expected)
    assert downscale_frame(frame[:3, :5], 2).shape == (1, 2, 3)  # a ragged edge is cropped
    assert downscale_frame(frame, 1) is frame
