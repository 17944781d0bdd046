"""Rollout feeds: rollouts for a learner as they arrive (IMPALA).

``InlineFeed`` (no Ray): the local worker samples when the learner asks, so sampling and learning alternate and
the data is on-policy. ``ThreadedFeed``: every remote worker samples continuously; a thread of the driver hands
each finished rollout to a bounded queue and, at once, starts that worker's next rollout with the newest
published weights. When the queue is full the thread waits (backpressure): no worker starts another rollout,
memory stays bounded, and the wait is reported as the samplers'.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Protocol

from rayac.types import Rollout

if TYPE_CHECKING:
    from rayac.sampling.group import WorkerGroup

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often a blocked thread looks at the stop flag


class RolloutFeed(Protocol):
    def get(self, count: int) -> list[Rollout]:
        """The next ``count`` rollouts, in arrival order; blocks until they are there."""
        ...

    def sampler_wait_s(self) -> float:
        """Seconds finished rollouts waited for room in the queue since the last call (0 inline)."""
        ...

    def close(self) -> None: ...


class InlineFeed:
    def __init__(self, group: WorkerGroup):
        self.group = group

    def get(self, count: int) -> list[Rollout]:
        return [self.group.sample_local() for _ in range(count)]

    def sampler_wait_s(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


class ThreadedFeed:
    def __init__(self, group: WorkerGroup, *, queue_size: int):
        self.group = group
        self.queue: queue.Queue[Rollout | BaseException] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._wait_s = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.started = 0  # rollouts started on the workers so far

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rayac-rollout-feed", daemon=True)
        self._thread.start()

    def get(self, count: int) -> list[Rollout]:
        if self._thread is None:  # started on first use: the learner has published weights by then
            self._start()
        out: list[Rollout] = []
        while len(out) < count:
            try:
                item = self.queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive():
                    raise RuntimeError("the rollout feed's thread ended") from None
                continue
            if isinstance(item, BaseException):
                raise item
            out.append(item)
        return out

    def sampler_wait_s(self) -> float:
        with self._lock:
            wait, self._wait_s = self._wait_s, 0.0
        return wait

    def _put(self, item: Rollout | BaseException) -> bool:
        """Hand ``item`` to the learner, waiting for room; False when stopped first."""
        start = time.perf_counter()
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=POLL_S)
                break
            except queue.Full:
                continue
        with self._lock:
            self._wait_s += time.perf_counter() - start
        return not self._stop.is_set()

    def _run(self) -> None:
        import ray

        group = self.group
        try:
            in_flight = {group.submit(i): i for i in range(group.num_remote)}
            self.started += group.num_remote
            while not self._stop.is_set():
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    index = in_flight.pop(ref)
                    rollout, _ = group.fetch(index, ref)  # a dead worker's sample is retried on its restart
                    if not self._put(rollout):
                        return
                    in_flight[group.submit(index)] = index  # its next rollout starts from the newest weights
                    self.started += 1
        except BaseException as err:  # noqa: BLE001 - handed to the learner, which raises it
            log.exception("the rollout feed failed")
            self._put(err)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
