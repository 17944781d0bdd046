"""Streams in bounded memory (issue 20, item 3): clients that stop reading a long metrics stream cost the service a
bounded amount of memory, are dropped after RAYAC_STREAM_SEND_TIMEOUT_S, and never stall /healthz. A real
`rayac serve` (no Ray needed: the job has ended, so nothing asks Ray about it)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from api.services.store import JobRecord, JobStore
from rayac.config import Config
from tests.api.conftest import TOKEN, Service, follow, free_port, wait_for

pytestmark = [pytest.mark.timeout(300)]

RECORDS = 60_000  # ~20 MB of metrics.jsonl
SILENT_CLIENTS = 12
SEND_TIMEOUT_S = 4


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    storage = tmp_path_factory.mktemp("streams")
    run_dir = storage / "runs" / "job-big"
    run_dir.mkdir(parents=True)
    filler = {f"train/metric_{k:02d}": 0.123456789 * k for k in range(12)}
    with open(run_dir / "metrics.jsonl", "w") as f:
        for i in range(RECORDS):
            f.write(json.dumps({"time/iteration": i, "time/env_steps": 80 * i, **filler}) + "\n")
    now = time.time()
    JobStore(storage / "jobs.db").insert(JobRecord("job-big", "big", "succeeded", Config().model_dump(mode="json"),
                                                   str(run_dir), now, now, None))  # fmt: skip
    svc = Service(storage, free_port(), RAYAC_STREAM_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S))
    svc.start()
    yield svc, (run_dir / "metrics.jsonl").stat().st_size
    svc.stop()


def silent_client(port: int) -> socket.socket:
    """Asks for the whole stream, then reads nothing (a tiny receive buffer, so the server's sends block soon)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET /v1/jobs/job-big/metrics/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
              f"Authorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n".encode())  # fmt: skip
    return s


def read_to_end(s: socket.socket, limit_s: float) -> bytes:
    s.settimeout(limit_s)
    chunks = []
    try:
        while chunk := s.recv(1 << 20):
            chunks.append(chunk)
    except TimeoutError:
        chunks.append(b"<still open>")
    return b"".join(chunks)


def test_clients_that_stop_reading_cost_bounded_memory_and_are_dropped(big_run):
    svc, size = big_run
    pid = svc.proc.pid
    with svc.client() as c:
        assert c.get("/v1/jobs/job-big").status_code == 200
    before = rss_mb(pid)
    sockets = [silent_client(svc.port) for _ in range(SILENT_CLIENTS)]
    peak, health = before, []
    deadline = time.monotonic() + SEND_TIMEOUT_S + 4
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        assert httpx.get(f"{svc.url}/healthz", timeout=60).status_code == 200
        health.append(time.perf_counter() - t0)
        peak = max(peak, rss_mb(pid))
        time.sleep(0.2)
    # each silent stream holds at most a chunk of records and the socket buffers, not the 20 MB file
    assert peak - before < 150, (before, peak, size)
    assert max(health) < 5, health  # the event loop never stalled behind the streams
    # the server ends each stream whose client reads nothing, long before the stream's end
    assert wait_for(lambda: svc.log_text().count("dropped a metrics stream") >= SILENT_CLIENTS, timeout=120)
    got = [read_to_end(s, 30) for s in sockets]
    for s in sockets:
        s.close()
    ends = [(len(g), g.endswith(b"<still open>"), b"event: status" in g) for g in got]
    assert all(n < size / 4 and not still_open and not ended for n, still_open, ended in ends), ends
    with svc.client() as c:  # and a client that reads gets the stream, resumed near its end
        events, final = follow(c, "job-big", last_event_id=RECORDS - 4)
    assert [i for i, _ in events] == [RECORDS - 3, RECORDS - 2, RECORDS - 1]
    assert final["status"] == "succeeded"
