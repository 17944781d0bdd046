"""One greedy episode of a trained policy as an animated GIF, rendered on demand for the dashboard.

Rendering steps a real env and draws every frame: seconds of CPU. So it is bounded three ways: episodes
stop after ``max_steps``; at most ``max_concurrent`` renders run (in worker threads, off the event loop)
and at most ``max_waiting`` more queue, beyond which callers get ``Busy``; results are cached by
(policy, checkpoint, seed) in an LRU bounded in bytes, and concurrent requests for the same key share
one render. A new checkpoint is a new key, so a policy that keeps training is never shown stale.
"""

from __future__ import annotations

import asyncio
import collections
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rayac.checkpoint import latest_checkpoint
from rayac.render import RenderTimedOut, render_episode

from .errors import NotFound, Unavailable
from .jobs import JobService


class Busy(RuntimeError):
    """Too many renders running or queued (HTTP 429)."""


@dataclass(frozen=True)
class EpisodeGif:
    data: bytes
    checkpoint: str
    episode_return: float
    length: int


Key = tuple[str, str, int]


class EpisodeRenderer:
    def __init__(self, jobs: JobService, *, max_steps: int = 500, max_concurrent: int = 2, max_waiting: int = 4,
                 cache_bytes: int = 64 * 2**20, downscale: int = 2, timeout_s: float = 120.0):  # fmt: skip
        self.jobs = jobs
        self.max_steps = max_steps
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.cache_bytes = cache_bytes
        self.downscale = downscale
        self.timeout_s = timeout_s
        self.worker: str | None = None  # the module a render process runs: rayac.render
        self.cache: collections.OrderedDict[Key, EpisodeGif] = collections.OrderedDict()
        self.inflight: dict[Key, asyncio.Future[EpisodeGif]] = {}
        self.renders = 0  # how many were actually rendered (cache misses), for tests and curiosity
        self._slots: asyncio.Semaphore | None = None  # made on first use, inside the running loop

    def _checkpoint(self, policy_id: str) -> Path:
        ckpt = latest_checkpoint(Path(self.jobs.store.get(policy_id).run_dir))  # NotFound for an unknown id
        if ckpt is None:
            raise NotFound(f"job '{policy_id}' has no checkpoint yet")
        return ckpt

    async def gif(self, policy_id: str, seed: int) -> EpisodeGif:
        # no await before the future is registered: admission (cache, sharing, the cap) is one atomic step
        ckpt = self._checkpoint(policy_id)  # a SQLite row and a directory listing, as the act route does
        key = (policy_id, ckpt.name, seed)
        hit = self.cache.get(key)
        if hit is not None:
            self.cache.move_to_end(key)
            return hit
        shared = self.inflight.get(key)
        if shared is not None:
            return await asyncio.shield(shared)
        if len(self.inflight) >= self.max_concurrent + self.max_waiting:
            raise Busy(f"{len(self.inflight)} episode renders already running or queued; try again shortly")
        future: asyncio.Future[EpisodeGif] = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        try:
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.max_concurrent)
            async with self._slots:
                result = await asyncio.to_thread(self._render, ckpt, seed)
            self._remember(key, result)
            future.set_result(result)
            return result
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved here, so a render nobody else awaited logs no warning
            raise
        finally:
            del self.inflight[key]

    def _render(self, ckpt: Path, seed: int) -> EpisodeGif:
        """One greedy episode with frames at 1/``downscale`` resolution (GIF encoding dominates the cost and a
        600x400 CartPole frame costs ~7x a 300x200 one), in a process of its own with a timeout
        (``rayac.render``): a renderer that aborts (MuJoCo without a display or headless GL) costs that process,
        never the service. Without a display the headless GL backends are tried in turn; if none renders:
        RenderUnavailable."""
        with tempfile.TemporaryDirectory(prefix="rayac-gif-") as tmp:
            out = Path(tmp) / "episode.gif"
            try:
                info = render_episode(ckpt, out, seed=seed, max_steps=self.max_steps, downscale=self.downscale,
                                      timeout_s=self.timeout_s, worker=self.worker)  # fmt: skip
            except RenderTimedOut as err:
                raise Unavailable(str(err)) from None
            self.renders += 1
            return EpisodeGif(out.read_bytes(), ckpt.name, float(info["return"]), int(info["length"]))

    def _remember(self, key: Key, gif: EpisodeGif) -> None:
        if len(gif.data) > self.cache_bytes:
            return
        self.cache[key] = gif
        while sum(len(g.data) for g in self.cache.values()) > self.cache_bytes:
            self.cache.popitem(last=False)
