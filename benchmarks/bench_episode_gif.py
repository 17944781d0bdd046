"""Episode GIFs for the dashboard: time and size of one render, against the CLI's full-resolution render_gif
(the peer, same episode, same run), and of a cached repeat. Writes its section of benchmarks/RESULTS.md.

Pendulum-v1: every episode is 200 steps (a time limit, no termination), 500x500 frames, so runs compare.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, write_section  # noqa: E402

REPEATS = 3


def main() -> None:
    import rayac
    from api.services.episodes import EpisodeRenderer
    from api.services.jobs import JobRecord, JobService
    from rayac.checkpoint import latest_checkpoint, load_checkpoint
    from rayac.evaluate import render_gif

    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-gif-"))
    cfg = rayac.build_config(preset="a2c_pendulum", overrides=["run.stop.total_env_steps=2000",
                             "run.tensorboard=false", "run.progress_bar=false", "run.eval_interval_steps=0"])  # fmt: skip
    run_dir = Path(rayac.train(cfg, run_dir=tmp / "run").run_dir)
    jobs = JobService(SimpleNamespace(storage_dir=tmp / "storage", train_command=None, allowed_env_modules=[]),
                      lambda _: None)  # fmt: skip
    now = time.time()
    jobs.store.insert(JobRecord("job-bench", "bench", "succeeded", {}, str(run_dir), now, now, None))
    ckpt = load_checkpoint(latest_checkpoint(run_dir))

    rows = []
    peer = []
    for seed in range(REPEATS):
        path = tmp / f"cli-{seed}.gif"
        start = time.perf_counter()
        info = render_gif(ckpt.build_policy(), ckpt.cfg.env, path, seed=seed, max_steps=500)
        peer.append((time.perf_counter() - start, path.stat().st_size, info["length"]))
    rows.append(("rayac.evaluate.render_gif (CLI, full resolution): the peer", peer))
    for downscale in (1, 2):
        renderer = EpisodeRenderer(jobs, downscale=downscale)
        cold, warm = [], []
        for seed in range(REPEATS):
            start = time.perf_counter()
            gif = asyncio.run(renderer.gif("job-bench", seed))
            cold.append((time.perf_counter() - start, len(gif.data), gif.length))
            start = time.perf_counter()
            asyncio.run(renderer.gif("job-bench", seed))
            warm.append((time.perf_counter() - start, len(gif.data), gif.length))
        rows.append((f"service render, 1/{downscale} resolution", cold))
        rows.append((f"service, same seed again (cache), 1/{downscale} resolution", warm))

    peer_s = statistics.median(t for t, _, _ in peer)
    lines = [
        "## Episode GIFs for the dashboard (bench_episode_gif.py)",
        "",
        f"Machine: {machine()}. Run: `benchmarks/bench_episode_gif.py` on {date.today()}; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (a shared machine: compare rows, not runs).",
        "",
        f"One greedy Pendulum-v1 episode (200 steps, 500x500 frames), median of {REPEATS} seeds.",
        "",
        "| render | median s | × peer time | median GIF size | steps |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, samples in rows:
        secs = statistics.median(t for t, _, _ in samples)
        size = statistics.median(b for _, b, _ in samples)
        lines.append(
            f"| {name} | {secs:.3f} | {secs / peer_s:.3f} | {size / 1e3:,.0f} kB | {samples[0][2]} |"
        )
    body = "\n".join(lines) + "\n"
    print(body)
    write_section("bench_episode_gif", body)


if __name__ == "__main__":
    main()
