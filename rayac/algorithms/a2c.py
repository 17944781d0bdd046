"""A2C: synchronous advantage actor-critic.

Each step: publish the weights once (``ray.put``), sample on every worker in parallel, one update on
the learner. With ``num_workers=0`` the single worker lives in this process and Ray is never started.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from rayac.algorithms.base import StepResult, concat_episodes
from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.types import Rollout
from rayac.workers.learner import Learner
from rayac.workers.rollout import RolloutWorker

log = logging.getLogger(__name__)

SAMPLE_TIMEOUT_S = 600.0
SAMPLE_RETRIES = 3


class A2C:
    def __init__(self, cfg: Config, spec: SpaceSpec, *, seed_offset: int = 0):
        self.cfg = cfg
        self.spec = spec
        self.learner = Learner(cfg, spec)
        self.remote = cfg.resources.num_workers > 0
        self.worker_restarts = 0
        if self.remote:
            from rayac.workers.remote import init_ray, make_rollout_workers, wait_for_actors

            init_ray(num_cpus=int(np.ceil(cfg.resources.num_workers * cfg.resources.worker_cpus)))
            self.workers = make_rollout_workers(
                cfg, spec, count=cfg.resources.num_workers, seed_offset=seed_offset
            )
            wait_for_actors(self.workers, what="A2C rollout workers", cfg=cfg)
        else:
            shared = self.learner.policy if self.learner.device.type == "cpu" else None
            self.local_worker = RolloutWorker(
                cfg, spec, worker_index=0, seed_offset=seed_offset, policy=shared
            )
            # the worker pins its process to 1 thread (right for an actor); here it shares the learner's
            torch.set_num_threads(cfg.resources.learner_threads)

    @property
    def version(self) -> int:
        return self.learner.version

    def _sample_remote(self, weights: dict[str, np.ndarray], version: int) -> list[Rollout]:
        import ray
        from ray.exceptions import RayActorError

        ref = ray.put(weights)  # one copy in the object store, shared by every worker on the node
        refs = [w.sample_with.remote(ref, version) for w in self.workers]
        rollouts = []
        for w, obj in zip(self.workers, refs, strict=True):
            for attempt in range(SAMPLE_RETRIES + 1):
                try:
                    rollouts.append(ray.get(obj, timeout=SAMPLE_TIMEOUT_S))
                    break
                except RayActorError:
                    if attempt == SAMPLE_RETRIES:
                        raise
                    # Ray restarts the actor (max_restarts=-1); the new process needs the weights again.
                    self.worker_restarts += 1
                    log.warning("rollout worker died; retrying its sample on the restarted actor")
                    obj = w.sample_with.remote(ref, version)
        return rollouts

    def train_step(self) -> StepResult:
        t0 = time.perf_counter()
        version = self.learner.version
        if self.remote:
            rollouts = self._sample_remote(self.learner.get_weights(), version)
        else:
            if (
                self.local_worker.policy is not self.learner.policy
            ):  # learner on a GPU: copy to the CPU worker
                self.local_worker.set_weights(self.learner.get_weights(), version)
            self.local_worker.version = version
            rollouts = [self.local_worker.sample()]
        t1 = time.perf_counter()
        metrics = self.learner.update(rollouts)
        t2 = time.perf_counter()
        metrics["time/sample_s"] = t1 - t0
        metrics["time/learn_s"] = t2 - t1
        if self.remote:
            metrics["workers/restarts"] = self.worker_restarts
        return StepResult(
            num_steps=sum(r.num_steps for r in rollouts),
            episode_returns=concat_episodes([r.episode_returns for r in rollouts], np.float64),
            episode_lengths=concat_episodes([r.episode_lengths for r in rollouts], np.int64),
            metrics=metrics,
        )

    def get_weights(self) -> dict[str, np.ndarray]:
        return self.learner.get_weights()

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
        return self.learner.policy.state_dict(), self.learner.optimizer.state_dict(), self.learner.version

    def restore(self, weights: dict[str, Any], optimizer_state: dict[str, Any] | None, version: int) -> None:
        self.learner.policy.load_state_dict(weights)
        if optimizer_state is not None:
            self.learner.optimizer.load_state_dict(optimizer_state)
        self.learner.version = version

    def stop(self) -> None:
        if self.remote:
            from rayac.workers.remote import kill_actors

            kill_actors(self.workers)
        else:
            self.local_worker.close()
