"""Stopping a job or a sweep over REST: ask, then wait a little for it to end, so the answer is usually final."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from api.services.store import TERMINAL

STOP_WAIT_S = 10.0


async def stop_and_wait(request_stop: Callable[[str], Any], get: Callable[[str], Any], item_id: str) -> Any:
    """``request_stop(item_id)``, then up to STOP_WAIT_S of ``get(item_id)`` until its status is final (on the
    event loop: no thread is held while it waits); returns the last record, ended or not."""
    rec = await asyncio.to_thread(request_stop, item_id)
    deadline = time.monotonic() + STOP_WAIT_S
    while rec.status not in TERMINAL and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        rec = await asyncio.to_thread(get, item_id)
    return rec
