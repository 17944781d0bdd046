"""A real service: `rayac serve` in a subprocess on 127.0.0.1, a Ray head of its own, httpx as the client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.services.ray_cluster import free_port, start_local_head, stop_local_head

TOKEN = "test-token-123"


class Service:
    """Starts/stops `rayac serve`; the storage dir (and so the jobs and the Ray head) outlives restarts."""

    def __init__(self, storage: Path, port: int, **settings: str):
        """``settings``: extra RAYAC_* variables, e.g. ``RAYAC_PLACEMENT_TIMEOUT_S="5"``."""
        self.storage = storage
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.settings = settings

    def start(self, *, tries: int = 3) -> None:
        """Start it and wait for /healthz. A port taken between free_port() and the bind (a Ray process of this
        or another test picks its ports at random) is retried on a new one; any other early exit fails at once."""
        env = {**os.environ, "RAYAC_STORAGE_DIR": str(self.storage), "RAYAC_API_TOKEN": TOKEN,
               "RAYAC_PORT": str(self.port), "RAYAC_HOST": "127.0.0.1", **self.settings}  # fmt: skip
        env.pop("RAY_ADDRESS", None)
        log_path = self.storage / f"service-{time.time_ns()}.log"
        self.log = open(log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "rayac.cli", "serve"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 180  # imports torch and Ray: slow on a loaded machine
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                said = log_path.read_text()
                if "is taken" in said and tries > 1:
                    self.log.close()
                    self.port, self.url = (port := free_port()), f"http://127.0.0.1:{port}"
                    return self.start(tries=tries - 1)
                raise RuntimeError(
                    f"service exited with {self.proc.returncode} before it came up: {said[-2000:]}"
                )
        raise RuntimeError("service did not come up")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def log_text(self) -> str:
        return "".join(p.read_text() for p in sorted(self.storage.glob("service-*.log")))

    def stop_unfinished_jobs(self) -> None:
        try:
            with self.client() as c:
                for job in c.get("/v1/jobs", params={"limit": 200}).json()["jobs"]:
                    if job["status"] in ("pending", "running"):
                        c.post(f"/v1/jobs/{job['id']}/stop")
        except (httpx.HTTPError, KeyError):
            pass


@pytest.fixture(scope="session")
def service(tmp_path_factory):
    storage = tmp_path_factory.mktemp("service")
    start_local_head(storage, num_cpus=4)  # the service reuses it; we stop it by its process group below
    svc = Service(storage, free_port())
    svc.start()
    yield svc
    svc.stop_unfinished_jobs()  # leave no job running behind
    svc.stop()
    stop_local_head(storage)


@pytest.fixture
def extra_service(service):
    """Another service on the session's storage and Ray head, with other settings: ``extra_service(**env)``."""
    started = []

    def start(**settings: str) -> Service:
        svc = Service(service.storage, free_port(), **settings)
        svc.start()
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


def wait_for(predicate, *, timeout: float, every: float = 0.25):
    """Poll until ``predicate()`` is truthy; returns its value, or the last (falsy) one at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def small_job(steps: int = 30_000, **extra) -> dict:
    config = {
        "env": {"id": "CartPole-v1", "num_envs": 16, "seed": 0},
        "optim": {"lr": 0.002},
        "run": {"stop": {"total_env_steps": steps, "target_return": 475}, "eval_interval_steps": 5000,
                "tensorboard": False},
    }  # fmt: skip
    for key, value in extra.items():
        section, field = key.split("__")
        config.setdefault(section, {})[field] = value
    return {"name": "test", "config": config}


def follow(client: httpx.Client, job_id: str, *, last_event_id: int | None = None, stop_after: int | None = None,
           timeout: float = 240) -> tuple[list[tuple[int, dict]], dict | None]:  # fmt: skip
    """Read the SSE stream: ([(id, record)], final status or None if we stopped early)."""
    from httpx_sse import connect_sse

    from api.sse_client import stream_events

    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events = []
    url = f"/v1/jobs/{job_id}/metrics/stream"
    with connect_sse(client, "GET", url, headers=headers, timeout=timeout) as source:
        assert source.response.status_code == 200, source.response.read()
        for sse in stream_events(source):
            if sse.event == "status":
                return events, sse.json()
            events.append((int(sse.id), sse.json()))
            if stop_after is not None and len(events) >= stop_after:
                return events, None
    return events, None
