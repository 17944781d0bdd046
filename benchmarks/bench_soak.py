"""Soak: POST act at 64 connections for 60 s while jobs are submitted, listed, read and stopped, clients stall
on long metrics streams and a policy's checkpoints rotate under act load (soak_extras.py).

Starts `rayac serve` on 127.0.0.1 with a bearer token and a Ray head of its own (started here, in a temp
storage dir, and stopped here by that dir), trains one small CartPole policy over REST, then measures:

1. floor: the act load alone for --floor-seconds (the same wrk load, no job churn), before and after the soak;
2. soak: the act load for --seconds while a control loop runs one cycle every --cycle-s seconds (bounded:
   at most seconds / cycle-s cycles): submit a small job, list jobs (two pages), read the job, stop it.

Load generator: `wrk` (one thread, C; Debian: apt-get install wrk) with a Lua script whose `response` hook
counts every status code; the control loop is httpx in a thread of this process. RSS is the service's
process (uvicorn runs one process; its children are included, and it has none: jobs reach Ray over HTTP).
Exits 1 if any response was a 5xx — counted by the clients and by the service's own /metrics — or a request
failed outright (timeout, reset). Everything it started is stopped on the way out, Ctrl-C included.

    python benchmarks/bench_soak.py [--seconds 60] [--floor-seconds 10] [--connections 64] [--cycle-s 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_serve import free_port, wait_up  # noqa: E402
from common import machine, write_section  # noqa: E402
from soak_extras import SoakExtras  # noqa: E402

from api.services.ray_cluster import HEAD_FILE, head_process_groups, start_local_head, stop_local_head  # noqa: E402

TOKEN = "soak-token-0123456789"
OBS = {"observations": [[0.01, -0.02, 0.03, 0.04]], "deterministic": True}

# The `response` hook sees every response, so wrk reports each status code, not only "non-2xx".
WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.body = %(body)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local parts = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do table.insert(parts, string.format('["%%d", %%d]', code, n)) end
  end
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, "statuses": [%%s]}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, latency:percentile(50),
    latency:percentile(99), latency.max, table.concat(parts, ", ")))
end
"""


def job_body(name: str, steps: int, **run: object) -> dict:
    return {"name": name, "config": {
        "env": {"id": "CartPole-v1", "num_envs": 8, "seed": 0}, "resources": {"num_workers": 0},
        "run": {"stop": {"total_env_steps": steps, **run}, "tensorboard": False}}}  # fmt: skip


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_mib(proc: psutil.Process) -> tuple[float, int]:
    """RSS of the process and its children (MiB), and how many children there are."""
    kids = proc.children(recursive=True)
    total = proc.memory_info().rss
    for kid in kids:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += kid.memory_info().rss
    return total / 2**20, len(kids)


def head_rss_mib(storage: Path) -> float:
    """RSS of every process of the Ray head started here: the head's own group and its jobs' drivers."""
    record = json.loads((storage / HEAD_FILE).read_text())
    groups = set(head_process_groups(record))
    total = 0
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in groups:
                total += proc.memory_info().rss
        except (psutil.Error, ProcessLookupError):
            pass
    return total / 2**20


def run_wrk(url: str, connections: int, seconds: int) -> dict:
    script = WRK_LUA % {"token": TOKEN, "body": json.dumps(json.dumps(OBS))}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", f.name, url],
                             capture_output=True, text=True, timeout=seconds + 60)  # fmt: skip
    finally:
        os.unlink(f.name)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(
            f"wrk gave no result ({out.returncode}): {out.stdout[-1000:]} {out.stderr[-1000:]}"
        )
    r = json.loads(line.removeprefix("WRK_JSON "))
    statuses: Counter[int] = Counter()
    for code, n in r["statuses"]:
        statuses[int(code)] += n
    r["statuses"] = statuses
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["failed"] = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return r


