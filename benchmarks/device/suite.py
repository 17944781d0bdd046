"""The device suite's rows, one per call (suite.sh runs each under its own time cap).

    python suite.py ROW --out DIR [--smoke] [--seconds S]

Rows:
- ``env``: versions, cores, GPU, and whether Ray starts (``ray_ok``) -> env.json
- ``a3c``: A3C on CartPole (MLP): env steps/s, pushes/s and staleness for 1, 2, 4, 8, 16 workers x K = 1, 4
  parameter-server shards -> a3c.json (rewritten after every cell, so a time cap keeps what was measured)
- ``ps``: the A3C parameter server alone: pushes/s of K = 1, 2, 4 shards against the floor of K bare Ray calls
  carrying the same slices, with 1 and 8 pushes in flight (benchmarks/bench_a3c.py's measurement; MLP payload,
  target >= 0.9 of the floor) -> ps.json
- ``atari``: ALE/Pong-v5 agent steps/s: the raw envpool engine stepping random actions against rayac's Pong
  setup with 16 workers (4 envs each, the same 64 envs in all) and the learner on CUDA; plus the same in one
  process (no Ray) -> atari.json
- ``pong``: Pong learning for ``--seconds``: IMPALA's preset when it exists, else A2C's; 16 workers, CUDA
  learner; the training score against wall time and the time to a mean of >= +18 -> pong.json

``--smoke`` shrinks every row to a few seconds on this machine (2 workers, CPU, tiny budgets) so CI runs the
same code the device does. Every JSON file carries ``"smoke"``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_SCORE = 18.0


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def start_ray(smoke: bool) -> None:
    """One local Ray for a row: every core as a CPU (plus headroom for the shards / learner), the GPU if any."""
    import ray

    cpus = os.cpu_count() or 1
    ray.init(address="local", num_cpus=cpus + (2 if smoke else 4), num_gpus=1 if cuda() else 0,
             include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")  # fmt: skip


def config(preset: str, overrides: list[str]):
    import rayac

    base = ["run.progress_bar=false", "run.tensorboard=false", "run.eval_interval_steps=0"]
    return rayac.build_config(preset=preset, overrides=base + overrides)


def row_env(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(), "nproc": os.cpu_count(), "torch": torch.__version__,
        "numpy": np.__version__, "cuda": cuda(), "platform": platform.platform(),
    }  # fmt: skip
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    for name in ("ray", "gymnasium", "pydantic", "envpool", "ale_py", "rayac"):
        try:
            info[name] = __import__(name).__version__
        except Exception as err:  # noqa: BLE001 - the suite reports what is missing and goes on
            info[name] = f"missing: {type(err).__name__}: {err}"
    with contextlib.suppress(Exception):  # a missing rayac is reported above
        info["rayac_file"] = __import__("rayac").__file__  # from the unpacked bundle, not a checkout
    info["sys_path"] = [p for p in sys.path if p]
    bundle = [Path(p) / "BUNDLE.json" for p in sys.path if p and (Path(p) / "BUNDLE.json").is_file()]
    if bundle:
        info["bundle"] = json.loads(bundle[0].read_text())
    try:
        import ray

        t0 = time.perf_counter()
        start_ray(args.smoke)
        info["ray_resources"] = ray.cluster_resources()

        @ray.remote(num_cpus=1)
        def where() -> int:
            return os.getpid()

        ray.get(where.remote(), timeout=60)
        info["ray_ok"], info["ray_start_s"] = True, round(time.perf_counter() - t0, 2)
        ray.shutdown()
    except Exception as err:  # noqa: BLE001
        info["ray_ok"], info["ray_error"] = False, f"{type(err).__name__}: {err}"
    return info


def _measure(algo: Any, seconds: float, warmup_s: float) -> dict[str, float]:
    """Env steps/s, pushes/s and staleness of an A3C algorithm over ``seconds`` after ``warmup_s``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup_s:
        algo.train_step()
    steps = pushes = 0
    staleness: list[float] = []
    stale_max = 0.0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        result = algo.train_step()
        steps += result.num_steps
        pushes += int(result.metrics.get("a3c/pushes", 0))
        if result.metrics.get("a3c/pushes"):
            staleness.append(float(result.metrics.get("a3c/staleness_mean", 0.0)))
            stale_max = max(stale_max, float(result.metrics.get("a3c/staleness_max", 0.0)))
    span = time.perf_counter() - t0
    return {"env_steps_per_s": steps / span, "pushes_per_s": pushes / span, "seconds": span,
            "staleness_mean": sum(staleness) / len(staleness) if staleness else 0.0, "staleness_max": stale_max}  # fmt: skip


