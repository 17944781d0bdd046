"""IMPALA: asynchronous actor-critic with V-trace (Espeholt et al. 2018).

Workers sample continuously, each rollout tagged with the weights version it was drawn with and the behaviour
log-probabilities; the learner (in this process, or an actor: see LearnerHandle) takes ``algo.learner_batch_rollouts`` of them as they arrive,
corrects their lag with V-trace, updates, and publishes the new weights (one ``ray.put``) for each worker's next
rollout. With ``num_workers=0`` sampling and learning alternate in this process: on-policy (ρ = 1), exact and
reproducible. Which of the two happens is the worker group's business, not this file's.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from rayac.algorithms.base import StepResult
from rayac.algorithms.grouped import LearnerWithWorkers
from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.types import Rollout


class IMPALA(LearnerWithWorkers):
    def __init__(self, cfg: Config, spec: SpaceSpec, *, seed_offset: int = 0):
        super().__init__(cfg, spec, seed_offset=seed_offset, what="IMPALA rollout workers")
        self.feed = self.group.feed(queue_size=cfg.algo.rollout_queue_size)
        self.dropped_total = 0
        self._publish()

    def _before_learner(self) -> None:
        # before the network's init: its orthogonal init differs in the last bits across thread counts
        torch.set_num_threads(self.cfg.resources.learner_threads)

    def _collect(self) -> tuple[list[Rollout], list[Rollout], list[int]]:
        """(rollouts to learn from, every rollout that arrived, their lags): ``learner_batch_rollouts`` rollouts
        within ``max_lag`` versions of the learner; older ones are dropped (their env steps still count)."""
        algo = self.cfg.algo
        kept: list[Rollout] = []
        arrived: list[Rollout] = []
        lags: list[int] = []
        while len(kept) < algo.learner_batch_rollouts:
            for rollout in self.feed.get(algo.learner_batch_rollouts - len(kept)):
                arrived.append(rollout)
                lag = self.learner.version - rollout.version
                if algo.max_lag is not None and lag > algo.max_lag:
                    self.dropped_total += 1
                    continue
                kept.append(rollout)
                lags.append(lag)
        return kept, arrived, lags

    def train_step(self) -> StepResult:
        t0 = time.perf_counter()
        dropped_before = self.dropped_total
        rollouts, arrived, lags = self._collect()
        t1 = time.perf_counter()
        metrics = self.learner.update(rollouts)
        self._publish()
        t2 = time.perf_counter()
        metrics["time/sample_s"] = t1 - t0  # the learner waiting for rollouts
        metrics["time/learn_s"] = t2 - t1
        metrics["time/learner_idle_frac"] = (t1 - t0) / max(t2 - t0, 1e-9)
        metrics["time/sampler_wait_s"] = self.feed.sampler_wait_s()
        metrics["impala/lag_mean"] = float(np.mean(lags))
        metrics["impala/lag_max"] = float(np.max(lags))
        metrics["impala/dropped"] = self.dropped_total - dropped_before
        metrics.update(self.counters())
        return self._result(arrived, metrics)

    def counters(self) -> dict[str, int]:
        return {"impala/dropped_total": self.dropped_total, **super().counters()}

    def restore_counters(self, saved: dict[str, int]) -> None:
        super().restore_counters(saved)
        self.dropped_total = int(saved.get("impala/dropped_total", 0))

    def sampler_state(self) -> list[bytes | None]:
        """In process: the worker's envs, for an exact resume. Remote workers sample on their own clock, so no
        point of their history matches the checkpoint: None (a resumed run starts fresh episodes)."""
        if self.group.num_remote:
            return [None] * self.group.num_remote
        return self.group.get_states()

    def stop(self) -> None:
        self.feed.close()
        super().stop()
