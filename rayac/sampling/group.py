"""WorkerGroup: a run's rollout workers, N Ray actors or (N = 0) one worker in this process.

The only code that knows remote from local. Algorithms publish weights and ask for rollouts:
- ``sample_all()``: one rollout from every worker, in worker order (synchronous A2C);
- ``feed(queue_size)``: rollouts as they arrive, every worker sampling continuously (IMPALA);
- ``call_async`` / ``fetch`` / ``foreach``: any method of any worker class, with retries;
- ``start_loops`` / ``poll_loops``: a method that runs for the whole training on every worker (A3C's worker loops).
A worker whose process dies is restarted by Ray (``max_restarts=-1``); the group retries the call it lost on
the restarted actor (a sample with the newest weights, a loop started again), and counts the restart
(``restarts``, once per death however many calls it cut). A group can also hold actors made elsewhere
(``actors=``: A3C's parameter-server shards), for the same calls and retries. Modelled on RLlib's
EnvRunnerGroup and FaultTolerantActorManager, without their generality: rayac's workers are all alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.policy import ActorCritic
from rayac.sampling.feed import InlineFeed, RolloutFeed, ThreadedFeed
from rayac.sampling.rollout import RolloutWorker
from rayac.types import Rollout

log = logging.getLogger(__name__)

SAMPLE_TIMEOUT_S = 600.0
RESTART_WAIT_S = 120.0  # how long a sample waits for its worker's actor to come back
RETRY_PAUSE_S = 0.5


@dataclass
class LoopEnd:
    """A loop (``start_loops``) that returned: its ``result``, or the ``error`` it raised (``died``: its worker's
    process died). The group has already started it again."""

    index: int
    result: Any = None
    error: BaseException | None = None
    died: bool = False


class WorkerGroup:
    def __init__(
        self,
        cfg: Config,
        spec: SpaceSpec,
        *,
        seed_offset: int = 0,
        local_policy: ActorCritic | None = None,
        what: str = "rollout workers",
        worker_cls: type = RolloutWorker,
        actor_options: dict[str, Any] | None = None,
        actors: list | None = None,
    ):
        """``resources.num_workers`` actors on Ray, or one local worker (0), of ``worker_cls`` (built as
        ``worker_cls(cfg, spec, worker_index=i, seed_offset=...)``; ``actor_options`` add Ray actor options).
        ``local_policy``: the local RolloutWorker samples with this module itself (an in-process learner's CPU
        policy: no weight copies at all). ``publish``/``sample_all``/``feed`` need a RolloutWorker-like class;
        ``call_async``/``fetch``/``foreach`` work with any. ``actors``: Ray actors made elsewhere, which the group
        only calls (nothing is made; ``stop`` kills them)."""
        self.cfg = cfg
        self.what = what
        self.restarts = 0
        self._death_counted_at: dict[int, float] = {}  # worker → when its last death was counted
        self._loops: dict[Any, tuple[int, float]] = {}  # start_loops: ref → (worker, when it was started)
        self._loop_call: tuple[str, tuple] = ("", ())
        self.num_remote = len(actors) if actors is not None else cfg.resources.num_workers
        # (weights, version), replaced whole: a feed thread never reads one's weights with the other's version.
        # weights: an ObjectRef (remote), a dict (local, not shared), or None (local, shared: nothing to copy)
        self._published: tuple[Any, int] = (None, 0)
        if actors is not None:
            self.actors, self.local_worker = list(actors), None
        elif self.num_remote:
            from rayac.remote import make_workers, wait_for_actors

            self.actors = make_workers(worker_cls, cfg, spec, count=self.num_remote, seed_offset=seed_offset,
                                       **(actor_options or {}))  # fmt: skip
            wait_for_actors(self.actors, what=what, cfg=cfg)
            self.local_worker = None
        else:
            self.actors = []
            extra = {"policy": local_policy} if local_policy is not None else {}
            self.local_worker = worker_cls(cfg, spec, worker_index=0, seed_offset=seed_offset, **extra)
            # the worker pins its process to 1 thread (right for an actor); here it shares the learner's
            torch.set_num_threads(cfg.resources.learner_threads)
        self._shared = local_policy is not None and not self.num_remote

    @property
    def num_workers(self) -> int:
        """Workers that sample: the actors, or the one local worker."""
        return self.num_remote or 1

    # -- weights
    def publish(self, get_weights: Callable[[], Any], version: int) -> None:
        """Make ``(weights, version)`` what every sample started from now on uses. ``get_weights`` returns a
        numpy state dict or an ObjectRef of one; it is not called when the local worker shares the learner's
        policy. Remote: one ``ray.put``, every worker reads the same copy."""
        if self._shared:
            self._published = (None, version)
            return
        weights = get_weights()
        if self.num_remote:
            import ray

            weights = weights if isinstance(weights, ray.ObjectRef) else ray.put(weights)
        self._published = (weights, version)

    def sample_local(self) -> Rollout:
        """One rollout of the local worker with the published weights."""
        worker = self.local_worker
        assert worker is not None, "sample_local needs num_workers=0"
        weights, version = self._published
        if weights is not None and worker.version != version:
            worker.set_weights(weights, version)
        worker.version = version
        return worker.sample()

    # -- remote calls, with retries on a restarted actor
    def call_async(self, index: int, method: str, *args: Any, **kwargs: Any) -> Any:
        """Start ``method(*args, **kwargs)`` on actor ``index``; returns its ObjectRef (for ``fetch``)."""
        return getattr(self.actors[index], method).remote(*args, **kwargs)

    def _count_death(self, index: int, *, submitted_at: float) -> None:
        """Count a restart of worker ``index``, unless the failed call was made before its last counted death
        (then that death cut it too: an A3C worker's loop and a control call on it fail together)."""
        if self._death_counted_at.get(index, -1.0) > submitted_at:
            return
        self._death_counted_at[index] = time.monotonic()
        self.restarts += 1
        log.warning("%s: actor %d died; its call is made again on the restarted actor", self.what, index)

    def fetch(self, index: int, ref: Any, *, again: Callable[[], Any] | None = None) -> tuple[Any, Any]:
        """``(result, its ref)`` of a call on actor ``index``. If the actor died, the call is made again on the
        restarted actor (``again()``, default: a new sample with the newest weights), until RESTART_WAIT_S; the
        restart is counted once."""
        import ray
        from ray.exceptions import RayActorError

        again = again or (lambda: self.submit(index))
        started = time.monotonic()  # the call was made before this
        deadline = started + RESTART_WAIT_S
        counted = False
        while True:
            try:
                return ray.get(ref, timeout=SAMPLE_TIMEOUT_S), ref
            except RayActorError:  # died, or (ActorUnavailableError) still restarting
                if time.monotonic() > deadline:
                    raise
                if not counted:  # Ray restarts the actor (max_restarts=-1), which remembers nothing
                    self._count_death(index, submitted_at=started)
                    counted = True
                time.sleep(RETRY_PAUSE_S)
                ref = again()

    def foreach(
        self,
        method: str,
        args: Callable[[int], tuple] = lambda i: (),
        kwargs: Callable[[int], dict[str, Any]] = lambda i: {},
    ) -> list[Any]:
        """``method(*args(i), **kwargs(i))`` on every worker i, local or remote, all at once; results in worker
        order. A call cut by its actor's death is made again on the restarted actor."""
        if not self.num_remote:
            return [getattr(self.local_worker, method)(*args(0), **kwargs(0))]
        refs = [self.call_async(i, method, *args(i), **kwargs(i)) for i in range(self.num_remote)]
        return [self.fetch(i, ref, again=lambda i=i: self.call_async(i, method, *args(i), **kwargs(i)))[0]
                for i, ref in enumerate(refs)]  # fmt: skip

    # -- loops: a call that runs until the worker decides to return (remote workers only)
    def start_loops(self, method: str, *args: Any) -> None:
        """Start ``method(*args)`` on every actor; ``poll_loops`` sees each one end and starts it again."""
        self._loop_call = (method, args)
        for i in range(self.num_remote):
            self._start_loop(i)

    def _start_loop(self, index: int) -> None:
        method, args = self._loop_call
        self._loops[self.call_async(index, method, *args)] = (index, time.monotonic())

    def poll_loops(self, timeout: float) -> list[LoopEnd]:
        """Wait up to ``timeout`` for loops to end; each one that ended is started again at once (on the
        restarted actor when its worker died: the restart is counted). Returns how each ended."""
        import ray
        from ray.exceptions import RayActorError

        refs = list(self._loops)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        ends = []
        for ref in done:
            index, started = self._loops.pop(ref)
            try:
                ends.append(LoopEnd(index, result=ray.get(ref, timeout=SAMPLE_TIMEOUT_S)))
            except RayActorError as err:
                self._count_death(index, submitted_at=started)
                ends.append(LoopEnd(index, error=err, died=True))
            except Exception as err:  # the loop raised: a bug in the worker, reported to the caller
                ends.append(LoopEnd(index, error=err))
            self._start_loop(index)
        return ends

    def wait_loops(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every loop to return (once they were asked to stop); none is started again."""
        import ray

        refs, self._loops = list(self._loops), {}
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout)

    def submit(self, index: int) -> Any:
        """Start a sample on actor ``index`` with the newest published weights; returns its ObjectRef."""
        weights, version = self._published
        return self.call_async(index, "sample_with", weights, version)

    def sample_all(self) -> tuple[list[Rollout], list[Any]]:
        """One rollout from every worker with the published weights, in worker order: ``(rollouts, refs)``;
        ``refs`` (remote only) lets a learner actor fetch the rollouts from the workers' nodes itself."""
        if not self.num_remote:
            return [self.sample_local()], []
        refs = [self.submit(i) for i in range(self.num_remote)]
        pairs = [self.fetch(i, ref) for i, ref in enumerate(refs)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def feed(self, *, queue_size: int) -> RolloutFeed:
        """Rollouts as they arrive: remote workers sample continuously into a queue of ``queue_size``
        (a thread keeps them busy); the local worker samples when asked, so learning and sampling alternate."""
        if not self.num_remote:
            return InlineFeed(self)
        return ThreadedFeed(self, queue_size=queue_size)

    def pids(self) -> list[int]:
        """The workers' processes, in worker order (fault tests SIGKILL one)."""
        return self.foreach("pid")

    # -- state, for exact resume
    def get_states(self) -> list[bytes | None]:
        """Each worker's ``get_state``, in worker order (the checkpoint's ``sampler.pkl``)."""
        return self.foreach("get_state")

    def set_states(self, states: list[bytes | None]) -> bool:
        """Put every worker back where ``get_states`` left it; False (nothing changed) for another worker count
        or envs whose state was not saved."""
        if len(states) != self.num_workers or any(s is None for s in states):
            return False
        self.foreach("set_state", lambda i: (states[i],))
        return True

    def stop(self) -> None:
        if self.num_remote:
            from rayac.remote import kill_actors

            kill_actors(self.actors)
        else:
            self.local_worker.close()  # type: ignore[union-attr]
