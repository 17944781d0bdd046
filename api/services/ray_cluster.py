"""Where jobs run: the cluster at RAY_ADDRESS, or a local Ray head that this service starts once.

The local head is started with ``ray start`` in its own session, so it outlives the service (jobs go on
while the service restarts) and can be stopped precisely by its process group — never ``ray stop``,
which would kill every Ray process on the host. Its address is kept in ``<storage>/ray_head.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rayac.checkpoint import atomic_write_text

log = logging.getLogger(__name__)

HEAD_FILE = "ray_head.json"
LOCAL_RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_alive(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_local_head(storage_dir: Path, *, num_cpus: int | None = None) -> dict:
    """Reuse the head recorded in ``storage_dir`` if it answers, else start one (loopback only, no auth)."""
    storage_dir.mkdir(parents=True, exist_ok=True)
    record_path = storage_dir / HEAD_FILE
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if dashboard_alive(record["dashboard_url"]):
            return record
        stop_local_head(storage_dir)
    gcs_port, dash_port, agent_port, client_port = _free_port(), _free_port(), _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: socket paths must stay under 107 chars
    cpus = num_cpus or max(4, 2 * (os.cpu_count() or 1))
    ray_bin = str(Path(sys.executable).with_name("ray"))
    cmd = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
           f"--dashboard-agent-listen-port={agent_port}", f"--ray-client-server-port={client_port}",
           f"--num-cpus={cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats"]  # fmt: skip
    # every port is picked free: Ray's defaults (agent 52365, client 10001) collide with any other Ray head here
    env = {**os.environ, **LOCAL_RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, start_new_session=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ray start failed ({proc.returncode}): {proc.stderr[-2000:]}")
    pgid = _find_pgid(temp_dir)
    record = {"gcs_address": f"127.0.0.1:{gcs_port}", "dashboard_url": f"http://127.0.0.1:{dash_port}",
              "pgid": pgid, "temp_dir": temp_dir, "started_at": time.time()}  # fmt: skip
    deadline = time.monotonic() + 60
    while not dashboard_alive(record["dashboard_url"]):
        if time.monotonic() > deadline:
            raise RuntimeError("the local Ray head started but its dashboard (Jobs API) never answered")
        time.sleep(0.5)
    atomic_write_text(record_path, json.dumps(record, indent=2))
    return record


def _find_pgid(temp_dir: str) -> int | None:
    """The process group of the head's gcs_server (started in its own session by ray start)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "gcs_server" in cmdline and temp_dir in cmdline:
            return os.getpgid(int(pid))
    return None


def stop_local_head(storage_dir: Path, *, grace_s: float = 5.0) -> bool:
    """Stop the head this service started (its process group only). Returns True if one was running."""
    record_path = storage_dir / HEAD_FILE
    if not record_path.is_file():
        return False
    record = json.loads(record_path.read_text())
    pgid = record.get("pgid")
    if pgid and pgid > 1:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.2)
            if not _group_alive(pgid):
                break
    shutil.rmtree(record.get("temp_dir", ""), ignore_errors=True)
    record_path.unlink(missing_ok=True)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def jobs_client(settings):
    """A Ray JobSubmissionClient for the configured cluster (starting the local head if needed)."""
    from ray.job_submission import JobSubmissionClient

    if settings.dashboard_url:
        return JobSubmissionClient(settings.dashboard_url)
    if settings.ray_address:
        address = settings.ray_address
        if not address.startswith("http"):
            host = address.removeprefix("ray://").split(":")[0]
            address = f"http://{host}:8265"
        return JobSubmissionClient(address)
    record = start_local_head(Path(settings.storage_dir), num_cpus=settings.head_cpus)
    return JobSubmissionClient(record["dashboard_url"])
