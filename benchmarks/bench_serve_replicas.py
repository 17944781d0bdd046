"""Deployment act: in the service's process vs on 1, 2, … Ray Serve replicas (RAYAC_SERVE_REPLICAS), same run.

One trained CartPole policy is deployed once; for each mode a fresh `rayac serve` (on one local Ray head of this
script's own) answers `POST /v1/deployments/bench/act` while client processes (asyncio + httpx, keep-alive)
hold C connections open for S seconds. Every mode sees the same requests; the table gives requests/s,
observations/s, p50/p99 latency and non-2xx answers. The clients run on the same machine: on a small one they
take cores from the replicas, so compare modes within one run, on a quiet machine.

    python benchmarks/bench_serve_replicas.py [--seconds 20] [--connections 32] [--batch 1] [--replicas 1,2,4,8]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parent.parent


def _client(url: str, body: dict, connections: int, seconds: float, out: mp.Queue) -> None:
    import httpx

    async def run() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:

            async def loop() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    try:
                        resp = await client.post(url, json=body)
                        ok = resp.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors += 1

            await asyncio.gather(*(loop() for _ in range(connections)))
        return latencies, errors

    out.put(asyncio.run(run()))


def load(url: str, body: dict, *, connections: int, procs: int, seconds: float) -> dict:
    """C connections spread over ``procs`` client processes for ``seconds``: requests/s, p50/p99 ms, errors."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    per = [connections // procs + (i < connections % procs) for i in range(procs)]
    workers = [ctx.Process(target=_client, args=(url, body, c, seconds, out)) for c in per if c]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    results = [out.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    elapsed = (
        time.perf_counter() - t0
    )  # (with the clients' start-up; requests/s is over the measured seconds)
    latencies = sorted(lat for lats, _ in results for lat in lats)

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else float("nan")
        )

    return {"rps": len(latencies) / seconds, "p50": statistics.median(latencies) * 1e3 if latencies else float("nan"),
            "p99": pct(0.99), "errors": sum(e for _, e in results), "elapsed": elapsed}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per mode (default 20)")
    p.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    p.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--batch", type=int, default=1, help="observations per request (default 1)")
    p.add_argument("--replicas", default="1,2", help="Serve replica counts to measure (default 1,2)")
    p.add_argument(
        "--head-cpus", type=int, default=None, help="CPUs of the local Ray head (default: cores, >= 10)"
    )
    p.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = p.parse_args()
    counts = [int(n) for n in args.replicas.split(",") if n.strip()]

    import httpx
    from bench_serve import prepare_job, wait_up
    from common import machine, write_section

    from api.services.ray_cluster import free_port, start_local_head, stop_local_head

    storage = Path(tempfile.mkdtemp(prefix="rayac-bench-replicas-"))
    job_id = "job-bench"
    rows, results = [], {}
    procs: list[subprocess.Popen] = []
    head_cpus = args.head_cpus or max(10, (os.cpu_count() or 1), max(counts, default=1) + 2)
    try:
        prepare_job(storage, job_id, "a2c_cartpole", ["run.stop.total_env_steps=3000"])
        start_local_head(storage, num_cpus=head_cpus)
        body = {"observations": [[0.01, -0.02, 0.03, 0.04]] * args.batch, "deterministic": True}
        modes = [("in process", None)] + [
            (f"Ray Serve, {n} replica{'s' if n > 1 else ''}", str(n)) for n in counts
        ]
        for label, replicas in modes:
            port = free_port()
            env = {**os.environ, "RAYAC_STORAGE_DIR": str(storage), "PYTHONPATH": str(ROOT),
                   "RAYAC_PORT": str(port)}  # fmt: skip
            env.pop("RAYAC_API_TOKEN", None)
            env.pop("RAY_ADDRESS", None)
            if replicas:
                env["RAYAC_SERVE_REPLICAS"] = replicas
            proc = subprocess.Popen([sys.executable, "-m", "rayac.cli", "serve"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            procs.append(proc)
            base = f"http://127.0.0.1:{port}"
            wait_up(f"{base}/healthz")
            if replicas is None:
                resp = httpx.post(
                    f"{base}/v1/deployments", json={"name": "bench", "policy": job_id}, timeout=60
                )
                assert resp.status_code == 201, resp.text
            url = f"{base}/v1/deployments/bench/act"
            deadline = time.monotonic() + 300  # replicas start: warm until they answer
            while httpx.post(url, json=body, timeout=120).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{label}: no answer")
                time.sleep(1)
            load(url, body, connections=args.connections, procs=args.client_procs, seconds=2.0)  # warm-up
            r = load(url, body, connections=args.connections, procs=args.client_procs, seconds=args.seconds)
            results[label] = r
            rows.append(f"| {label} | {r['rps']:,.0f} | {r['rps'] * args.batch:,.0f} | {r['p50']:.2f} | "
                        f"{r['p99']:.2f} | {r['errors']} |")  # fmt: skip
            print(rows[-1], flush=True)
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        stop_local_head(storage)
        shutil.rmtree(storage, ignore_errors=True)
    base_rps = results["in process"]["rps"]
    body_md = (
        "## Deployment act: in process vs Ray Serve replicas (bench_serve_replicas.py)\n\n"
        f"Machine: {machine()}. Run: `{' '.join(sys.argv)}` on {time.strftime('%Y-%m-%d')}. Clients: "
        f"{args.client_procs} processes (asyncio + httpx), {args.connections} connections, {args.batch} "
        f"observation(s) per request, {args.seconds:g} s per mode, same machine, same run. A2C CartPole MLP.\n\n"
        "| deployment act served | requests/s | observations/s | p50 ms | p99 ms | non-2xx |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        + "; ".join(f"{label}: {r['rps'] / base_rps:.2f}× in process" for label, r in results.items()
                    if label != "in process") + ".\n"
    )  # fmt: skip
    cores = os.cpu_count() or 1
    if cores < 1 + max(counts, default=1) + args.client_procs:  # service + replicas + clients
        body_md += (f"\nThis machine has {cores} cores, fewer than the service, {max(counts, default=1)} replicas and "
                    f"{args.client_procs} client process(es) need (load average {os.getloadavg()[0]:.1f} at the end): "
                    "these rows measure contention, not what Serve adds. Run it on a quiet machine with more cores.\n")  # fmt: skip
    print(body_md)
    if not args.no_write:
        write_section("bench_serve_replicas", body_md)


if __name__ == "__main__":
    main()
