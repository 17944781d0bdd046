"""What bench_soak.py adds to its act load and job churn (issue 20): clients that stop reading a long metrics
stream, a policy whose checkpoints rotate under act load, /healthz latency and the service's RSS through it all.

- **Slow SSE clients**: a finished job with a ~``sse_mb`` MB ``metrics.jsonl`` is registered in the service's
  storage; ``slow_sse`` raw sockets ask for its whole stream and read nothing (a 4 KiB receive buffer). The service
  must hold each to a bounded buffer and drop it after RAYAC_STREAM_SEND_TIMEOUT_S; at the end each socket is read
  to its end, and a stream that was not cut counts as kept.
- **Checkpoint rotation**: a copy of the trained policy's run is registered as another job; a thread writes its
  next checkpoint (temp dir, rename) and prunes the old one every ``rotate_ms`` ms, as a training job does, while
  a second wrk acts on it and a loop reads GET /v1/policies and GET /v1/policies/{id}.
- **/healthz** every 100 ms (p50, p99, max) and the service's **RSS** every 0.5 s (before, peak, after).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil

from api.services.store import JobRecord, JobStore
from rayac.checkpoint import CKPT_PREFIX, checkpoint_dirs, prune_checkpoints


def register_finished_job(storage: Path, name: str, run_dir: Path, config: dict) -> str:
    job_id = f"job-{name}-{uuid.uuid4().hex[:6]}"
    now = time.time()
    JobStore(storage / "jobs.db").insert(
        JobRecord(job_id, name, "succeeded", config, str(run_dir), now, now, None)
    )
    return job_id


def write_big_metrics(run_dir: Path, megabytes: float) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    filler = {f"train/metric_{k:02d}": 0.123456789 * k for k in range(12)}
    records = int(megabytes * 2**20 / 330)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for i in range(records):
            f.write(json.dumps({"time/iteration": i, "time/env_steps": 80 * i, **filler}) + "\n")
    (run_dir / "result.json").write_text(json.dumps({"stop_reason": "total_env_steps"}))
    return (run_dir / "metrics.jsonl").stat().st_size


class SlowSSEClients:
    def __init__(self, port: int, token: str, job_id: str, count: int):
        self.port, self.token, self.job_id, self.count = port, token, job_id, count
        self.sockets: list[socket.socket] = []

    def open(self) -> None:
        for _ in range(self.count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", self.port))
            s.sendall(f"GET /v1/jobs/{self.job_id}/metrics/stream HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                      f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n".encode())  # fmt: skip
            self.sockets.append(s)

    def close(self, size: int) -> tuple[int, int]:
        """(dropped by the service, kept to the stream's end or still open), reading each to its end."""
        dropped = kept = 0
        for s in self.sockets:
            s.settimeout(30)
            got, complete = 0, False
            try:
                while chunk := s.recv(1 << 20):
                    got += len(chunk)
                    complete = complete or b"event: status" in chunk
            except OSError:
                complete = True  # still open after 30 s: not dropped
            s.close()
            if complete or got >= size:
                kept += 1
            else:
                dropped += 1
        return dropped, kept


class Rotator(threading.Thread):
    """Writes the next checkpoint and prunes the old one every ``every_s``, as a training job does."""

    def __init__(self, run_dir: Path, every_s: float):
        super().__init__(name="soak-rotate", daemon=True)
        self.run_dir, self.every_s = run_dir, every_s
        self.halt = threading.Event()
        self.rotations = 0

    def run(self) -> None:
        step = 10**9
        while not self.halt.wait(self.every_s):
            step += 1
            newest = checkpoint_dirs(self.run_dir)[-1]
            tmp = self.run_dir / "checkpoints" / f".tmp-{step}"
            shutil.copytree(newest, tmp)
            tmp.rename(self.run_dir / "checkpoints" / f"{CKPT_PREFIX}{step:012d}")
            prune_checkpoints(self.run_dir, 1)
            self.rotations += 1


class Prober(threading.Thread):
    """GET /healthz every 100 ms; the service's RSS every 0.5 s; GET /v1/policies(/{id}) of the rotating job."""

    def __init__(self, url: str, token: str, pid: int, rotating_id: str):
        super().__init__(name="soak-probe", daemon=True)
        self.url, self.token, self.proc, self.rotating_id = url, token, psutil.Process(pid), rotating_id
        self.halt = threading.Event()
        self.health: list[float] = []
        self.health_codes: Counter = Counter()
        self.policy_codes: Counter = Counter()
        self.rss: list[float] = []

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        last_rss = 0.0
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as c:
            while not self.halt.wait(0.1):
                t0 = time.perf_counter()
                try:
                    self.health_codes[c.get("/healthz").status_code] += 1
                except httpx.HTTPError as err:
                    self.health_codes[type(err).__name__] += 1
                self.health.append(time.perf_counter() - t0)
                for path in ("/v1/policies", f"/v1/policies/{self.rotating_id}"):
                    try:
                        self.policy_codes[
                            (path.replace(self.rotating_id, "{id}"), c.get(path).status_code)
                        ] += 1
                    except httpx.HTTPError as err:
                        self.policy_codes[(path, type(err).__name__)] += 1
                if time.monotonic() - last_rss >= 0.5:
                    last_rss = time.monotonic()
                    self.rss.append(self.proc.memory_info().rss / 2**20)


class SoakExtras:
    def __init__(self, *, url: str, port: int, token: str, storage: Path, pid: int, policy_run: Path,
                 slow_sse: int, sse_mb: float, rotate_ms: float):  # fmt: skip
        self.url, self.token, self.pid = url, token, pid
        config = json.loads((policy_run / "config.json").read_text())
        self.big_size = write_big_metrics(storage / "runs" / "soak-big", sse_mb)
        big_id = register_finished_job(storage, "big", storage / "runs" / "soak-big", config)
        rotating_run = Path(shutil.copytree(policy_run, storage / "runs" / "soak-rotating"))
        self.rotating_id = register_finished_job(storage, "rotating", rotating_run, config)
        self.sse = SlowSSEClients(port, token, big_id, slow_sse)
        self.rotator = Rotator(rotating_run, rotate_ms / 1000)
        self.prober = Prober(url, token, pid, self.rotating_id)
        self.rss_before = psutil.Process(pid).memory_info().rss / 2**20
        self.dropped = self.kept = 0

    @property
    def act_url(self) -> str:
        return f"{self.url}/v1/policies/{self.rotating_id}/act"

    def start(self) -> None:
        self.sse.open()
        self.rotator.start()
        self.prober.start()

    def stop(self) -> None:
        self.rotator.halt.set()
        self.prober.halt.set()
        self.rotator.join(timeout=30)
        self.prober.join(timeout=60)
        self.rss_after = psutil.Process(self.pid).memory_info().rss / 2**20
        self.dropped, self.kept = self.sse.close(self.big_size)

    def failures(self) -> int:
        """5xx and failed requests of the probes (the rotating policy's act load is counted by its wrk)."""
        bad = sum(
            n for code, n in self.prober.health_codes.items() if not isinstance(code, int) or code >= 500
        )
        return bad + sum(n for (_, code), n in self.prober.policy_codes.items()
                         if not isinstance(code, int) or code >= 500)  # fmt: skip

    def report(self, rotating_act: dict) -> str:
        h = np.array(self.prober.health or [float("nan")]) * 1e3
        codes = ", ".join(f"{s}: {n:,}" for s, n in sorted(rotating_act["statuses"].items()))
        reads = ", ".join(f"{p} {c}: {n}" for (p, c), n in sorted(self.prober.policy_codes.items(), key=str))
        peak = max(self.prober.rss or [self.rss_before])
        return f"""
**During the soak, also** (soak_extras.py): {self.sse.count} SSE clients that read nothing of a \
{self.big_size / 2**20:.0f} MB metrics stream — {self.dropped} dropped by the service, {self.kept} kept to the end or \
still open; a policy whose checkpoint was rewritten and pruned {self.rotator.rotations} times (act on it, wrk with \
{rotating_act["connections"]} connections: {rotating_act["requests"]:,} requests, {codes}, {rotating_act["failed"]} \
failed; {reads}); `/healthz` every 100 ms: p50 {np.percentile(h, 50):.1f} ms, p99 {np.percentile(h, 99):.1f} ms, max \
{h.max():.0f} ms ({sum(self.prober.health_codes.values())} probes).

| service RSS, MiB | before the soak | peak during it | after it |
| --- | --- | --- | --- |
| uvicorn | {self.rss_before:.0f} | {peak:.0f} | {self.rss_after:.0f} |
"""
