"""Serving an Atari policy: act with (4, 84, 84) uint8 frame stacks as nested JSON lists vs as base64 bytes.

One `rayac serve` process serves a Nature-CNN Pong policy (a2c_pong, briefly trained); `wrk` (one client
thread) posts the same observations both ways — `observations` (the JSON-lists peer) and `observations_b64`
(their raw bytes) — with 1 and 8 frame stacks per request, at 1 and 16 connections. Needs `wrk`.

    python benchmarks/bench_serve_atari.py [--seconds 5]
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_serve import ROOT, parse_args, prepare_job, run_wrk, wait_up  # noqa: E402

from api.services.ray_cluster import free_port  # noqa: E402


def pong_frames(cfg) -> object:  # noqa: ANN001
    """One real (4, 84, 84) uint8 frame stack of the policy's env."""
    from rayac.envs import make_env

    env = make_env(cfg.env)
    obs, _ = env.reset(seed=0)
    env.close()
    return obs


def main() -> None:
    args = parse_args(__doc__, "bench_serve_atari.py")
    import numpy as np
    from common import machine, write_section

    storage = Path(tempfile.mkdtemp(prefix="rayac-bench-"))
    job_id = "job-bench-pong"
    cfg = prepare_job(storage, job_id, "a2c_pong", [  # a few updates: a real policy's shapes and weights
        "run.stop.total_env_steps=800", "run.eval_episodes=1", "env.max_episode_steps=100", "resources.device=cpu",
    ])  # fmt: skip
    obs = pong_frames(cfg)
    env = {**os.environ, "RAYAC_STORAGE_DIR": str(storage), "PYTHONPATH": str(ROOT)}
    env.pop("RAYAC_API_TOKEN", None)
    rows, results = [], {}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rayac.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/policies/{job_id}/act"
    try:
        wait_up(f"http://127.0.0.1:{port}/healthz")
        for batch in (1, 8):
            frames = np.stack([obs] * batch).astype(np.uint8)
            bodies = {
                "observations (nested JSON lists)": {"observations": frames.tolist()},
                "observations_b64 (raw bytes)": {
                    "observations_b64": base64.b64encode(frames.tobytes()).decode()
                },
            }
            for conns in (1, 16):
                for name, body in bodies.items():
                    run_wrk(url, body, conns, 1.0)  # warm-up
                    r = results[(name, batch, conns)] = run_wrk(url, body, conns, args.seconds)
                    size = len(json.dumps(body))
                    rows.append(f"| {name} | {batch} | {size / 1000:,.1f} | {conns} | {r['rps']:,.0f} | "
                                f"{r['rps'] * batch:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |")  # fmt: skip
                    print(rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(storage, ignore_errors=True)
    names = list(bodies)
    ratios = ", ".join(
        f"{b} stack(s) × {c} connection(s): {results[(names[1], b, c)]['rps'] / results[(names[0], b, c)]['rps']:.2f}×"
        for b in (1, 8)
        for c in (1, 16)
    )
    load = os.getloadavg()
    body = (
        f"## Serving an Atari policy: JSON lists vs base64 bytes (bench_serve_atari.py)\n\nMachine: {machine()}; load "
        f"average {load[0]:.1f} at the end. Run: `{' '.join(sys.argv)}` on {time.strftime('%Y-%m-%d')}. One `rayac "
        f"serve` with an a2c_pong policy (Nature CNN, (4, 84, 84) uint8); wrk, 1 thread, {args.seconds:g} s per cell.\n\n"
        "| body | frame stacks / request | body kB | connections | requests/s | stacks/s | p50 ms | p99 ms | non-2xx |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
        f"observations_b64 over nested lists, requests/s: {ratios}.\n"
    )  # fmt: skip
    print(body)
    write_section("bench_serve_atari", body)


if __name__ == "__main__":
    main()
