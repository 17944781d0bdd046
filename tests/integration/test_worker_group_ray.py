"""WorkerGroup's loops (A3C's workers run one for the whole training): a SIGKILLed worker's loop is started again
on the restarted actor, and its death is counted once, however many of its calls it cut."""

import os
import signal
import time

import pytest

from rayac.config import build_config
from rayac.sampling.group import WorkerGroup

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


class Looper:
    """A worker whose ``run`` is a loop that lasts ``seconds``; ``runs`` counts the loops its process started."""

    def __init__(self, cfg, spec, *, worker_index: int, seed_offset: int = 0):
        self.index, self.started = worker_index, 0

    def run(self, seconds: float) -> int:
        self.started += 1
        time.sleep(seconds)
        return self.index

    def runs(self) -> int:
        return self.started

    def pid(self) -> int:
        return os.getpid()


def test_a_killed_workers_loop_starts_again_and_its_death_counts_once(ray_session):
    overrides = ["resources.num_workers=2", "resources.worker_cpus=0.5"]
    cfg = build_config(preset="a3c_cartpole", overrides=overrides)
    group = WorkerGroup(cfg, None, worker_cls=Looper, actor_options={"max_concurrency": 2}, what="loopers")
    try:
        group.start_loops("run", 60.0)
        before = group.pids()
        assert group.poll_loops(0.2) == []  # running: nothing ended
        cut = group.call_async(1, "run", 60.0)  # a second call in flight on worker 1 when it dies
        os.kill(before[1], signal.SIGKILL)
        # the cut call is made again (here: ask for the pid) on the restarted actor
        pid, _ = group.fetch(1, cut, again=lambda: group.call_async(1, "pid"))
        assert pid != before[1] and group.restarts == 1
        ends = []
        deadline = time.monotonic() + 60
        while not ends and time.monotonic() < deadline:
            ends = group.poll_loops(0.2)
        assert [(end.index, end.died) for end in ends] == [(1, True)]
        assert group.restarts == 1  # the loop and the call were cut by the same death
        after = group.pids()
        assert after[0] == before[0] and after[1] == pid
        deadline = time.monotonic() + 30
        # the loop runs again on worker 1
        while group.foreach("runs")[1] != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert group.foreach("runs") == [1, 1] and group.restarts == 1
    finally:
        group.stop()