class ControlLoop(threading.Thread):
    """One cycle every ``every`` s, at most ``cycles``: submit, list two pages, read, stop — each timed."""

    def __init__(self, url: str, every: float, cycles: int):
        super().__init__(name="soak-control", daemon=True)
        self.url, self.every, self.cycles = url, every, cycles
        self.halt = threading.Event()
        self.calls: list[tuple[str, int | str, float]] = []  # (route, status or error name, seconds)
        self.job_ids: list[str] = []
        self.done_cycles = 0

    def call(self, client: httpx.Client, route: str, method: str, path: str, **kw) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            resp = client.request(method, path, **kw)
        except httpx.HTTPError as err:
            self.calls.append((route, type(err).__name__, time.perf_counter() - t0))
            return None
        self.calls.append((route, resp.status_code, time.perf_counter() - t0))
        return resp

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as c:
            start = time.monotonic()
            for i in range(self.cycles):
                if self.halt.is_set():
                    return
                # a job long enough to be running when it is stopped; time_limit_s bounds it if a stop fails
                resp = self.call(c, "POST /v1/jobs", "POST", "/v1/jobs",
                                 json=job_body(f"soak-{i}", 200_000, time_limit_s=30))  # fmt: skip
                page = self.call(c, "GET /v1/jobs?limit=3", "GET", "/v1/jobs", params={"limit": 3})
                if page is not None and page.status_code == 200 and page.json()["next_cursor"]:
                    self.call(c, "GET /v1/jobs?cursor=", "GET", "/v1/jobs",
                              params={"limit": 3, "cursor": page.json()["next_cursor"]})  # fmt: skip
                if resp is not None and resp.status_code == 201:
                    job_id = resp.json()["id"]
                    self.job_ids.append(job_id)
                    self.call(c, "GET /v1/jobs/{id}", "GET", f"/v1/jobs/{job_id}")
                    self.call(c, "POST /v1/jobs/{id}/stop", "POST", f"/v1/jobs/{job_id}/stop")
                self.done_cycles += 1
                self.halt.wait(max(0.0, start + (i + 1) * self.every - time.monotonic()))


def stop_unfinished(url: str) -> None:
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
            for job in c.get("/v1/jobs", params={"limit": 200}).json()["jobs"]:
                if job["status"] in ("pending", "running"):
                    c.post(f"/v1/jobs/{job['id']}/stop")
    except (httpx.HTTPError, KeyError, ValueError):
        pass  # the head is stopped below anyway, with every job driver on it


def server_5xx(url: str) -> dict[str, int]:
    """5xx responses by route, as the service's own Prometheus counter saw them."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).text
    out: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "rayac_http_requests_total" and s.labels["status"].startswith("5"):
                key = f"{s.labels['method']} {s.labels['route']} {s.labels['status']}"
                out[key] = out.get(key, 0) + int(s.value)
    return out


def train_policy(url: str) -> str:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
        resp = c.post("/v1/jobs", json=job_body("soak-policy", 4000))
        resp.raise_for_status()
        job_id = resp.json()["id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = c.get(f"/v1/jobs/{job_id}").json()["status"]
            if status == "succeeded":
                break
            if status in ("failed", "stopped"):
                raise RuntimeError(
                    f"the policy's job {status}: {c.get(f'/v1/jobs/{job_id}').json()['error']}"
                )
            time.sleep(1)
        else:
            raise RuntimeError("the policy's job did not finish within 300 s")
        act = c.post(f"/v1/policies/{job_id}/act", json=OBS)  # loads the policy into the cache
        act.raise_for_status()
        return job_id


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3 if values else float("nan")


def report(args, cmd, loads, rss, head, act: dict[str, dict], ctl: ControlLoop, srv5xx) -> tuple[str, bool]:
    """``act``: wrk results by phase ("floor before", "soak", "floor after")."""
    by_route: dict[str, Counter] = defaultdict(Counter)
    times: dict[str, list[float]] = defaultdict(list)
    for route, status, seconds in ctl.calls:
        by_route[route][status] += 1
        times[route].append(seconds)
    ctl_5xx = sum(n for c in by_route.values() for s, n in c.items() if isinstance(s, int) and s >= 500)
    failed = sum(n for c in by_route.values() for s, n in c.items() if isinstance(s, str))
    failed += sum(r["failed"] for r in act.values())
    act_5xx = sum(n for r in act.values() for s, n in r["statuses"].items() if s >= 500)
    passed = not (ctl_5xx or act_5xx or srv5xx or failed)
    total = sum(r["requests"] for r in act.values()) + len(ctl.calls)
    secs = {"floor before": args.floor_seconds, "soak": args.seconds, "floor after": args.floor_seconds}
    label = {"floor before": "floor: act alone, before", "soak": "soak: act + job churn",
             "floor after": "floor: act alone, after"}  # fmt: skip

    act_rows = []
    for phase, r in act.items():
        codes = ", ".join(f"{s}: {n:,}" for s, n in sorted(r["statuses"].items()))
        act_rows.append(f"| {label[phase]} | {secs[phase]} | {r['requests']:,} | {r['rps']:,.0f} | "
                        f"{r['p50_us'] / 1e3:.1f} | {r['p99_us'] / 1e3:.1f} | {r['max_us'] / 1e3:.0f} | {codes} | "
                        f"{r['failed']} |")  # fmt: skip
    rows = []
    for route, codes in by_route.items():
        c = ", ".join(f"{s}: {n}" for s, n in sorted(codes.items(), key=str))
        rows.append(f"| {route} | {sum(codes.values())} | {c} | {pct(times[route], 50):.0f} | "
                    f"{pct(times[route], 99):.0f} | {max(times[route]) * 1e3:.0f} |")  # fmt: skip
    stop_route = "POST /v1/jobs/{id}/stop"
    stops = by_route.get(stop_route, Counter())
    quick = [t for route, _, t in ctl.calls if route != stop_route]
    soak, floors = act["soak"], [act[k] for k in ("floor before", "floor after") if k in act]
    floor_rps = float(np.mean([f["rps"] for f in floors]))
    floor_p99 = float(np.mean([f["p99_us"] for f in floors]))
    body = f"""## Soak: act under job churn (bench_soak.py)

