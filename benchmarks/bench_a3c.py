"""A3C parameter-server capacity: pushes/s of K = 1, 2, 4 shards next to the bare-call floor with the same payload.

Payloads: the a3c_cartpole policy (separate 64-64 MLPs) and a Nature-CNN policy built by rayac.policy for
84x84x4 uint8 observations and 6 actions (shared trunk: the CNN of the Atari work, ~1.7M float32 parameters).
No env is stepped: the gradients are synthetic, pushed from this process by N independent senders (each keeps
one push in flight and sends the next when its replies land, as N A3C workers do), the replies carrying the new
weight slices as a worker's do.

Floor: the same bytes through bare Ray actor calls — K "echo" actors, each getting its slice and returning it
(what a shard receives and replies), K calls at once per push. A push is the same K independent calls to the K
shards (no call waits for another), so push ÷ floor is what the servers' work costs on top of moving the bytes;
the target is ≥ 0.9 for every K.

Each cell: 3 alternating rounds of floor and push, ``--seconds`` each; the medians are shown.

    python benchmarks/bench_a3c.py [--seconds 2] [--shards 1,2,4] [--in-flight 1,8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

ROUNDS = 3


def _configs():
    from rayac.config import build_config
    from rayac.envs import SpaceSpec, describe_env

    mlp = build_config(
        preset="a3c_cartpole", overrides=["resources.num_workers=2", "resources.learner_cpus=0"]
    )
    cnn = build_config(preset="a3c_cartpole", overrides=[
        "resources.num_workers=2", "resources.learner_cpus=0", "model.architecture=shared", "model.encoder=cnn",
        "optim.actor_lr=null", "optim.critic_lr=null",
    ])  # fmt: skip
    cnn_spec = SpaceSpec(obs_shape=(84, 84, 4), obs_dtype="uint8", obs_low=None, obs_high=None,
                         action_kind="discrete", action_n=6, action_shape=(), action_low=None, action_high=None)  # fmt: skip
    return [
        ("CartPole MLP (a3c_cartpole)", mlp, describe_env(mlp.env)),
        ("Nature CNN 84x84x4, 6 actions", cnn, cnn_spec),
    ]


class Echo:
    def echo(self, payload):
        return payload


def _rate(submit, in_flight: int, seconds: float) -> float:
    """Calls/s of ``in_flight`` independent senders, each with one call outstanding that it replaces as soon as it
    has landed, as A3C workers push (a call here: the refs one ``submit()`` returns, done when all are)."""
    import ray

    for _ in range(3):
        ray.get(submit())
    t0, done, pending = time.perf_counter(), 0, {}
    for _ in range(in_flight):
        refs = submit()
        pending[refs[-1]] = refs
    while time.perf_counter() - t0 < seconds:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            ray.get(pending.pop(ref))
            done += 1
            refs = submit()
            pending[refs[-1]] = refs
    ray.get([r for refs in pending.values() for r in refs])
    return (done + len(pending)) / (time.perf_counter() - t0)


def measure_cells(seconds: float, shard_counts: list[int], in_flights: list[int], *, payloads: tuple[str, ...] = ("mlp", "cnn"),
                  dtypes: tuple[str, ...] = ("float32", "bfloat16"), rounds: int = ROUNDS) -> Iterator[dict[str, Any]]:  # fmt: skip
    """One dict per (payload, dtype, K, pushes in flight): the floor's and the pushes' calls/s, medians of ``rounds``
    alternating rounds. Uses the Ray this process already has (the device suite starts its own), else starts one.
    ``payloads``: "mlp" (a3c_cartpole), "cnn" (the Nature CNN); ``dtypes`` apply to the CNN (the MLP is float32)."""
    import numpy as np
    import ray
    import torch

    from rayac.a3c.client import ShardClient
    from rayac.a3c.flat import FlatLayout, encode
    from rayac.policy import build_policy
    from rayac.remote import _remote, init_ray, kill_actors, make_parameter_servers

    # imported (by the device suite): Ray's workers cannot import this file, so Echo travels whole
    if __name__ != "__main__":
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    init_ray(num_cpus=8)
    for (label, cfg, spec), kind in zip(_configs(), ("mlp", "cnn"), strict=True):
        if kind not in payloads:
            continue
        layout = FlatLayout.of(build_policy(spec, cfg.model, estimator=cfg.algo.estimator))
        total = layout.total
        for dtype in [d for d in dtypes if kind == "cnn" or d == "float32"]:
            cfg_d = cfg.model_copy(update={"algo": cfg.algo.model_copy(update={"ps_transfer_dtype": dtype})})
            grad = torch.from_numpy(np.random.default_rng(0).normal(size=total).astype(np.float32) * 1e-4)
            for k in shard_counts:
                shards = make_parameter_servers(cfg_d, spec, num_shards=k)
                echoes = [_remote(Echo, num_cpus=0).remote() for _ in range(k)]
                ray.get([s.start.remote() for s in shards], timeout=120)
                client = ShardClient(shards, layout, dtype)
                slices = [encode(grad[lo:hi], dtype) for lo, hi in layout.shard_bounds(k)]

                def floor_call(echoes=echoes, slices=slices):
                    return [e.echo.remote(p) for e, p in zip(echoes, slices, strict=True)]

                def push_call(client=client, grad=grad, k=k):
                    return client.submit_push(grad, [0] * k)  # max_staleness unset: every slice is applied

                try:
                    for in_flight in in_flights:
                        # alternate floor and push rounds, medians: the machine is shared, its load drifts
                        done = [(_rate(floor_call, in_flight, seconds), _rate(push_call, in_flight, seconds))
                                for _ in range(rounds)]  # fmt: skip
                        floor = statistics.median(r[0] for r in done)
                        push = statistics.median(r[1] for r in done)
                        yield {"payload": label, "parameters": total, "dtype": dtype, "shards": k,
                               "in_flight": in_flight, "floor_per_s": floor, "pushes_per_s": push,
                               "ratio": push / floor}  # fmt: skip
                finally:
                    kill_actors([*shards, *echoes])


PUSH_TABLE_HEAD = (
    "| payload | parameters | on the wire | shards K | pushes in flight | floor: K bare calls with the slices/s "
    "| pushes/s | push ÷ floor |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
)


def push_row(cell: dict[str, Any]) -> str:
    return (f"| {cell['payload']} | {cell['parameters']:,} | {cell['dtype']} | {cell['shards']} | {cell['in_flight']} "
            f"| {cell['floor_per_s']:,.0f} | {cell['pushes_per_s']:,.0f} | {cell['ratio']:.2f} |")  # fmt: skip


def measure(seconds: float, shard_counts: list[int], in_flights: list[int]) -> str:
    rows = []
    for cell in measure_cells(seconds, shard_counts, in_flights):
        rows.append(push_row(cell))
        print(rows[-1], flush=True)
    import ray

    ray.shutdown()
    return PUSH_TABLE_HEAD + "\n" + "\n".join(rows)


VARIANTS = {
    "K = 1": "algo.ps_shards=1",
    "K = 2": "algo.ps_shards=2",
    "K = 1, push_pipelining": "algo.push_pipelining=true",
}


def run_learning(root: Path, seeds: list[int]) -> None:
    """One ``rayac train --preset a3c_cartpole`` per variant and seed, one at a time (the preset's 2 workers)."""
    import subprocess

    for name, override in VARIANTS.items():
        for seed in seeds:
            run_dir = root / f"{name.replace(' ', '').replace(',', '-')}-s{seed}"
            subprocess.run([sys.executable, "-m", "rayac.cli", "train", "--preset", "a3c_cartpole", "--seed",
                            str(seed), "--set", override, "--run-dir", str(run_dir), "--no-progress"],
                           capture_output=True, timeout=900, check=False)  # fmt: skip


def learning_table(runs: dict[str, list[Path]]) -> str:
    """Seeds, env steps to solve and staleness of finished runs (their result.json and metrics.jsonl)."""
    import json

    from rayac.metrics import read_metrics

    rows = []
    for name, dirs in runs.items():
        cells, solved, stale, sps, secs = [], 0, [], [], []
        for d in dirs:
            res = json.loads((d / "result.json").read_text())
            solved += res["solved"]
            sps.append(res["env_steps"] / res["elapsed_s"])
            secs.append(res["elapsed_s"])
            cells.append(
                f"{d.name.rsplit('-s', 1)[1]}: {res['env_steps']:,}"
                + ("" if res["solved"] else " (not solved)")
            )
            stale += [
                r["a3c/staleness_mean"] for r in read_metrics(d / "metrics.jsonl") if r.get("a3c/pushes")
            ]
        steps = sorted(json.loads((d / "result.json").read_text())["env_steps"] for d in dirs)
        rows.append(f"| {name} | {solved}/{len(dirs)} | {'; '.join(cells)} | {steps[len(steps) // 2]:,} | "
                    f"{sum(stale) / max(len(stale), 1):.2f} | {sorted(sps)[len(sps) // 2]:,.0f} | "
                    f"{sorted(secs)[len(secs) // 2]:.1f} |")  # fmt: skip
    return ("| variant | solved | seed: env steps at the solving evaluation | median env steps | staleness mean "
            "| median env steps/s | median s to solve |\n| --- | --- | --- | --- | --- | --- | --- |\n"
            + "\n".join(rows))  # fmt: skip


def server_work(shard_counts: list[int], pushes: int = 30) -> str:
    """Milliseconds one shard spends per push in-process (optimiser step on the slice, the reply slice):
    the compute a push costs on top of moving its bytes."""
    import numpy as np
    import torch

    from rayac.a3c.flat import encode
    from rayac.a3c.messages import GradientPush
    from rayac.a3c.server import ParameterServer

    rows = []
    for label, cfg, spec in _configs():
        for dtype in ("float32", "bfloat16") if "CNN" in label else ("float32",):
            cfg_d = cfg.model_copy(update={"algo": cfg.algo.model_copy(update={"ps_transfer_dtype": dtype})})
            cells = []
            for k in shard_counts:
                ps = ParameterServer(cfg_d, spec, shard=0, num_shards=k)
                grad = encode(
                    torch.from_numpy(np.random.default_rng(0).normal(size=ps.hi - ps.lo).astype(np.float32)),
                    dtype,
                )
                msg = GradientPush(0, grad, None)
                for _ in range(3):
                    ps.push(msg, return_weights=True)
                times = []
                for _ in range(pushes):  # the median push: robust to the other processes of a shared machine
                    t0 = time.perf_counter()
                    ps.push(msg, return_weights=True)
                    times.append(time.perf_counter() - t0)
                cells.append(f"{statistics.median(times) * 1e3:.2f}")
            rows.append(f"| {label} | {dtype} | " + " | ".join(cells) + " |")
    head = " | ".join(f"K = {k}" for k in shard_counts)
    return (f"| payload | on the wire | {head} |\n| --- | --- |" + " --- |" * len(shard_counts) + "\n"
            + "\n".join(rows))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--shards", default="1,2,4")
    p.add_argument("--in-flight", default="1,8")
    p.add_argument("--learning", metavar="DIR", help="run the a3c_cartpole seed sweep into DIR (sequentially) and "
                   "write its table instead of the push table")  # fmt: skip
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument(
        "--no-run", action="store_true", help="with --learning: only tabulate the runs already in DIR"
    )
    args = p.parse_args()
    from common import machine, write_section

    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    if args.learning:
        root, seeds = Path(args.learning), [int(s) for s in args.seeds.split(",")]
        load = os.getloadavg()
        if not args.no_run:
            run_learning(root, seeds)
        runs = {
            name: [root / f"{name.replace(' ', '').replace(',', '-')}-s{s}" for s in seeds]
            for name in VARIANTS
        }
        when = "at tabulation (the runs were made earlier)" if args.no_run else "at the start"
        body = (f"## A3C learning with shards and pipelining (bench_a3c.py --learning)\n\nMachine: {machine()}; load "
                f"average {load[0]:.1f} {when} (shared machine). Each run: `rayac train --preset a3c_cartpole "
                f"--seed S --set <variant>` (2 workers, target greedy return 475 checked every 5,000 env steps), "
                f"one at a time.\n\n{learning_table(runs)}\n")  # fmt: skip
        print(body)
        write_section("bench_a3c_learning", body)
        return
    load = os.getloadavg()
    shards = [int(k) for k in args.shards.split(",")]
    table = measure(args.seconds, shards, [int(n) for n in args.in_flight.split(",")])
    body = (
        f"## A3C parameter server: shards vs the payload floor (bench_a3c.py)\n\nMachine: {machine()}; load average "
        f"{load[0]:.1f} / {load[1]:.1f} at the start (shared machine). Run: `{' '.join(sys.argv)}` on "
        f"{time.strftime('%Y-%m-%d')}.\n\n{table}\n\nServer work per push, in-process, one torch thread (median ms for shard 0 of "
        f"K: the fused Adam step on the pushed slice, the reply slice):\n\n{server_work(shards)}\n"
    )
    if (os.cpu_count() or 1) < 16:
        body += (f"\nNot measured here ({os.cpu_count()} cores, no GPU): the 16-core targets — ≥ 2,000 pushes/s aggregate "
                 "for the MLP, and A3C env steps/s for 1, 2, 4, 8, 16 workers with K = 1 and K = 4 (MLP, and the CNN "
                 "on Pong).\n")  # fmt: skip
    print(body)
    write_section("bench_a3c", body)


if __name__ == "__main__":
    main()
