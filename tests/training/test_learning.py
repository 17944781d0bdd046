"""Learning tests: train for real on a small budget and assert the agent learned (not only that it ran)."""

import pytest

import rayac
from rayac.config import build_config
from tests.runs import quiet

pytestmark = pytest.mark.slow


def test_q_cartpole_learns(tmp_path):
    """The Q actor-critic preset on seed 0 reaches the 475 target at ~45k env steps (random play: ~22).

    In the same 80k budget, estimator=q on plain A2C settings (separate nets, lr 2e-3) stays at ~9 and the preset
    without its expected-value baseline peaks at 216, so the bar of 400 fails if either comes back; it leaves room for
    float round-off on another CPU to take a slightly different path."""
    cfg = build_config(preset="q_cartpole", overrides=quiet("env.seed=0", "run.stop.total_env_steps=80000"))
    res = rayac.train(cfg, run_dir=tmp_path / "run")
    assert res.best_eval_return is not None and res.best_eval_return >= 400, res
