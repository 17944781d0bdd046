"""A2C: synchronous advantage actor-critic.

Each step: publish the weights once, sample one rollout on every worker, one update on the learner. Where the
workers and the learner live (this process, Ray actors) is the worker group's and the learner handle's business;
with ``num_workers=0`` Ray is never started.
"""

from __future__ import annotations

import time

from rayac.algorithms.base import StepResult
from rayac.algorithms.grouped import LearnerWithWorkers
from rayac.config import Config
from rayac.envs import SpaceSpec


class A2C(LearnerWithWorkers):
    def __init__(self, cfg: Config, spec: SpaceSpec, *, seed_offset: int = 0):
        super().__init__(cfg, spec, seed_offset=seed_offset, what="A2C rollout workers")
        self._publish()

    def train_step(self) -> StepResult:
        t0 = time.perf_counter()
        rollouts, refs = self.group.sample_all()
        t1 = time.perf_counter()
        metrics = self.learner.update(rollouts, refs)
        self._publish()
        t2 = time.perf_counter()
        metrics["time/sample_s"] = t1 - t0
        metrics["time/learn_s"] = t2 - t1
        metrics.update(self.counters())
        return self._result(rollouts, metrics)
