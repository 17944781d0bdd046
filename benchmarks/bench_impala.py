"""Sync A2C against IMPALA on ALE/Pong-v5 (envpool): agent steps/s, the learner's idle fraction and the policy lag.

Every row steps 16 envs in all (split among the workers) with the Nature CNN learner on the CPU at 1 torch thread,
next to the raw envpool engine stepping random actions with the same 16 envs (the floor to beat):

- rayac A2C (a2c_pong preset, 16 envs x 5 steps per update) on 0, 1 and 2 rollout workers: sample on all, then learn;
- rayac IMPALA with A2C's update shape (16 envs x 5 steps = 80 samples per update: `learner_batch_rollouts` = the
  worker count) on 0, 1 and 2 workers: the workers sample while the learner learns, V-trace corrects the lag;
- rayac IMPALA with the impala_pong preset's shape (2 workers x 16 envs x 20 steps, 2 rollouts per update).

Each row is its own process, warmed up, then timed for ``--seconds`` of steady state (start-up excluded).
On 2 cores the bound for IMPALA over sync A2C with 2 workers is ~1.4x (sampling on both cores and learning on
one, overlapped instead of in series).

    python benchmarks/bench_impala.py [--seconds 30] [--rows raw-envpool,a2c-2w,impala-2w,...]
    python benchmarks/bench_impala.py --cartpole-seeds 5   # time to solve CartPole: impala_cartpole vs a2c_cartpole, 2 workers
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

NUM_ENVS = 16
ROWS = ["raw-envpool", "a2c-0w", "a2c-1w", "a2c-2w", "impala-0w", "impala-1w", "impala-2w", "impala_pong-2w"]
for _key, _value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                     "RAY_AUTH_MODE": "disabled"}.items():  # fmt: skip
    os.environ.setdefault(_key, _value)


def _cfg(row: str):
    import rayac

    kind, workers = row.split("-")
    w = int(workers.rstrip("w"))
    common = ["env.backend=envpool", "resources.device=cpu", "run.progress_bar=false", "run.tensorboard=false",
              f"resources.num_workers={w}"]  # fmt: skip
    if kind == "impala_pong":  # the preset as it is
        return rayac.build_config(preset="impala_pong", overrides=common)
    overrides = [*common, f"env.num_envs={NUM_ENVS // max(w, 1)}"]
    if kind == "impala":  # a2c_pong's settings and update shape, learnt with V-trace on whatever arrives
        overrides += [
            "algo.name=impala",
            f"algo.learner_batch_rollouts={max(w, 1)}",
            "algo.rollout_queue_size=4",
        ]
    return rayac.build_config(preset="a2c_pong", overrides=overrides)


def measure(row: str, seconds: float) -> dict[str, float]:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    if row == "raw-envpool":
        from bench_atari import measure as measure_atari

        return {"sps": measure_atari("raw-envpool", seconds)}
    from rayac.algorithms.base import make_algorithm
    from rayac.envs import check_config_against_env

    cfg = _cfg(row)
    algo = make_algorithm(cfg, check_config_against_env(cfg))
    try:
        for _ in range(5):  # warm-up
            algo.train_step()
        steps, records, t0 = 0, [], time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            result = algo.train_step()
            steps += result.num_steps
            records.append(result.metrics)
        elapsed = time.perf_counter() - t0
    finally:
        algo.stop()

    def mean(key: str) -> float:
        values = [r[key] for r in records if key in r]
        return float(np.mean(values)) if values else float("nan")

    learn_s = sum(r["time/learn_s"] for r in records)
    return {
        "sps": steps / elapsed,
        "updates_per_s": len(records) / elapsed,
        "learner_busy_frac": learn_s / elapsed,  # the learner's share of wall time, the same measure for both
        "lag_mean": mean("impala/lag_mean"),
        "lag_max": max((r.get("impala/lag_max", float("nan")) for r in records), default=float("nan")),
        "sampler_wait_frac": sum(r.get("time/sampler_wait_s", 0.0) for r in records) / elapsed,
    }


LABELS = {
    "raw-envpool": "raw envpool engine, 16 envs, random actions, no policy",
    "a2c": "rayac A2C (sync), {w} workers x {n} envs, 5 steps",
    "impala": "rayac IMPALA, {w} workers x {n} envs, 5 steps, {b} rollout(s) per update",
    "impala_pong": "rayac IMPALA, impala_pong preset: 2 workers x 16 envs, 20 steps, 2 rollouts per update",
}


def label(row: str) -> str:
    if row in LABELS:
        return LABELS[row]
    kind, workers = row.split("-")
    w = int(workers.rstrip("w"))
    return LABELS[kind].format(w=w, n=NUM_ENVS // max(w, 1), b=max(w, 1))


def cartpole(seeds: int, *, write: bool) -> None:
    """bench_core's time-to-solve protocol (greedy 10-episode mean >= 475, checked every 2,000 env steps, 200k
    budget, each run its own process) for the two presets on 2 Ray workers, the same seeds, one after the other."""
    import tempfile

    from bench_core import BUDGET, EVAL_EPISODES, EVAL_EVERY, TARGET, solve_table
    from common import machine, write_section

    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    with tempfile.TemporaryDirectory() as tmp:
        table, _ = solve_table(["rayac-a2c-2w", "rayac-impala-2w"], seeds, Path(tmp))
    body = (f"## CartPole-v1: impala_cartpole vs a2c_cartpole on 2 Ray workers (bench_impala.py --cartpole-seeds)\n\n"
            f"Machine: {machine()}. Run: `benchmarks/bench_impala.py --cartpole-seeds {seeds}` on {date.today()}. "
            f"Greedy mean >= {TARGET:g} over {EVAL_EPISODES} episodes, checked every {EVAL_EVERY:,} env steps, budget "
            f"{BUDGET:,}; seeds 0-{seeds - 1}; unsolved counts as infinite.\n\n{table}\n")  # fmt: skip
    print(body)
    if write:
        write_section("bench_impala_cartpole", body)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    p.add_argument(
        "--cartpole-seeds",
        type=int,
        default=0,
        help="instead: time to solve CartPole-v1, impala_cartpole vs a2c_cartpole on 2 Ray workers, N seeds",
    )
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args.seconds)), flush=True)
        return
    if args.cartpole_seeds:
        cartpole(args.cartpole_seeds, write=not args.no_write)
        return

    from common import machine, run_rows, uptime, write_section

    load_before = uptime()
    results = run_rows(__file__, args.rows.split(","), args.seconds,
                       lambda row, r: f"{row:16s} " + " ".join(f"{k}={v:,.3f}" for k, v in r.items()))  # fmt: skip
    load_after = uptime()

    raw = results.get("raw-envpool", {}).get("sps")
    lines = [
        "## Sync A2C vs IMPALA: ALE/Pong-v5 on envpool (bench_impala.py)",
        "",
        f"Machine: {machine()}. Run: `benchmarks/bench_impala.py --seconds {args.seconds:g}` on {date.today()}.",
        f"Load before: `{load_before}`; after: `{load_after}` (a shared machine: compare rows of this run only).",
        "",
        "16 envs in every row, the DQN/A3C pipeline stepped by envpool; learner on the CPU, torch 1 thread; steady "
        "state after 5 warm-up updates. *learner busy*: the learner's share of wall time (update + publish); "
        "*lag*: versions between the weights a rollout was sampled with and the learner's when it learnt from it; "
        "*sampler wait*: finished rollouts waiting for room in the queue, per second of wall time.",
        "",
        "| setup | agent steps/s | × raw envpool | × sync A2C, same workers | learner busy | lag mean / max | sampler wait |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row, r in results.items():
        x_raw = f"{r['sps'] / raw:.2f}" if raw and row != "raw-envpool" else ""
        a2c = results.get("a2c-" + row.split("-")[-1], {}).get("sps") if row.startswith("impala") else None
        x_a2c = f"{r['sps'] / a2c:.2f}" if a2c else ""
        busy = f"{r['learner_busy_frac']:.2f}" if "learner_busy_frac" in r else ""
        lag = (
            f"{r['lag_mean']:.2f} / {r['lag_max']:.0f}"
            if r.get("lag_mean", float("nan")) == r.get("lag_mean")
            else ""
        )
        wait = f"{r['sampler_wait_frac']:.2f}" if row.startswith("impala") else ""
        lines.append(f"| {label(row)} | {r['sps']:,.0f} | {x_raw} | {x_a2c} | {busy} | {lag} | {wait} |")
    if args.no_write:
        print("\n".join(lines))
    else:
        write_section("bench_impala", "\n".join(lines))


if __name__ == "__main__":
    main()
