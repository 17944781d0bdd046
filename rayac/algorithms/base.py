"""What the Runner needs from an algorithm, and the factory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rayac.config import Config
from rayac.envs import SpaceSpec


@dataclass
class StepResult:
    """One train step: env steps consumed, episodes finished, namespaced metrics."""

    num_steps: int
    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)


class Algorithm(Protocol):
    version: int

    def train_step(self) -> StepResult: ...

    def get_weights(self) -> dict[str, np.ndarray]: ...

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
        """(weights as tensors, optimiser state, version)."""
        ...

    def restore(
        self, weights: dict[str, Any], optimizer_state: dict[str, Any] | None, version: int
    ) -> None: ...

    def counters(self) -> dict[str, int]:
        """Whole-run counts (restarts, pushes) for the metrics; saved in checkpoints."""
        ...

    def restore_counters(self, saved: dict[str, int]) -> None: ...

    def sampler_state(self) -> list[bytes | None]:
        """What sampling continues from (one entry per worker; None where it cannot be saved)."""
        ...

    def restore_sampler(self, states: list[bytes | None]) -> bool:
        """Continue sampling from ``sampler_state``; False when the run cannot (it then samples afresh)."""
        ...

    def stop(self) -> None: ...


def make_algorithm(cfg: Config, spec: SpaceSpec, *, seed_offset: int = 0, **kwargs: Any) -> Algorithm:
    if cfg.algo.name == "a3c":
        from rayac.a3c.driver import A3C

        return A3C(cfg, spec, seed_offset=seed_offset, **kwargs)
    if cfg.algo.name == "impala":
        from rayac.algorithms.impala import IMPALA

        return IMPALA(cfg, spec, seed_offset=seed_offset)
    from rayac.algorithms.a2c import A2C

    return A2C(cfg, spec, seed_offset=seed_offset)


def concat_episodes(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