def row_a3c(args: argparse.Namespace) -> dict[str, Any]:
    from rayac.algorithms.base import make_algorithm
    from rayac.envs import check_config_against_env

    # smoke: one cell of each kind (one server, two shards) — each cell starts its own actors
    cells = [(1, 1), (2, 2)] if args.smoke else [(w, k) for k in (1, 4) for w in (1, 2, 4, 8, 16)]
    seconds = args.seconds or (1.5 if args.smoke else 6.0)
    out = args.out / "a3c.json"
    data: dict[str, Any] = {"smoke": args.smoke, "preset": "a3c_cartpole", "seconds": seconds, "cells": []}
    if not args.ray_ok:
        data["error"] = "Ray did not start on this machine (see env.json)"
        write_json(out, data)
        return data
    start_ray(args.smoke)
    for w, k in cells:
        cfg = config("a3c_cartpole", [f"resources.num_workers={w}", f"algo.ps_shards={k}",
                                      "resources.device=cpu", "run.stop.total_env_steps=100000000"])  # fmt: skip
        cell: dict[str, Any] = {"workers": w, "shards": k}
        try:
            algo = make_algorithm(cfg, check_config_against_env(cfg))
            try:
                cell.update(_measure(algo, seconds, warmup_s=1.0 if args.smoke else 2.0))
            finally:
                algo.stop()
        except Exception as err:  # noqa: BLE001 - one cell's failure is recorded, the rest still run
            cell["error"] = f"{type(err).__name__}: {err}"
        data["cells"].append(cell)
        write_json(out, data)
        print(f"a3c K={k} workers={w}: {cell}", flush=True)
    return data


def row_ps(args: argparse.Namespace) -> dict[str, Any]:
    # benchmarks/, for bench_a3c (rayac itself still comes from the bundle)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import bench_a3c

    seconds = args.seconds or (0.3 if args.smoke else 1.0)
    shards, in_flights = ([1, 2], [1]) if args.smoke else ([1, 2, 4], [1, 8])
    out = args.out / "ps.json"
    rounds = 1 if args.smoke else 3
    data: dict[str, Any] = {"smoke": args.smoke, "seconds": seconds, "rounds": rounds, "cells": []}
    if not args.ray_ok:
        data["error"] = "Ray did not start on this machine (see env.json)"
        write_json(out, data)
        return data
    start_ray(args.smoke)
    try:
        for cell in bench_a3c.measure_cells(seconds, shards, in_flights, payloads=("mlp",), rounds=rounds):
            data["cells"].append(cell)
            write_json(out, data)  # a time cap keeps what was measured
            print(f"ps: {bench_a3c.push_row(cell)}", flush=True)
    except Exception as err:  # noqa: BLE001 - recorded; the other rows still run
        data["error"] = f"{type(err).__name__}: {err}"
        write_json(out, data)
    return data


def _pong_cfg(workers: int, envs: int, device: str, smoke: bool, extra: list[str] = ()):  # noqa: B006
    preset = "impala_pong" if _has_preset("impala_pong") else "a2c_pong"
    overrides = ["env.backend=envpool", f"env.num_envs={envs}", f"resources.num_workers={workers}",
                 f"resources.device={device}", *extra]  # fmt: skip
    return preset, config(preset, overrides)


def _has_preset(name: str) -> bool:
    import rayac

    return (Path(rayac.__file__).parent / "presets" / f"{name}.yaml").is_file()


def _steps_per_s(step: Any, seconds: float, warmup: int) -> float:
    for _ in range(warmup):
        step()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        steps += step()
    return steps / (time.perf_counter() - t0)


