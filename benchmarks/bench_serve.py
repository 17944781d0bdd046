"""Serving benchmark: act requests/s and p50/p99 latency, rayac's service vs a minimal FastAPI endpoint.

Both servers load the same trained CartPole policy and run one uvicorn process each; `wrk` (one client
thread, C) drives 1 and 32 connections with single observations and batches of 64, 5 s each. The
in-process forward pass is the ceiling. Needs `wrk` (Debian: apt-get install wrk).

    python benchmarks/bench_serve.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from api.services.ray_cluster import free_port

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parent.parent


def wait_up(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def prepare_job(storage: Path, job_id: str, preset: str, overrides: list[str]):  # noqa: ANN201 - a Config
    """Train ``preset`` briefly into the service's storage and register it as a finished job; returns its config."""
    import rayac
    from api.services.store import JobRecord, JobStore

    cfg = rayac.build_config(
        preset=preset, overrides=["run.progress_bar=false", "run.tensorboard=false", *overrides]
    )
    res = rayac.train(cfg, run_dir=storage / "runs" / job_id)
    now = time.time()
    JobStore(storage / "jobs.db").insert(JobRecord(job_id, "bench", "succeeded", cfg.model_dump(mode="json"),
                                                   res.run_dir, now, now, None))  # fmt: skip
    return cfg


def parse_args(doc: str, script: str) -> argparse.Namespace:
    """``--seconds``; stops with one line when wrk is missing."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit(f"{script} needs wrk: apt-get install wrk")
    return args


def run_wrk(url: str, body: dict, connections: int, seconds: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
        script = f.name
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout  # fmt: skip
    os.unlink(script)

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": int(non2xx.group(1)) if non2xx else 0,
    }


def in_process(run_dir: str, seconds: float) -> dict[int, float]:
    import numpy as np
    import torch

    import rayac

    torch.set_num_threads(1)
    policy = rayac.load_policy(run_dir)
    out = {}
    for batch in (1, 64):
        obs = np.zeros((batch, 4), np.float32)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            policy.act(obs)
            n += 1
        out[batch] = n / (time.perf_counter() - t0)
    return out


def main() -> None:
    args = parse_args(__doc__, "bench_serve.py")
    from common import machine, write_section

    storage = Path(tempfile.mkdtemp(prefix="rayac-bench-"))
    job_id = "job-bench"
    prepare_job(storage, job_id, "a2c_cartpole", ["run.stop.total_env_steps=3000"])
    run_dir = str(storage / "runs" / job_id)
    env = {
        **os.environ,
        "RAYAC_STORAGE_DIR": str(storage),
        "PYTHONPATH": str(ROOT),
        "RAYAC_BENCH_POLICY": run_dir,
    }
    env.pop("RAYAC_API_TOKEN", None)
    servers = {}
    procs = []
    try:
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "rayac.cli", "serve", "--port", str(port)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        servers["rayac service (micro-batching)"] = f"http://127.0.0.1:{port}/v1/policies/{job_id}/act"
        wait_up(f"http://127.0.0.1:{port}/healthz")
        port2 = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "benchmarks.minimal_app:create_app",
                                       "--port", str(port2), "--log-level", "warning"], env=env, cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        servers["minimal FastAPI endpoint (no batching)"] = f"http://127.0.0.1:{port2}/act"
        wait_up(f"http://127.0.0.1:{port2}/docs")
        rows = []
        results = {}
        for batch in (1, 64):
            body = {"observations": [[0.01, -0.02, 0.03, 0.04]] * batch, "deterministic": True}
            for conns in (1, 32):
                for name, url in servers.items():
                    run_wrk(url, body, conns, 1.0)  # warm-up
                    r = run_wrk(url, body, conns, args.seconds)
                    results[(name, batch, conns)] = r
                    rows.append(f"| {name} | {batch} | {conns} | {r['rps']:,.0f} | {r['rps'] * batch:,.0f} | "
                                f"{r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |")  # fmt: skip
                    print(rows[-1], flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(storage, ignore_errors=True)
    local = in_process(run_dir, 2.0) if Path(run_dir).exists() else {}
    names = list(servers)
    ratio = results[(names[0], 1, 32)]["rps"] / results[(names[1], 1, 32)]["rps"]
    body = (
        f"## Serving: POST act (bench_serve.py)\n\nMachine: {machine()}. Run: `{' '.join(sys.argv)}` on "
        f"{time.strftime('%Y-%m-%d')}. Client: wrk, 1 thread, {args.seconds:g} s per cell, same machine.\n\n"
        "| server | observations / request | connections | requests/s | observations/s | p50 ms | p99 ms | non-2xx |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        f"At 32 connections with single observations the service does {ratio:.2f}× the minimal endpoint's "
        "requests/s.\n"
    )  # fmt: skip
    if local:
        body += (f"\nIn-process forward pass (`InferencePolicy.act`, 1 torch thread): {local[1]:,.0f} calls/s for one "
                 f"observation, {local[64] * 64:,.0f} observations/s in batches of 64.\n")  # fmt: skip
    print(body)
    write_section("bench_serve", body)


if __name__ == "__main__":
    main()
