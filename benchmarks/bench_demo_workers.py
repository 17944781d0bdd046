"""Does the demo preset keep its sample efficiency as workers are added? Env steps to solve a2c_cartpole.

    python benchmarks/bench_demo_workers.py --seeds 10                 # 0, 2 and 4 workers, seeds 0-9, then the table
    python benchmarks/bench_demo_workers.py --seeds 3 --workers 2,4    # a quick look
    python benchmarks/bench_demo_workers.py --set 2:optim.lr=0.003     # an override for one worker count only
    python benchmarks/bench_demo_workers.py --seeds 10 --before        # and the preset as it was: 16 envs per worker
    python benchmarks/bench_demo_workers.py --report                   # only rewrite the RESULTS.md section

`make demo` trains `a2c_cartpole` with 2 workers. Each (variant, workers, seed) run stops at its first greedy
10-episode mean >= 475, checked every 2,000 env steps (200k budget), and leaves
``runs/bench_demo_workers/<variant>-<workers>w-<seed>.json``, so a sweep can be stopped and continued. One child
process per worker count trains its seeds one after another on one embedded Ray (started once, with enough CPUs
for 4 workers), so Ray's start-up is not in the numbers; they are env steps, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

OUT = Path(__file__).resolve().parent.parent / "runs" / "bench_demo_workers"
PRESET = "a2c_cartpole"
TARGET = 475.0
EVAL_EVERY = 2_000
BUDGET = 200_000
TARGETS = (1.5, 3.0)  # median within 1.5x of 0 workers; no seed worse than 3x its column's median


def result_path(variant: str, workers: int, seed: int) -> Path:
    return OUT / f"{variant}-{workers}w-{seed}.json"


def run_child(variant: str, workers: int, seeds: list[int], overrides: list[str]) -> None:
    """Train every missing seed with ``workers`` workers in this process (one Ray for all of them)."""
    import rayac

    if workers:
        from rayac.remote import init_ray

        init_ray(num_cpus=max(4, workers))
    for seed in seeds:
        path = result_path(variant, workers, seed)
        if path.exists():
            continue
        cfg = rayac.build_config(preset=PRESET, overrides=[
            f"resources.num_workers={workers}", f"env.seed={seed}", f"run.stop.total_env_steps={BUDGET}",
            f"run.stop.target_return={TARGET}", f"run.eval_interval_steps={EVAL_EVERY}", "run.progress_bar=false",
            "run.tensorboard=false", "run.checkpoint_interval_steps=0", "run.log_interval_s=100000",
            "resources.device=cpu", *overrides,
        ])  # fmt: skip
        res = rayac.train(cfg, run_dir=OUT / "runs" / path.stem)
        out = {"solved": res.solved, "env_steps": res.env_steps, "updates": res.version,
               "train_s": round(res.elapsed_s, 2), "envs_per_worker": cfg.env.num_envs, "lr": cfg.optim.lr,
               "overrides": overrides}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(path)
        print(f"  {variant} {workers}w seed {seed}: solved={res.solved} steps={res.env_steps:,} "
              f"updates={res.version:,} envs/worker={cfg.env.num_envs} {res.elapsed_s:.1f}s", flush=True)  # fmt: skip


def load(variant: str, workers: int, seeds: list[int]) -> list[dict | None]:
    return [
        json.loads(p.read_text()) if (p := result_path(variant, workers, s)).exists() else None for s in seeds
    ]


def steps_to_solve(run: dict | None) -> float:
    return float("inf") if run is None or not run["solved"] else float(run["env_steps"])


def table(variant: str, worker_counts: list[int], seeds: list[int]) -> tuple[str, list[str]]:
    """The markdown table, and one line per target that fails."""
    from common import median

    fmt = lambda v: "unsolved" if v == float("inf") else f"{v / 1000:.0f}k"  # noqa: E731
    rows, medians, failures = [], {}, []
    for w in worker_counts:
        runs = load(variant, w, seeds)
        steps = [steps_to_solve(r) for r in runs]
        med = median(steps)
        medians[w] = med
        worst = max(steps) / med if med else float("inf")
        over = sum(x > TARGETS[1] * med for x in steps)
        done = [r for r in runs if r is not None]
        per_worker = sorted({r["envs_per_worker"] for r in done}) or ["?"]
        updates = median([r["updates"] for r in done if r["solved"]]) if done else float("nan")
        rows.append(f"| {w} | {'/'.join(map(str, per_worker))} | {' '.join(fmt(s) for s in steps)} | "
                    f"{sum(r is not None and r['solved'] for r in runs)}/{len(seeds)} | {fmt(med)} | "
                    f"{medians[w] / medians[worker_counts[0]]:.2f} | {worst:.2f} | {over}/{len(seeds)} | "
                    f"{updates:,.0f} |")  # fmt: skip
        if w != worker_counts[0] and med > TARGETS[0] * medians[worker_counts[0]]:
            failures.append(
                f"{w} workers: median {fmt(med)} > {TARGETS[0]}x {fmt(medians[worker_counts[0]])}"
            )
        if worst > TARGETS[1]:
            failures.append(f"{w} workers: a seed needs {worst:.1f}x the median")
    head = (f"| workers | envs per worker | env steps to solve, seeds {seeds[0]}-{seeds[-1]} | solved | median | "
            f"median ÷ {worker_counts[0]} workers' | worst ÷ median | seeds over {TARGETS[1]:g}x the median | "
            "median updates |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")  # fmt: skip
    return head + "\n".join(rows), failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    ap.add_argument(
        "--workers", default="0,2,4", help="worker counts, the first is the reference (default 0,2,4)"
    )
    ap.add_argument("--variant", default="preset", help="a name for this setting (the result files carry it)")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="[W:]KEY=VALUE",
        help="a config override, for every worker count or only for W workers (repeatable)",
    )
    ap.add_argument("--report", action="store_true", help="only write the RESULTS.md section from saved runs")
    ap.add_argument("--before", action="store_true",
                    help="also the preset as it was before env.num_envs_total: 16 envs per worker (variant 'before')")  # fmt: skip
    ap.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    ap.add_argument("--child", nargs=2, metavar=("WORKERS", "SEEDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    seeds = list(range(args.seeds))

    def overrides_for(w: int) -> list[str]:
        out = []
        for item in args.overrides:
            scope, _, rest = item.partition(":")
            if rest and scope.isdigit() and "=" not in scope:
                if int(scope) == w:
                    out.append(rest)
            else:
                out.append(item)
        return out

    if args.child:
        w = int(args.child[0])
        run_child(args.variant, w, [int(s) for s in args.child[1].split(",")], overrides_for(w))
        return
    runs = [(args.variant, args.overrides)] + [("before", ["env.num_envs=16"])] * args.before
    for variant, overrides in runs if not args.report else []:
        for w in worker_counts:
            if all(result_path(variant, w, s).exists() for s in seeds):
                continue
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(w),
                ",".join(map(str, seeds)),
                "--variant",
                variant,
            ]
            for item in overrides:
                cmd += ["--set", item]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=7200)
            if proc.returncode:
                raise SystemExit(f"{w} workers failed (exit {proc.returncode})")
            print(f"{w} workers: {time.perf_counter() - t0:.0f}s", flush=True)
    body, failures = table(args.variant, worker_counts, seeds)
    print(body)
    print("\n".join(failures) or "both targets met")
    before = ""
    if args.before:
        before_body, before_failures = table("before", worker_counts, seeds)
        print(before_body)
        before = (f"\n\nBefore (`env.num_envs=16`: each worker adds 16 envs to the batch). "
                  f"{'Both met.' if not before_failures else 'Missed: ' + '; '.join(before_failures) + '.'}"
                  f"\n\n{before_body}")  # fmt: skip
    if args.no_write:
        return
    from common import machine, write_section

    flags = "".join(f" --set {o}" for o in args.overrides) + " --before" * args.before
    write_section("bench_demo_workers", (
        f"## The demo preset over worker counts (bench_demo_workers.py)\n\nMachine: {machine()}. Run: "
        f"`benchmarks/bench_demo_workers.py --seeds {args.seeds} --workers {args.workers}{flags}` on "
        f"{date.today()}.\n\n`{PRESET}` (what `make demo` trains, with 2 workers), env steps to a greedy 10-episode "
        f"mean >= {TARGET:g}, checked every {EVAL_EVERY:,} env steps ({BUDGET:,}-step budget). Targets: each "
        f"median within {TARGETS[0]}x of {worker_counts[0]} workers', no seed worse than {TARGETS[1]:g}x its "
        f"median. {'Both met.' if not failures else 'Missed: ' + '; '.join(failures) + '.'}\n\n{body}{before}\n"
    ))  # fmt: skip


if __name__ == "__main__":
    main()
