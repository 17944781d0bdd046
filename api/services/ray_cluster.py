"""Where jobs run: the cluster at RAY_ADDRESS, or a local Ray head that this service starts once.

The local head is started with ``ray start`` in its own session, so it outlives the service (jobs go on
while the service restarts) and can be stopped precisely by its process group — never ``ray stop``,
which would kill every Ray process on the host. Its address is kept in ``<storage>/ray_head.json``.

That head is no open door: it runs with Ray's token auth (``RAY_AUTH_MODE=token``), its token in
``<storage>/ray_token``, so a local process without the token cannot submit a job to its dashboard or join its
GCS. Both files are 0600 (this user only); the service sends the token on every call it makes to the head.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from rayac.checkpoint import atomic_write_text
from rayac.remote import LOCAL_RAY_ENV

log = logging.getLogger(__name__)

HEAD_FILE = "ray_head.json"
TOKEN_FILE = "ray_token"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the one helper for it: services, tests and benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auth_headers(record: dict | None) -> dict[str, str]:
    """The Authorization header for the dashboard of a head: its own token for a head this service started,
    else whatever Ray's own client would send (``RAY_AUTH_MODE=token`` and its token, or nothing)."""
    path = (record or {}).get("token_path")
    if path:
        return {"Authorization": f"Bearer {Path(path).read_text().strip()}"}
    if record is not None:
        return {}
    from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

    return get_auth_headers_if_auth_enabled({})


