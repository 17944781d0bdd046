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
RESTART_WAIT_S = 120.0  # how long a sample waits for its worker's actor to come back


class A2C:
    def __init__(self, cfg: Config, spec: SpaceSpec, *, seed_offset: int = 0):
        self.cfg = cfg
        self.spec = spec
        res = cfg.resources
        self.remote = res.num_workers > 0
        # Pinned (learner_resources) or on a GPU, the learner is an actor placed by Ray, like A3C's parameter
        # server; the driver stays where it started and is the only writer of the run's files.
        self.remote_learner = self.remote and (bool(res.learner_resources) or res.device == "cuda")
        self.worker_restarts = 0
        if self.remote:
            from rayac.workers.remote import init_ray, make_learner, make_rollout_workers, wait_for_actors

            init_ray(num_cpus=int(np.ceil(res.num_workers * res.worker_cpus)))
            if (
                self.remote_learner
            ):  # placed first: a SPREAD worker must not take the CPU of the learner's node
                self.learner = make_learner(cfg, spec)
                wait_for_actors([self.learner], what="the A2C learner", cfg=cfg)
            self.workers = make_rollout_workers(cfg, spec, count=res.num_workers, seed_offset=seed_offset)
            wait_for_actors(self.workers, what="A2C rollout workers", cfg=cfg)
        if not self.remote_learner:
            self.learner = Learner(cfg, spec)
        self._version = 0
        if not self.remote:
            shared = self.learner.policy if self.learner.device.type == "cpu" else None
            self.local_worker = RolloutWorker(
                cfg, spec, worker_index=0, seed_offset=seed_offset, policy=shared
            )
            # the worker pins its process to 1 thread (right for an actor); here it shares the learner's
            torch.set_num_threads(cfg.resources.learner_threads)

    def _learner(self, method: str, *args: Any) -> Any:
        """Call the learner, in this process or as an actor alike."""
        if not self.remote_learner:
            return getattr(self.learner, method)(*args)
        import ray

        return ray.get(getattr(self.learner, method).remote(*args), timeout=SAMPLE_TIMEOUT_S)

    @property
    def version(self) -> int:
        return self._version

    def _sample_remote(self, weights: Any, version: int) -> tuple[list[Any], list[Rollout]]:
        """(the rollouts' ObjectRefs, the rollouts); ``weights``: a dict, or an ObjectRef the learner made."""
        import ray
        from ray.exceptions import RayActorError

        ref = weights if isinstance(weights, ray.ObjectRef) else ray.put(weights)  # one copy, shared by all
        refs = [w.sample_with.remote(ref, version) for w in self.workers]
        rollouts = []
        for i, w in enumerate(self.workers):
            deadline, restarted = time.monotonic() + RESTART_WAIT_S, False
            while True:
                try:
                    rollouts.append(ray.get(refs[i], timeout=SAMPLE_TIMEOUT_S))
                    break
                except RayActorError:  # died, or (ActorUnavailableError) still restarting
                    if time.monotonic() > deadline:
                        raise
                    if not restarted:  # Ray restarts the actor (max_restarts=-1): it needs the weights again
                        self.worker_restarts += 1
                        restarted = True
                        log.warning("rollout worker died; retrying its sample on the restarted actor")
                    time.sleep(0.5)
                    refs[i] = w.sample_with.remote(ref, version)
        return refs, rollouts

    def train_step(self) -> StepResult:
        t0 = time.perf_counter()
        version = self._version
        if self.remote:
            weights = self.learner.get_weights.remote() if self.remote_learner else self.learner.get_weights()
            refs, rollouts = self._sample_remote(weights, version)
        else:
            if (
                self.local_worker.policy is not self.learner.policy
            ):  # learner on a GPU: copy to the CPU worker
                self.local_worker.set_weights(self.learner.get_weights(), version)
            self.local_worker.version = version
            rollouts = [self.local_worker.sample()]
        t1 = time.perf_counter()
        # a remote learner gets the rollouts' refs: it fetches them from the workers' nodes, not from here
        metrics = (
            self._learner("update_each", *refs) if self.remote_learner else self.learner.update(rollouts)
        )
        self._version += 1
        t2 = time.perf_counter()
        metrics["time/sample_s"] = t1 - t0
        metrics["time/learn_s"] = t2 - t1
        metrics.update(self.counters())
        return StepResult(
            num_steps=sum(r.env_steps for r in rollouts),
            episode_returns=concat_episodes([r.episode_returns for r in rollouts], np.float64),
            episode_lengths=concat_episodes([r.episode_lengths for r in rollouts], np.int64),
            metrics=metrics,
        )

    def get_weights(self) -> dict[str, np.ndarray]:
        return self._learner("get_weights")

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
        return self._learner("get_state")

    def restore(self, weights: dict[str, Any], optimizer_state: dict[str, Any] | None, version: int) -> None:
        self._learner("restore", weights, optimizer_state, version)
        self._version = version

    def counters(self) -> dict[str, int]:
        """Counts over the whole run (saved in checkpoints: a resumed run goes on counting)."""
        return {"workers/restarts": self.worker_restarts} if self.remote else {}

    def restore_counters(self, saved: dict[str, int]) -> None:
        self.worker_restarts = int(saved.get("workers/restarts", 0))

    def sampler_state(self) -> list[bytes | None]:
        """Each rollout worker's ``get_state``, in worker order (the checkpoint's ``sampler.pkl``)."""
        if not self.remote:
            return [self.local_worker.get_state()]
        import ray

        return ray.get([w.get_state.remote() for w in self.workers], timeout=SAMPLE_TIMEOUT_S)

    def restore_sampler(self, states: list[bytes | None]) -> bool:
        """Put every worker back where the checkpoint left it; False (and nothing changed) when that is not
        possible: another worker count, or envs whose state was not saved."""
        workers = [self.local_worker] if not self.remote else self.workers
        if len(states) != len(workers) or any(s is None for s in states):
            return False
        if not self.remote:
            self.local_worker.set_state(states[0])  # type: ignore[arg-type]
            return True
        import ray

        ray.get(
            [w.set_state.remote(s) for w, s in zip(self.workers, states, strict=True)],
            timeout=SAMPLE_TIMEOUT_S,
        )
        return True

    def stop(self) -> None:
        if self.remote:
            from rayac.workers.remote import kill_actors

            kill_actors([*self.workers, self.learner] if self.remote_learner else self.workers)
        else:
            self.local_worker.close()
