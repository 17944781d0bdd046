"""Helpers for tests that train for real: quiet runs in a temp dir (no progress bar, TensorBoard or tables)."""

from __future__ import annotations

from pathlib import Path

import rayac
from rayac.config import Config, build_config
from rayac.runner import RunResult, load_run_config


def quiet(*extra: str) -> list[str]:
    """Overrides that keep a test run silent and light: no progress bar, no TensorBoard, no summary tables."""
    return ["run.progress_bar=false", "run.tensorboard=false", "run.log_interval_s=1000", *extra]


def tiny_config(*overrides: str, preset: str = "a2c_cartpole", steps: int = 3000) -> Config:
    return build_config(
        preset=preset,
        overrides=quiet(f"run.stop.total_env_steps={steps}", "run.eval_interval_steps=1000", *overrides),
    )


def tiny_run(
    tmp_path: Path, name: str, *overrides: str, preset: str = "a2c_cartpole", steps: int = 3000
) -> RunResult:
    """A short num_workers=0 run of ``preset`` (3000 env steps, evaluated every 1000) in ``tmp_path/name``."""
    return rayac.train(tiny_config(*overrides, preset=preset, steps=steps), run_dir=tmp_path / name)


def resume_run(run_dir: Path, *overrides: str) -> RunResult:
    """``rayac train --resume run_dir --set ...``: the run's own config, these overrides on top."""
    cfg = build_config(overrides=quiet(*overrides), base=load_run_config(run_dir))
    return rayac.train(cfg, run_dir=run_dir, resume=True)