def row_atari(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from rayac.algorithms.base import make_algorithm
    from rayac.envs import check_config_against_env, make_training_env

    torch.set_num_threads(1)
    workers, per_worker = (2, 2) if args.smoke else (16, 4)
    total = workers * per_worker
    seconds = args.seconds or (2.0 if args.smoke else 20.0)
    device = "cuda" if cuda() else "cpu"
    data: dict[str, Any] = {"smoke": args.smoke, "env": "ALE/Pong-v5", "num_envs": total, "seconds": seconds,
                            "device": device, "rows": {}}  # fmt: skip
    out = args.out / "atari.json"

    def run(name: str, fn: Any) -> None:
        try:
            data["rows"][name] = {"steps_per_s": fn()}
        except Exception as err:  # noqa: BLE001
            data["rows"][name] = {"error": f"{type(err).__name__}: {err}"}
        write_json(out, data)
        print(f"atari {name}: {data['rows'][name]}", flush=True)

    def raw() -> float:
        _, cfg = _pong_cfg(0, total, "cpu", args.smoke)
        spec = check_config_against_env(cfg)
        env = make_training_env(cfg.env, spec, seed=0)
        env.reset(seed=list(range(total)))
        rng = np.random.default_rng(0)
        try:
            return _steps_per_s(
                lambda: int(env.step(rng.integers(0, spec.action_n, total)).valid.sum()), seconds, 20
            )
        finally:
            env.close()

    def rayac_run(num_workers: int, envs: int) -> float:
        preset, cfg = _pong_cfg(num_workers, envs, device, args.smoke)
        data["preset"] = preset
        algo = make_algorithm(cfg, check_config_against_env(cfg))
        try:
            return _steps_per_s(lambda: algo.train_step().num_steps, seconds, 5)
        finally:
            algo.stop()

    run("raw-envpool", raw)
    run("rayac-0w", lambda: rayac_run(0, total))  # in one process: envpool's threads + the learner
    if args.ray_ok:
        start_ray(args.smoke)
        run(f"rayac-{workers}w", lambda: rayac_run(workers, per_worker))
    else:
        data["rows"][f"rayac-{workers}w"] = {"error": "Ray did not start on this machine (see env.json)"}
        write_json(out, data)
    raw_sps = data["rows"]["raw-envpool"].get("steps_per_s")
    for row in data["rows"].values():
        if raw_sps and "steps_per_s" in row:
            row["x_raw"] = row["steps_per_s"] / raw_sps
    write_json(out, data)
    return data


def row_pong(args: argparse.Namespace) -> dict[str, Any]:
    import rayac

    seconds = args.seconds or (6.0 if args.smoke else 240.0)
    workers, per_worker = (2, 2) if args.smoke else (16, 4)
    if not args.ray_ok:
        workers, per_worker = 0, workers * per_worker
    device = "cuda" if cuda() else "cpu"
    # the time limit ends it; the preset's step budget stays (its lr schedule anneals over it)
    extra = [f"run.stop.time_limit_s={seconds}", "run.stop.target_return=null",
             "run.metrics_interval_steps=0" if args.smoke else "run.metrics_interval_steps=20000",
             "run.checkpoint_interval_steps=0"]  # fmt: skip
    preset, cfg = _pong_cfg(workers, per_worker, device, args.smoke, extra)
    data: dict[str, Any] = {"smoke": args.smoke, "preset": preset, "workers": workers, "envs_per_worker": per_worker,
                            "device": device, "seconds": seconds}  # fmt: skip
    run_dir = Path(tempfile.mkdtemp(prefix="pong-")) / "run"
    if args.ray_ok:
        start_ray(args.smoke)
    t0 = time.perf_counter()
    try:
        result = rayac.train(cfg, run_dir=run_dir)
        data["stop_reason"] = getattr(result, "stop_reason", None)
    except Exception as err:  # noqa: BLE001 - the curve so far is still worth keeping
        data["error"] = f"{type(err).__name__}: {err}"
    data["wall_s"] = time.perf_counter() - t0
    curve = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            score = rec.get("rollout/episode_return_mean")  # None until the first episode ends
            if "time/elapsed_s" in rec and "train/loss" in rec:
                curve.append([round(rec["time/elapsed_s"], 1), rec.get("time/env_steps", 0),
                              None if score is None else round(score, 2)])  # fmt: skip
    step = max(1, len(curve) // 200)
    data["curve"] = curve[::step] + (curve[-1:] if curve and (len(curve) - 1) % step else [])
    data["curve_columns"] = ["elapsed_s", "env_steps", "train_score_mean"]
    reached = [c for c in curve if c[2] is not None and c[2] >= TARGET_SCORE]
    data["time_to_18_s"] = reached[0][0] if reached else None
    data["best_score"] = max((c[2] for c in curve if c[2] is not None), default=None)
    if curve:
        data["frames_per_s"] = curve[-1][1] * 4 / max(curve[-1][0], 1e-9)  # frame skip 4
        data["env_steps"] = curve[-1][1]
    write_json(args.out / "pong.json", data)
    return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("row", choices=["env", "a3c", "ps", "atari", "pong"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--seconds", type=float, default=0.0, help="per measurement (pong: the whole run)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env_json = args.out / "env.json"
    args.ray_ok = json.loads(env_json.read_text()).get("ray_ok", False) if env_json.is_file() else True
    rows = {"env": row_env, "a3c": row_a3c, "ps": row_ps, "atari": row_atari, "pong": row_pong}
    data = rows[args.row](args)
    if args.row == "env":
        write_json(env_json, {"smoke": args.smoke, **data})
        print(json.dumps(data, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