def dashboard_alive(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> bool:
    try:
        request = urllib.request.Request(f"{url}/api/version", headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def _head_lock(storage_dir: Path):
    """One head per storage dir, also across processes (two services, or `serve --stop-head` beside one)."""
    storage_dir.mkdir(parents=True, exist_ok=True)
    with open(os.open(storage_dir / "ray_head.lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def start_local_head(storage_dir: Path, *, num_cpus: int | None = None) -> dict:
    """Reuse the head recorded in ``storage_dir`` if it answers, else start one (loopback only, token auth)."""
    with _head_lock(storage_dir):
        return _start_local_head(storage_dir, num_cpus=num_cpus)


def _start_local_head(storage_dir: Path, *, num_cpus: int | None) -> dict:
    record_path = storage_dir / HEAD_FILE
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if dashboard_alive(record["dashboard_url"], headers=_record_headers(record)):
            if not record.get("token_path"):
                log.warning("the Ray head at %s was started without token auth (by an older rayac): stop it with "
                            "`rayac serve --stop-head` to get one that has it", record["gcs_address"])  # fmt: skip
            return record
        _stop_local_head(storage_dir)
    gcs_port, dash_port, agent_port, client_port = free_port(), free_port(), free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: socket paths must stay under 107 chars
    cpus = num_cpus or max(4, 2 * (os.cpu_count() or 1))
    ray_bin = str(Path(sys.executable).with_name("ray"))
    cmd = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
           f"--dashboard-agent-listen-port={agent_port}", f"--ray-client-server-port={client_port}",
           f"--num-cpus={cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats"]  # fmt: skip
    # every port is picked free: Ray's defaults (agent 52365, client 10001) collide with any other Ray head here
    # A new token for each head, readable by this user only; Ray's processes on the head read it from the file.
    token_path = storage_dir / TOKEN_FILE
    atomic_write_text(token_path, secrets.token_hex(32), mode=0o600)
    env = {**os.environ, **LOCAL_RAY_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)  # it would win over the file
    record = {"gcs_address": f"127.0.0.1:{gcs_port}", "dashboard_url": f"http://127.0.0.1:{dash_port}",
              "pgid": None, "temp_dir": temp_dir, "started_at": time.time(), "token_path": str(token_path)}  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, start_new_session=True, timeout=120
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed ({proc.returncode}): {proc.stderr[-2000:]}")
        record["pgid"] = _find_pgid(temp_dir)
        # recorded at once (a later stop finds it), readable by this user only: it is the way into the head
        atomic_write_text(record_path, json.dumps(record, indent=2), mode=0o600)
        deadline = time.monotonic() + 60
        while not dashboard_alive(record["dashboard_url"], headers=auth_headers(record)):
            if time.monotonic() > deadline:
                raise RuntimeError("the local Ray head started but its dashboard (Jobs API) never answered")
            time.sleep(0.5)
    except BaseException:  # a head that never became usable is stopped, not left running unrecorded
        _kill_head(record)
        record_path.unlink(missing_ok=True)
        raise
    # news, not a problem: `rayac serve` prints INFO of this logger as a plain line (api/cli.py: announce_head)
    log.info("started its Ray head at %s (Ray dashboard %s)", record["gcs_address"], record["dashboard_url"])
    return record


def enable_token_auth(token_path: str) -> None:
    """Make this process's Ray client (``ray.init``) use token auth with the token in ``token_path``."""
    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = token_path
    os.environ.pop("RAY_AUTH_TOKEN", None)
    Config.initialize("")  # Ray caches its config and its token: read both again
    AuthenticationTokenLoader.instance().reset_cache()


def _record_headers(record: dict) -> dict[str, str]:
    try:
        return auth_headers(record)
    except OSError:  # its token file is gone: the head cannot be used
        return {"Authorization": "Bearer -"}


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


def stop_local_head(storage_dir: Path, *, grace_s: float = 5.0, only: str | None = None) -> bool:
    """Stop the head this service started and everything that runs on it: its own process group, and each
    process group whose processes belong to that head — Ray's workers and the job drivers, which Ray starts in
    sessions of their own. Nothing else on the host is touched. Returns True if a head was recorded."""
    with _head_lock(storage_dir):
        record_path = storage_dir / HEAD_FILE
        if (
            only is not None
            and record_path.is_file()
            and json.loads(record_path.read_text())["gcs_address"] != only
        ):
            return False  # ``only``: the head at that GCS address, not one another caller has started since
        return _stop_local_head(storage_dir, grace_s=grace_s)


def _stop_local_head(storage_dir: Path, *, grace_s: float = 5.0) -> bool:
    record_path = storage_dir / HEAD_FILE
    if not record_path.is_file():
        return False
    _kill_head(json.loads(record_path.read_text()), grace_s=grace_s)
    record_path.unlink(missing_ok=True)
    return True


def _kill_head(record: dict, *, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, every process group of the head ``record`` describes; remove its temp dir."""
    groups = head_process_groups(record)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
            time.sleep(0.2)
        groups = [g for g in groups if _group_alive(g)]
        if not groups:
            break
    shutil.rmtree(record.get("temp_dir", ""), ignore_errors=True)


def head_process_groups(record: dict) -> list[int]:
    """Process groups with a live process of this head: the head's own, and any whose process names the head's
    temp dir on its command line (raylet, workers) or has the head's GCS address as RAY_ADDRESS (job drivers)."""
    temp_dir = (record.get("temp_dir") or "\0").encode()
    address = f"RAY_ADDRESS={record.get('gcs_address')}".encode()
    own = os.getpgid(0)
    groups = set()
    for pid, pgid in _live_processes():
        if pgid <= 1 or pgid == own:
            continue
        if pgid == record.get("pgid"):
            groups.add(pgid)
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if temp_dir in cmdline or address in environ.split(b"\0"):
            groups.add(pgid)
    return sorted(groups)


def _live_processes() -> list[tuple[int, int]]:
    """(pid, process group) of every process that is not a zombie (a zombie no one reaps still answers kill 0)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            out.append((int(pid), int(fields[2])))
    return out


def _group_alive(pgid: int) -> bool:
    return any(group == pgid for _, group in _live_processes())


class RayCluster:
    """The Ray cluster the service's jobs run on: connected to (or, without RAY_ADDRESS, started) once, under a
    lock, however many requests arrive first; told to forget a cluster that went away, so the next call
    reconnects — or starts a new head of its own."""

    def __init__(self, settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._client = None
        self.dashboard_url: str | None = None
        self.owned_head: dict | None = None  # the record of the head this service started
        self.headers: dict[str, str] = {}  # sent on every call to the dashboard (the head's token)

    def client(self):
        from ray.job_submission import JobSubmissionClient

        with self._lock:
            if self._client is None:
                url, self.owned_head = self._resolve()
                self.headers = auth_headers(self.owned_head)
                self._client = JobSubmissionClient(url, headers=dict(self.headers))
                self.dashboard_url = url
            return self._client

    def _resolve(self) -> tuple[str, dict | None]:
        settings = self.settings
        if settings.dashboard_url:
            return settings.dashboard_url, None
        if settings.ray_address:
            address = settings.ray_address
            if not address.startswith("http"):
                address = f"http://{address.removeprefix('ray://').split(':')[0]}:8265"
            return address, None
        record = start_local_head(Path(settings.storage_dir), num_cpus=settings.head_cpus)
        return record["dashboard_url"], record

    @property
    def connected(self) -> bool:
        return self._client is not None

    def alive(self) -> bool:
        """Whether the connected cluster answers (an owned head whose process group is gone is dead at once)."""
        url, head = self.dashboard_url, self.owned_head
        if url is None:
            return False
        if head and head.get("pgid") and not _group_alive(head["pgid"]):
            return False
        return dashboard_alive(url, headers=self.headers)

    def alive_processes(self) -> bool:
        """For a head of the service's own: whether its process group still exists (else: True, unknown)."""
        head = self.owned_head
        return not (head and head.get("pgid")) or _group_alive(head["pgid"])

    def lost(self) -> None:
        """The cluster went away: forget it, and stop what is left of a head of the service's own (its job
        drivers included), so nothing trains on unobserved. The next call reconnects or starts a new head."""
        with self._lock:
            head, self._client, self.dashboard_url, self.owned_head = self.owned_head, None, None, None
        if head:
            with contextlib.suppress(OSError, ValueError, KeyError):
                stop_local_head(Path(self.settings.storage_dir), only=head["gcs_address"])

    def total_resources(self) -> dict[str, float]:
        """Sum of ``resourcesTotal`` over the cluster's alive nodes (from the dashboard)."""
        self.client()
        request = urllib.request.Request(f"{self.dashboard_url}/nodes?view=summary", headers=self.headers)
        with urllib.request.urlopen(request, timeout=10) as resp:
            nodes = json.loads(resp.read())["data"]["summary"]
        total: dict[str, float] = {}
        for node in nodes:
            raylet = node.get("raylet") or {}
            if raylet.get("state") != "ALIVE":
                continue
            for key, value in (raylet.get("resourcesTotal") or {}).items():
                total[key] = total.get(key, 0.0) + float(value)
        return total