Machine: {machine()}, shared with other engineers' test runs. Run: `{cmd}` on {time.strftime("%Y-%m-%d %H:%M")}.
Load average (1/5/15 min): {loads[0]} before, {loads[1]} after. Service: `rayac serve` on 127.0.0.1 with a
bearer token and a local Ray head of its own (4 CPUs). Act load: wrk, 1 thread, {args.connections} connections,
one CartPole observation per request; its Lua `response` hook counts every status. Control loop: httpx, one
cycle every {args.cycle_s:g} s (submit a CartPole job, list a page of 3 and the next page, read the job, stop
it); {ctl.done_cycles} cycles, {len(ctl.job_ids)} jobs submitted. The floors are the same act load without the
churn, before the soak and after it (once the jobs are stopped and the service idled {args.idle_s:g} s).

**{"PASS" if passed else "FAIL"}: {total:,} requests, {act_5xx + ctl_5xx} 5xx seen by the clients, \
{sum(srv5xx.values())} 5xx in the service's own `/metrics`, {failed} requests failed outright (timeout, reset).**

| act load | s | requests | requests/s | p50 ms | p99 ms | max ms | statuses | failed |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(act_rows)}

Under churn act keeps {soak["rps"] / floor_rps:.0%} of its floors' mean requests/s; its p99 is \
{soak["p99_us"] / max(floor_p99, 1):.1f}× theirs.

| control route (during the soak) | calls | statuses | p50 ms | p99 ms | max ms |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Control loop p99: {pct(quick, 99):.0f} ms over the calls that do not wait (all but stop); a stop waits, by design,
up to 10 s for its job to end. Stops: {stops.get(200, 0)} answered 200 (the job stopped), {stops.get(409, 0)}
answered 409 — 409 is the documented answer to stopping a job that already ended, not a failure.

