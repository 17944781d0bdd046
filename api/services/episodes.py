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
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rayac.checkpoint import latest_checkpoint

from .errors import NotFound, Unavailable
from .jobs import JobService


class Busy(RuntimeError):
    """Too many renders running or queued (HTTP 429)."""


class RenderUnavailable(RuntimeError):
    """No way to render this env here (HTTP 501, naming the reason and the setting)."""


GL_WORDS = re.compile(r"\b(GL|EGL|OSMesa|GLFW|glfw|OpenGL|DISPLAY|display|X11|FatalError|gladLoadGL)\b")


def gl_backends() -> list[str | None]:
    """GL backends to try: the configured one (or none: pygame needs no GL) when there is a display or MUJOCO_GL
    is set; else none first (most envs need no GL), then EGL, then OSMesa."""
    if os.environ.get("DISPLAY") or os.environ.get("MUJOCO_GL"):
        return [None]
    return [None, "egl", "osmesa"]


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
        self.worker = "api.services.render_worker"  # the module a render process runs
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
        600x400 CartPole frame costs ~7x a 300x200 one), in a process of its own with a timeout: a renderer that
        aborts (MuJoCo without a display or headless GL) costs that process, never the service. Without a display
        the headless GL backends are tried in turn (MUJOCO_GL=egl, then osmesa); if none renders: RenderUnavailable.
        """
        problems = []
        for gl in gl_backends():
            env = {**os.environ, **({"MUJOCO_GL": gl, "PYOPENGL_PLATFORM": gl} if gl else {})}
            with tempfile.TemporaryDirectory(prefix="rayac-gif-") as tmp:
                out = Path(tmp) / "episode.gif"
                cmd = [sys.executable, "-m", self.worker, str(ckpt), str(seed), str(self.max_steps),
                       str(self.downscale), str(out)]  # fmt: skip
                try:
                    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=self.timeout_s,
                                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
                except subprocess.TimeoutExpired:
                    raise Unavailable(f"rendering the episode took over {self.timeout_s:g} s") from None
                if proc.returncode == 0:
                    info = json.loads(proc.stdout.strip().splitlines()[-1])
                    self.renders += 1
                    return EpisodeGif(out.read_bytes(), ckpt.name, float(info["return"]), int(info["length"]))
            if proc.returncode > 0 and not GL_WORDS.search(proc.stderr):  # a bug, not the display
                raise RuntimeError(f"rendering failed: {proc.stderr.strip()[-500:]}")
            why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            problems.append(f"MUJOCO_GL={gl}: {why}" if gl else why)
        raise RenderUnavailable("this env cannot be rendered on this machine (" + "; ".join(problems)[-600:] + "); "
                                "a display (DISPLAY) or a headless GL backend (MUJOCO_GL=egl with EGL, or osmesa "
                                "with OSMesa) is needed")  # fmt: skip

    def _remember(self, key: Key, gif: EpisodeGif) -> None:
        if len(gif.data) > self.cache_bytes:
            return
        self.cache[key] = gif
        while sum(len(g.data) for g in self.cache.values()) > self.cache_bytes:
            self.cache.popitem(last=False)
