"""A background loop that follows unfinished work (jobs, sweeps) without any request: ``step`` every
``interval`` seconds on a daemon thread until stopped. An exception in a step is logged, never the loop's end."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Watcher:
    def __init__(self, name: str, step: Callable[[], None], interval: float):
        self.name, self.step, self.interval = name, step, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception:  # never let the watcher die
                log.exception(self.name)
