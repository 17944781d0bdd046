"""LearnerHandle: the run's learner, in this process or (pinned by ``learner_resources``, or on a GPU, with Ray
workers) an actor placed by Ray. The only code that knows which.

A learner actor that dies does not end the run: the handle starts a new one and restores it from the last
checkpoint the run took (weights with the normalisers, optimiser, version), or from the start if none was taken
yet, counts the restart (``learner/restarts``), logs the versions lost, and retries the call.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.learning.learner import Learner
from rayac.policy import ActorCritic
from rayac.types import Rollout

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 600.0
MAX_RESTARTS_PER_CALL = 3


def learner_is_remote(cfg: Config) -> bool:
    res = cfg.resources
    return res.num_workers > 0 and (bool(res.learner_resources) or res.device == "cuda")


class LearnerHandle:
    def __init__(self, cfg: Config, spec: SpaceSpec):
        self.cfg = cfg
        self.spec = spec
        self.remote = learner_is_remote(cfg)
        self.restarts = 0
        self._snapshot: tuple[dict[str, Any], dict[str, Any] | None, int] | None = None  # the last checkpoint
        self.local: Learner | None = None
        self.actor: Any = None
        self._version = 0  # an actor's, tracked here: no round trip to read it
        if self.remote:
            self.actor = self._start_actor()
        else:
            self.local = Learner(cfg, spec)

    def _start_actor(self) -> Any:
        from rayac.remote import make_learner, wait_for_actors

        actor = make_learner(self.cfg, self.spec)
        wait_for_actors([actor], what="the learner", cfg=self.cfg)
        return actor

    @property
    def local_policy(self) -> ActorCritic | None:
        """The learner's own policy when it lives in this process on the CPU: a local worker samples with it."""
        if self.local is not None and self.local.device.type == "cpu":
            return self.local.policy
        return None

    def _call(self, method: str, *args: Any) -> Any:
        if self.local is not None:
            return getattr(self.local, method)(*args)
        import ray
        from ray.exceptions import RayActorError

        for attempt in range(MAX_RESTARTS_PER_CALL + 1):
            try:
                return ray.get(getattr(self.actor, method).remote(*args), timeout=CALL_TIMEOUT_S)
            except RayActorError:
                if attempt == MAX_RESTARTS_PER_CALL:
                    raise
                self._restart()
        raise AssertionError("unreachable")

    def _restart(self) -> None:
        """A new learner actor from the last checkpoint (or the start); counted and logged."""
        import ray

        from rayac.remote import kill_actors

        kill_actors([self.actor])
        self.restarts += 1
        self.actor = self._start_actor()
        if self._snapshot is not None:
            weights, optimizer_state, version = self._snapshot
            ray.get(self.actor.restore.remote(weights, optimizer_state, version), timeout=CALL_TIMEOUT_S)
        lost, self._version = self._version, ray.get(self.actor.get_version.remote(), timeout=CALL_TIMEOUT_S)
        log.warning("the learner actor died; restarted it (restart %d) from %s: version %d -> %d (%d updates lost)",
                    self.restarts, "the last checkpoint" if self._snapshot else "the start (no checkpoint yet)", lost,
                    self._version, lost - self._version)  # fmt: skip

    # -- what algorithms call
    def weights(self) -> Any:
        """The newest weights to publish: a numpy state dict, or (an actor) an ObjectRef the actor made."""
        if self.local is not None:
            return self.local.get_weights()
        import ray
        from ray.exceptions import RayActorError

        for attempt in range(MAX_RESTARTS_PER_CALL + 1):
            weights, version = self.actor.published.options(num_returns=2).remote()
            try:  # an actor that died after its update and before this call would hand the workers an error
                ray.get(version, timeout=CALL_TIMEOUT_S)
                return weights
            except RayActorError:
                if attempt == MAX_RESTARTS_PER_CALL:
                    raise
                self._restart()
        raise AssertionError("unreachable")

    def update(self, rollouts: list[Rollout], refs: list[Any] | None = None) -> dict[str, float]:
        """One update on ``rollouts``. An actor is handed ``refs`` where given (it fetches the rollouts from the
        workers' nodes itself), else the rollouts."""
        if self.local is not None:
            return self.local.update(rollouts)
        metrics = self._call("update_each", *(refs or rollouts))
        self._version += 1
        return metrics

    @property
    def version(self) -> int:
        return self.local.version if self.local is not None else self._version

    def get_weights(self) -> dict[str, np.ndarray]:
        return self._call("get_weights")

    def get_state(self) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
        """(weights, optimiser state, version): what a checkpoint saves; kept as the state a restart restores."""
        state = self._call("get_state")
        if self.remote:
            self._snapshot = state
        return state

    def restore(self, weights: dict[str, Any], optimizer_state: dict[str, Any] | None, version: int) -> None:
        self._call("restore", weights, optimizer_state, version)
        if self.remote:
            self._snapshot = (weights, optimizer_state, version)
            self._version = version

    def pid(self) -> int:
        return self._call("pid")

    def stop(self) -> None:
        if self.actor is not None:
            from rayac.remote import kill_actors

            kill_actors([self.actor])
