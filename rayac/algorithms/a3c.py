"""A3C: asynchronous advantage actor-critic with a parameter-server actor.

The workers loop on their own (pull → steps → backprop → push). The driver only watches: each
``train_step`` waits a short poll interval, collects the server's counters, relaunches any worker
loop that died (Ray restarts the process; the loop rejoins with a fresh pull), and notices when the
parameter server itself was restarted from its checkpoint. With ``num_workers=0`` one worker and the
server live in this process and each step is exactly one pull → push.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from rayac.algorithms.base import StepResult
from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.workers.a3c_worker import A3CWorker, _resolve
from rayac.workers.parameter_server import ParameterServer
from rayac.workers.remote import wait_for_actors

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 120.0
MAX_FAILURES_WITHOUT_PROGRESS = 20  # a loop that keeps failing with no push in between is a bug, not bad luck


class A3C:
    def __init__(self, cfg: Config, spec: SpaceSpec, *, seed_offset: int = 0, poll_interval_s: float = 0.1):
        self.cfg = cfg
        self.spec = spec
        self.remote = cfg.resources.num_workers > 0
        self.poll_interval_s = poll_interval_s
        self.worker_restarts = 0
        self.ps_restarts = 0
        self._failures = 0
        self._last_version = 0
        self._restored_seen: int | None = None
        if not self.remote:
            self.ps = ParameterServer(cfg, spec)
            self.local_worker = A3CWorker(cfg, spec, worker_index=0, seed_offset=seed_offset)
            return
        from rayac.workers.remote import init_ray, make_a3c_workers, make_parameter_server

        res = cfg.resources
        init_ray(num_cpus=int(np.ceil(res.num_workers * res.worker_cpus + res.learner_cpus)))
        self.ps = make_parameter_server(cfg, spec)
        self.workers = make_a3c_workers(cfg, spec, count=res.num_workers, seed_offset=seed_offset)
        self.loops: dict[Any, int] = {}  # loop ObjectRef → worker index
        wait_for_actors([self.ps, *self.workers], what="A3C parameter server and workers", cfg=cfg)

    # ------------------------------------------------------------------ Ray plumbing
    def _ps_call(self, method: str, *args: Any) -> Any:
        """Call the parameter server; if it died, Ray restarts it (from its checkpoint): count it, then retry."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            try:
                return ray.get(getattr(self.ps, method).remote(*args), timeout=CALL_TIMEOUT_S)
            except (RayActorError, GetTimeoutError) as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"parameter server unreachable for {CALL_TIMEOUT_S:.0f}s: {err}"
                    ) from err
                log.warning(
                    "parameter server call %s failed (%s); waiting for its restart",
                    method,
                    type(err).__name__,
                )
                time.sleep(0.2)

    def _launch(self, index: int) -> None:
        self.loops[self.workers[index].run.remote(self.ps)] = index

    def _watch_loops(self) -> None:
        """Wait up to one poll interval; relaunch each loop that ended (its worker died or raised)."""
        import ray
        from ray.exceptions import RayActorError

        if not self.loops:
            for i in range(len(self.workers)):
                self._launch(i)
        refs = list(self.loops)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=self.poll_interval_s)
        for ref in done:
            index = self.loops.pop(ref)
            try:
                summary = ray.get(ref)
                if "ps_error" in summary:  # the server died under this loop; the worker is fine
                    self._failures += 1
                    log.info(
                        "A3C worker %d lost the parameter server (%s); rejoining", index, summary["ps_error"]
                    )
                    time.sleep(0.1)
            except RayActorError:
                self.worker_restarts += 1
                self._failures += 1
                log.warning("A3C worker %d died; it restarts and rejoins with a fresh pull", index)
            except Exception as err:  # the loop raised: e.g. the server died under a push
                self._failures += 1
                log.warning("A3C worker %d loop ended with %s; relaunching", index, type(err).__name__)
                if self._failures > MAX_FAILURES_WITHOUT_PROGRESS:
                    raise RuntimeError(f"A3C worker loops keep failing; last error: {err}") from err
            self._launch(index)

    # ------------------------------------------------------------------ Algorithm
    @property
    def version(self) -> int:
        return self._last_version

    def train_step(self) -> StepResult:
        if not self.remote:
            self.local_worker.run(self.ps, max_pushes=1)
            stats = self.ps.get_stats()
        else:
            self._watch_loops()
            stats = self._ps_call("get_stats")
        metrics = dict(stats["metrics"])
        if stats["metrics"]["a3c/pushes"]:
            self._failures = 0
        restored = stats["restored_from"]
        if restored is not None and restored != self._restored_seen:
            self._restored_seen = restored
            self.ps_restarts += 1
            metrics["a3c/ps_restored_version"] = restored
            log.warning("parameter server was restarted from its checkpoint (version %d)", restored)
        metrics["a3c/ps_restarts"] = self.ps_restarts
        if self.remote:
            metrics["workers/restarts"] = self.worker_restarts
        self._last_version = stats["version"]
        return StepResult(num_steps=stats["env_steps"], episode_returns=stats["episode_returns"],
                          episode_lengths=stats["episode_lengths"], metrics=metrics)  # fmt: skip

    def get_weights(self) -> dict[str, np.ndarray]:
        """Weights pulled from the server (greedy evaluation runs on these)."""
        if not self.remote:
            return self.ps.pull()[0]
        weights, self._last_version = self._ps_call("pull")
        return _resolve(weights)

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
        if not self.remote:
            return self.ps.get_state()
        return self._ps_call("get_state")

    def restore(self, weights: dict[str, Any], optimizer_state: dict[str, Any] | None, version: int) -> None:
        if not self.remote:
            self.ps.restore(weights, optimizer_state, version)
        else:
            self._ps_call("restore", weights, optimizer_state, version)
        self._last_version = version

    def worker_pids(self) -> list[int]:
        import ray

        return ray.get([w.pid.remote() for w in self.workers], timeout=CALL_TIMEOUT_S)

    def worker_nodes(self) -> list[str]:
        """Each worker's node; a worker that is restarting (e.g. after losing its node) is waited for."""
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            try:
                return ray.get([w.node_id.remote() for w in self.workers], timeout=CALL_TIMEOUT_S)
            except (ActorUnavailableError, RayActorError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def ps_node(self) -> str:
        return self._ps_call("node_id")

    def ps_pid(self) -> int:
        return self._ps_call("pid")

    def stop(self) -> None:
        if not self.remote:
            self.local_worker.close()
            return
        import ray

        from rayac.workers.remote import kill_actors

        try:
            ray.get(self.ps.request_stop.remote(), timeout=10)
            ray.wait(list(self.loops), num_returns=len(self.loops), timeout=10)
        except Exception as err:  # stopping must not fail the run; the actors are killed below regardless
            log.warning("clean A3C stop failed (%s); killing the actors", err)
        kill_actors([*self.workers, self.ps])