| RSS, MiB | service (uvicorn; children included: {rss["kids"]}) | Ray head + its jobs' processes |
| --- | --- | --- |
| after training the policy | {rss["start"]:.0f} | {head["start"]:.0f} |
| before the soak | {rss["before"]:.0f} | {head["before"]:.0f} |
| after the soak | {rss["after"]:.0f} | {head["after"]:.0f} |
| jobs stopped, {args.idle_s:g} s idle | {rss["idle"]:.0f} | {head["idle"]:.0f} |
| after the second floor | {rss["end"]:.0f} | {head["end"]:.0f} |
"""
    return body, passed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=60, help="soak duration (act + job churn)")
    p.add_argument("--floor-seconds", type=int, default=10, help="act alone, the floor")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--cycle-s", type=float, default=5.0, help="one control cycle every this many seconds")
    p.add_argument(
        "--idle-s",
        type=float,
        default=10.0,
        help="idle time after the soak's jobs are stopped, before an RSS reading and the second floor",
    )
    p.add_argument("--slow-sse", type=int, default=20, help="SSE clients that read nothing, during the soak")
    p.add_argument("--sse-mb", type=float, default=20, help="size of the metrics stream they ask for")
    p.add_argument("--rotate-ms", type=float, default=50, help="checkpoint rotation period (ms)")
    p.add_argument("--stream-send-timeout-s", type=float, default=5, help="RAYAC_STREAM_SEND_TIMEOUT_S")
    p.add_argument("--no-write", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_soak.py needs wrk: apt-get install wrk")
    # SIGTERM unwinds like Ctrl-C, so the finally below stops the jobs, the service and the head
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cmd = " ".join(["python benchmarks/bench_soak.py", *sys.argv[1:]])
    storage = Path(tempfile.mkdtemp(prefix="rayac-soak-"))
    service: subprocess.Popen | None = None
    ctl: ControlLoop | None = None
    url = ""
    passed = False
    try:
        start_local_head(storage, num_cpus=4)  # ours: stopped below by this storage dir, and only it
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "RAYAC_STORAGE_DIR": str(storage), "RAYAC_API_TOKEN": TOKEN,
               "RAYAC_HOST": "127.0.0.1", "RAYAC_PORT": str(port), "PYTHONPATH": str(ROOT),
               "RAYAC_STREAM_SEND_TIMEOUT_S": str(args.stream_send_timeout_s)}  # fmt: skip
        env.pop("RAY_ADDRESS", None)
        with open(storage / "service.log", "w") as log:
            # its own session: a Ctrl-C reaches this script, which stops the jobs before the service
            service = subprocess.Popen([sys.executable, "-m", "rayac.cli", "serve"], env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        wait_up(f"{url}/healthz")
        proc = psutil.Process(service.pid)
        loads = [load()]
        print(f"load {loads[0]}; training the policy ...", flush=True)
        policy = train_policy(url)
        act_url = f"{url}/v1/policies/{policy}/act"
        rss, head = {}, {}
        rss["start"], rss["kids"] = rss_mib(proc)
        head["start"] = head_rss_mib(storage)
        act: dict[str, dict] = {}
        print(f"floor: act alone for {args.floor_seconds} s ...", flush=True)
        run_wrk(act_url, args.connections, 2)  # warm-up: connections opened, nothing measured
        act["floor before"] = run_wrk(act_url, args.connections, args.floor_seconds)
        rss["before"], _ = rss_mib(proc)
        head["before"] = head_rss_mib(storage)
        print(f"soak: act, job churn, slow SSE clients, rotation for {args.seconds} s ...", flush=True)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
            policy_run = Path(c.get(f"/v1/jobs/{policy}").json()["config"]["run"]["run_dir"])
        extras = SoakExtras(url=url, port=port, token=TOKEN, storage=storage, pid=service.pid, policy_run=policy_run,
                            slow_sse=args.slow_sse, sse_mb=args.sse_mb, rotate_ms=args.rotate_ms)  # fmt: skip
        extras.start()
        rotating: dict = {}
        rot_conns = max(1, args.connections // 4)
        rot_wrk = threading.Thread(target=lambda: rotating.update(run_wrk(extras.act_url, rot_conns, args.seconds),
                                                                  connections=rot_conns))  # fmt: skip
        rot_wrk.start()
        ctl = ControlLoop(url, args.cycle_s, cycles=max(1, int(args.seconds // args.cycle_s)))
        ctl.start()
        act["soak"] = run_wrk(act_url, args.connections, args.seconds)
        ctl.halt.set()
        ctl.join(timeout=60)
        rot_wrk.join(timeout=120)
        extras.stop()
        rss["after"], kids = rss_mib(proc)
        rss["kids"] = max(rss["kids"], kids)
        head["after"] = head_rss_mib(storage)
        stop_unfinished(url)
        time.sleep(args.idle_s)
        rss["idle"], _ = rss_mib(proc)
        head["idle"] = head_rss_mib(storage)
        print(f"floor: act alone for {args.floor_seconds} s, after ...", flush=True)
        act["floor after"] = run_wrk(act_url, args.connections, args.floor_seconds)
        rss["end"], _ = rss_mib(proc)
        head["end"] = head_rss_mib(storage)
        loads.append(load())
        srv5xx = server_5xx(url)
        body, passed = report(args, cmd, loads, rss, head, act, ctl, srv5xx)
        rot_bad = sum(n for code, n in rotating["statuses"].items() if code >= 500) + rotating["failed"]
        body += extras.report(rotating)
        passed = passed and not rot_bad and not extras.failures() and not extras.kept
        print(body, flush=True)
        if srv5xx:
            print(f"5xx in the service's /metrics: {srv5xx}")
        if not args.no_write:
            write_section("bench_soak", body)
        if not passed:
            print("service log (tail):\n" + (storage / "service.log").read_text()[-3000:], file=sys.stderr)
    except Exception:
        if (storage / "service.log").exists():
            print("service log (tail):\n" + (storage / "service.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        if ctl is not None:
            ctl.halt.set()
            ctl.join(timeout=60)
        if service is not None and service.poll() is None:
            stop_unfinished(url)
            service.terminate()
            try:
                service.wait(timeout=15)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait(timeout=5)
        stop_local_head(storage)  # the head, and every job driver on it
        shutil.rmtree(storage, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything was stopped in main's finally
        sys.exit(130)
