"""A stop request that reaches a run however it was started: a file named by ``RAYAC_STOP_FILE``.

A signal reaches only a process that exists. A service that stops a job while Ray is still preparing it (its
runtime env, its driver's interpreter) has nothing to signal yet, and a driver that starts a moment later would
train to its end. So the service writes the file before it asks Ray to stop the job, and the driver looks for it
before it builds anything and before every train step: a stopped job never trains afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

STOP_FILE_ENV = "RAYAC_STOP_FILE"


def stop_file() -> Path | None:
    """The stop file this process watches (``$RAYAC_STOP_FILE``), or None."""
    value = os.environ.get(STOP_FILE_ENV)
    return Path(value) if value else None


def stop_requested() -> bool:
    """Whether this run was asked to stop (one ``stat``: cheap enough for every train step)."""
    path = stop_file()
    return path is not None and path.exists()
