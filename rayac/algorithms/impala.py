"""IMPALA: asynchronous actor-critic with V-trace (Espeholt et al. 2018).

Workers sample continuously, each rollout tagged with the weights version it was drawn with and the behaviour
log-probabilities; the learner (in this process, or an actor: see LearnerHandle) takes ``algo.learner_batch_rollouts`` of them as they arrive,
corrects their lag with V-trace, updates, and publishes the new weights (one ``ray.put``) for each worker's next
rollout. With ``num_workers=0`` sampling and learning alternate in this process: on-policy (ρ = 1), exact and
reproducible. Which of the two happens is the worker group's business, not this file's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from rayac.algorithms.base import StepResult, concat_episodes
from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.learning import LearnerHandle
from rayac.sampling import WorkerGroup
from rayac.types import Rollout


class IMPALA:
    def __init__(self, cfg: Config, spec: SpaceSpec, *, seed_offset: int = 0):
        self.cfg = cfg
        res = cfg.resources
        if res.num_workers:
            from rayac.remote import init_ray

            init_ray(num_cpus=int(np.ceil(res.num_workers * res.worker_cpus)))
        # before the network's init: its orthogonal init differs in the last bits across thread counts
        torch.set_num_threads(res.learner_threads)
        self.learner = LearnerHandle(cfg, spec)
        self.group = WorkerGroup(cfg, spec, seed_offset=seed_offset, local_policy=self.learner.local_policy,
                                 what="IMPALA rollout workers")  # fmt: skip
        self.feed = self.group.feed(queue_size=cfg.algo.rollout_queue_size)
        self.dropped_total = 0
        self._publish()

    @property
    def version(self) -> int:
        return self.learner.version

    def _publish(self) -> None:
        self.group.publish(self.learner.weights, self.learner.version)

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
        return StepResult(
            num_steps=sum(r.env_steps for r in arrived),
            episode_returns=concat_episodes([r.episode_returns for r in arrived], np.float64),
            episode_lengths=concat_episodes([r.episode_lengths for r in arrived], np.int64),
            metrics=metrics,
        )

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.learner.get_weights()

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
        return self.learner.get_state()

    def restore(self, weights: dict[str, Any], optimizer_state: dict[str, Any] | None, version: int) -> None:
        self.learner.restore(weights, optimizer_state, version)
        self._publish()

    def counters(self) -> dict[str, int]:
        """Counts over the whole run (saved in checkpoints: a resumed run goes on counting)."""
        out = {"impala/dropped_total": self.dropped_total}
        if self.group.num_remote:
            out["workers/restarts"] = self.group.restarts
        if self.learner.remote:
            out["learner/restarts"] = self.learner.restarts
        return out

    def restore_counters(self, saved: dict[str, int]) -> None:
        self.dropped_total = int(saved.get("impala/dropped_total", 0))
        self.group.restarts = int(saved.get("workers/restarts", 0))
        self.learner.restarts = int(saved.get("learner/restarts", 0))

    def sampler_state(self) -> list[bytes | None]:
        """In process: the worker's envs, for an exact resume. Remote workers sample on their own clock, so no
        point of their history matches the checkpoint: None (a resumed run starts fresh episodes)."""
        if self.group.num_remote:
            return [None] * self.group.num_remote
        return self.group.get_states()

    def restore_sampler(self, states: list[bytes | None]) -> bool:
        return self.group.set_states(states)

    def stop(self) -> None:
        self.feed.close()
        self.group.stop()
        self.learner.stop()
