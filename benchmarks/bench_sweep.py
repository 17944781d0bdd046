"""Sweeps: what ASHA saves. A 6-trial sweep over optim.lr (loguniform 1e-5..1e-1) on CartPole with ASHA, then the
same 6 learning rates run to completion (grid, no scheduler), in the same run; wall time, env steps and outcome.

    python benchmarks/bench_sweep.py [--samples 6] [--steps 50000] [--concurrent 2] [--seed 0]
    python benchmarks/bench_sweep.py --pbt [--repeats 2]   # PBT's cost per interval: warm trial actors or new ones

``--pbt``: a 2-trial PBT sweep on CartPole (optim.lr 1e-5 or 3e-3, an exploit every 2,000 of 16,000 env steps),
with warm actors (a paused trial goes on in the actor it had) and with a new actor per resume (Tune's default, and
what ``rayac sweep`` runs), alternately, in the same run; wall time and the exploits each made.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, write_section  # noqa: E402


def sweep(base: dict, search: list[str], *, samples: int, concurrent: int, scheduler: str, search_alg: str,
          where: Path, pbt_interval: int = 10_000, reuse_actors: bool = False) -> tuple[dict, float]:  # fmt: skip
    from rayac.sweep import SweepSpec, run_sweep

    spec = SweepSpec(base=base, search=search, samples=samples, concurrent=concurrent, scheduler=scheduler,
                     search_alg=search_alg, pbt_interval=pbt_interval)  # fmt: skip
    t0 = time.perf_counter()
    doc = run_sweep(spec, where, reuse_actors=reuse_actors)
    return doc, time.perf_counter() - t0


def pbt(repeats: int) -> int:
    """The same PBT sweep with warm trial actors and with a new actor per resume (rayac's way), alternately."""
    from rayac.config import load_preset

    base = load_preset("a2c_cartpole")
    base["run"] = {"stop": {"total_env_steps": 16_000, "target_return": None}, "eval_interval_steps": 1000,
                   "eval_episodes": 3, "tensorboard": False}  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="bench-pbt-"))
    rows = ["| trial actors | run | wall s | exploits that changed a trial's config | trials succeeded |",
            "| --- | --- | --- | --- | --- |"]  # fmt: skip
    walls: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats):
        for warm in (True, False):
            doc, wall = sweep(base, ["optim.lr=choice(0.00001,0.003)"], samples=1, concurrent=2, scheduler="pbt",
                              search_alg="grid", where=root / f"{'warm' if warm else 'new'}-{i}", pbt_interval=2000,
                              reuse_actors=warm)  # fmt: skip
            walls[warm].append(wall)
            changes = sum(len(t["config_history"]) - 1 for t in doc["trials"])
            ok = sum(t["status"] == "succeeded" for t in doc["trials"])
            rows.append(f"| {'warm' if warm else 'new per resume (rayac sweep)'} | {i + 1} | {wall:.1f} | {changes} | "
                        f"{ok}/{len(doc['trials'])} |")  # fmt: skip
    warm_s, new_s = statistics.median(walls[True]), statistics.median(walls[False])
    return publish(
        "bench_sweep_pbt", "PBT: a paused trial in its warm actor against a new one (bench_sweep.py --pbt)",
        f"`python benchmarks/bench_sweep.py --pbt --repeats {repeats}` on {date.today().isoformat()}. a2c_cartpole, "
        "2 trials at once, optim.lr choice(1e-5, 3e-3), a PBT interval of 2,000 of 16,000 env steps (8 sync points), "
        "a greedy eval of 3 episodes every 1,000 steps.", rows,
        f"Median wall time: {warm_s:.1f} s with warm actors against {new_s:.1f} s with a new actor per resume: "
        f"{new_s / warm_s:.1f}× faster.",
    )  # fmt: skip


def publish(section: str, title: str, run: str, rows: list[str], summary: str) -> int:
    """The section of RESULTS.md (and stdout): title, machine and command, the table, the summary line."""
    body = "\n".join([f"## {title}", "", f"Machine: {machine()}. Run: {run}", "", *rows, "", summary])
    write_section(section, body)
    print(body)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=6)
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pbt", action="store_true", help="measure PBT with warm and with new trial actors instead"
    )
    p.add_argument("--repeats", type=int, default=2, help="--pbt: runs of each kind (alternating)")
    args = p.parse_args()
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    if args.pbt:
        return pbt(args.repeats)
    from rayac.config import load_preset

    base = load_preset("a2c_cartpole")
    base["env"]["seed"] = args.seed
    base["run"] = {"stop": {"total_env_steps": args.steps, "target_return": 475}, "eval_interval_steps": 2500,
                   "eval_episodes": 5, "tensorboard": False}  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    asha, asha_s = sweep(base, ["optim.lr=loguniform(1e-5,1e-1)"], samples=args.samples, concurrent=args.concurrent,
                         scheduler="asha", search_alg="random", where=root / "asha")  # fmt: skip
    lrs = [t["config"]["optim.lr"] for t in asha["trials"]]
    full, full_s = sweep(base, [f"optim.lr=choice({','.join(repr(x) for x in lrs)})"], samples=1,
                         concurrent=args.concurrent, scheduler="none", search_alg="grid", where=root / "full")  # fmt: skip
    by_lr = {t["config"]["optim.lr"]: t for t in full["trials"]}
    rows = ["| optim.lr | ASHA: status | env steps | best eval | to completion: env steps | best eval |",
            "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for t in sorted(asha["trials"], key=lambda t: t["config"]["optim.lr"]):
        f = by_lr.get(t["config"]["optim.lr"], {})
        best = "–" if t["best"] is None else f"{t['best']:.1f}"
        fbest = "–" if f.get("best") is None else f"{f['best']:.1f}"
        rows.append(f"| {t['config']['optim.lr']:.2e} | {t['status']} | {t['env_steps']:,} | {best} | "
                    f"{f.get('env_steps', 0):,} | {fbest} |")  # fmt: skip
    steps_asha = sum(t["env_steps"] for t in asha["trials"])
    steps_full = sum(t["env_steps"] for t in full["trials"])
    best = next(t for t in asha["trials"] if t["id"] == asha["best_trial"])
    return publish(
        "bench_sweep", "Sweeps: ASHA against running every trial to completion (bench_sweep.py)",
        f"`python benchmarks/bench_sweep.py --samples {args.samples} --steps {args.steps} --concurrent "
        f"{args.concurrent}` on {date.today().isoformat()}. a2c_cartpole, stop at {args.steps:,} env steps or a greedy "
        "mean of 475 (5 episodes every 2,500 steps); the same sampled learning rates both ways.", rows,
        f"Wall time: ASHA {asha_s:.0f} s ({steps_asha:,} env steps in all) against {full_s:.0f} s to completion "
        f"({steps_full:,}): {full_s / asha_s:.2f}× faster. Best trial under ASHA: optim.lr {best['config']['optim.lr']:.2e}, "
        f"best eval {best['best']:.1f}.",
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
