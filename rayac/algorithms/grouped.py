"""What A2C and IMPALA share: a learner (in this process or an actor) and a group of rollout workers.

The subclass decides how a train step gathers rollouts and feeds the learner; this base owns the rest: where the
two live, publishing weights, checkpoints, the whole-run counters and stopping.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rayac.algorithms.base import StepResult, concat_episodes
from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.learning import LearnerHandle
from rayac.sampling import WorkerGroup
from rayac.types import Rollout


class LearnerWithWorkers:
    def __init__(self, cfg: Config, spec: SpaceSpec, *, seed_offset: int, what: str):
        self.cfg = cfg
        res = cfg.resources
        if res.num_workers:
            from rayac.remote import init_ray

            init_ray(num_cpus=int(np.ceil(res.num_workers * res.worker_cpus)))
        self._before_learner()
        # a learner actor is placed first: a SPREAD worker must not take the CPU of the learner's node
        self.learner = LearnerHandle(cfg, spec)
        self.group = WorkerGroup(cfg, spec, seed_offset=seed_offset, local_policy=self.learner.local_policy,
                                 what=what)  # fmt: skip

    def _before_learner(self) -> None:
        """A hook run before the learner (and its network) is built."""

    @property
    def version(self) -> int:
        return self.learner.version  # +1 per update, or where a restarted learner actor came back

    def _publish(self) -> None:
        """Right after each update (not at the next step's start): a learner actor killed between steps has
        already stored the weights the workers read, and its death is found by the next update, which restores it."""
        self.group.publish(self.learner.weights, self.learner.version)

    @staticmethod
    def _result(rollouts: list[Rollout], metrics: dict[str, float]) -> StepResult:
        """The env steps and episodes of every rollout that arrived (learnt from or not)."""
        return StepResult(
            num_steps=sum(r.env_steps for r in rollouts),
            episode_returns=concat_episodes([r.episode_returns for r in rollouts], np.float64),
            episode_lengths=concat_episodes([r.episode_lengths for r in rollouts], np.int64),
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
        out = {"workers/restarts": self.group.restarts} if self.group.num_remote else {}
        if self.learner.remote:
            out["learner/restarts"] = self.learner.restarts
        return out

    def restore_counters(self, saved: dict[str, int]) -> None:
        self.group.restarts = int(saved.get("workers/restarts", 0))
        self.learner.restarts = int(saved.get("learner/restarts", 0))

    def sampler_state(self) -> list[bytes | None]:
        """Each rollout worker's ``get_state``, in worker order (the checkpoint's ``sampler.pkl``)."""
        return self.group.get_states()

    def restore_sampler(self, states: list[bytes | None]) -> bool:
        """Put every worker back where the checkpoint left it; False (and nothing changed) when that is not
        possible: another worker count, or envs whose state was not saved."""
        return self.group.set_states(states)

    def stop(self) -> None:
        self.group.stop()
        self.learner.stop()
