"""Core benchmark: time to solve CartPole-v1, and env steps per second. Writes benchmarks/RESULTS.md.

(a) Time to solve: greedy mean >= 475 over 10 episodes, checked every 2,000 env steps, budget 200k steps.
    Each run is its own process (spawned by this script), so "from process start" includes Python start-up,
    imports and, for Ray, starting Ray and the worker actors. 5 seeds per system, medians.
    Peers: stable-baselines3 A2C and PPO with their RL-Zoo CartPole-v1 hyperparameters, torch at 1 thread.
(b) Throughput: env steps/s of the whole train loop (sampling + learning) for rayac with 0/1/2 workers,
    next to the raw gymnasium vector env stepping random actions and SB3 A2C.

    python benchmarks/bench_core.py [--seeds 5] [--systems rayac-a2c-0w,sb3-a2c] [--skip-solve]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

TARGET, EVAL_EVERY, EVAL_EPISODES, BUDGET = 475.0, 2_000, 10, 200_000
SYSTEMS = ["rayac-a2c-0w", "rayac-a2c-2w", "rayac-a3c-2w", "sb3-a2c", "sb3-ppo"]


# ----------------------------------------------------------------------------- one run (child process)
def _solve_rayac(system: str, seed: int, run_dir: str) -> dict:
    import rayac

    algo, workers = system.split("-")[1], int(system.split("-")[2].rstrip("w"))
    preset = f"{algo}_cartpole"  # a2c_cartpole, a3c_cartpole, impala_cartpole
    cfg = rayac.build_config(preset=preset, overrides=[
        f"env.seed={seed}", f"resources.num_workers={workers}", f"run.stop.total_env_steps={BUDGET}",
        f"run.stop.target_return={TARGET}", f"run.eval_interval_steps={EVAL_EVERY}",
        f"run.eval_episodes={EVAL_EPISODES}", "run.progress_bar=false", "run.tensorboard=false",
        "run.checkpoint_interval_steps=0", "run.log_interval_s=100000",
    ])  # fmt: skip
    res = rayac.train(cfg, run_dir=run_dir)
    return {"solved": res.solved, "env_steps": res.env_steps, "train_s": res.elapsed_s}


def _solve_sb3(system: str, seed: int) -> dict:
    import torch
    from common import greedy_eval, no_sb3_log_dir
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    if system == "sb3-a2c":  # rl-zoo hyperparams/a2c.yml CartPole-v1
        model, total = A2C("MlpPolicy", env, ent_coef=0.0, seed=seed, device="cpu"), BUDGET
    else:  # rl-zoo hyperparams/ppo.yml CartPole-v1 (linear schedules over its 1e5 steps)
        lin = lambda v: lambda progress: progress * v  # noqa: E731
        model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                    ent_coef=0.0, learning_rate=lin(1e-3), clip_range=lin(0.2), seed=seed, device="cpu")  # fmt: skip
        total = 100_000
    no_sb3_log_dir(model)
    state = {"solved": False, "next": EVAL_EVERY, "evals": 0}

    class SolveCheck(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps < state["next"]:
                return True
            state["next"] += EVAL_EVERY
            act = lambda obs: model.predict(obs, deterministic=True)[0]  # noqa: E731
            ret = greedy_eval(act, "CartPole-v1", episodes=EVAL_EPISODES, seed=10_000 + 100 * state["evals"])
            state["evals"] += 1
            if ret >= TARGET:
                state["solved"] = True
                return False
            return True

    start = time.perf_counter()
    model.learn(total_timesteps=total, callback=SolveCheck())
    return {
        "solved": state["solved"],
        "env_steps": int(model.num_timesteps),
        "train_s": time.perf_counter() - start,
    }


def run_one(system: str, seed: int, run_dir: str) -> None:
    out = _solve_sb3(system, seed) if system.startswith("sb3") else _solve_rayac(system, seed, run_dir)
    out["done_at"] = time.time()
    print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- orchestration
def solve_table(systems: list[str], seeds: int, workdir: Path) -> tuple[str, dict]:
    from common import median

    rows, raw = [], {}
    for system in systems:
        runs = []
        for seed in range(seeds):
            spawned = time.time()
            proc = subprocess.run([sys.executable, __file__, "--one", system, str(seed), str(workdir / f"{system}-{seed}")],
                                  capture_output=True, text=True, timeout=900)  # fmt: skip
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"{system} seed {seed} failed (exit {proc.returncode})")
            res = json.loads(line[7:])
            res["process_s"] = res["done_at"] - spawned
            runs.append(res)
            print(f"  {system:14s} seed {seed}: solved={res['solved']} steps={res['env_steps']:>7,} "
                  f"train {res['train_s']:.2f}s process {res['process_s']:.2f}s", flush=True)  # fmt: skip
        raw[system] = runs
        solved = [r for r in runs if r["solved"]]
        inf = float("inf")
        rows.append(
            f"| {system} | {len(solved)}/{len(runs)} | "
            f"{median([r['env_steps'] if r['solved'] else inf for r in runs]):,.0f} | "
            f"{median([r['train_s'] if r['solved'] else inf for r in runs]):.2f} | "
            f"{median([r['process_s'] if r['solved'] else inf for r in runs]):.2f} |"
        )
    table = ("| system | solved | median env steps | median s from training start | median s from process start |\n"
             "| --- | --- | --- | --- | --- |\n" + "\n".join(rows))  # fmt: skip
    return table, raw


def throughput_table(seconds: float = 5.0) -> str:
    import gymnasium as gym
    import numpy as np
    import torch
    from gymnasium.vector import AutoresetMode

    from rayac.algorithms.a2c import A2C
    from rayac.config import build_config
    from rayac.envs import describe_env

    torch.set_num_threads(1)
    rows = []

    def timed(step, warmup: int = 10) -> float:
        for _ in range(warmup):
            step()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += step()
        return n / (time.perf_counter() - t0)

    for n_envs in (8, 32):
        envs = gym.make_vec("CartPole-v1", num_envs=n_envs, vectorization_mode="sync",
                            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})  # fmt: skip
        envs.reset(seed=0)
        rng = np.random.default_rng(0)
        sps = timed(lambda envs=envs, n=n_envs, rng=rng: (envs.step(rng.integers(0, 2, n)), n)[1])
        rows.append((f"raw gymnasium SyncVectorEnv, {n_envs} envs, random actions (1 core)", sps))
        envs.close()

    started_ray = False
    for workers, n_envs, steps in ((0, 8, 5), (0, 32, 16), (1, 32, 16), (2, 32, 16)):
        cfg = build_config(preset="a2c_cartpole", overrides=[f"resources.num_workers={workers}",
                                                             f"env.num_envs={n_envs}", f"algo.rollout_steps={steps}"])  # fmt: skip
        if workers and not started_ray:
            from rayac.remote import init_ray

            started_ray = init_ray()
        algo = A2C(cfg, describe_env(cfg.env))
        sps = timed(lambda algo=algo: algo.train_step().num_steps)
        algo.stop()
        rows.append((f"rayac A2C, {workers} workers, {n_envs} envs x {steps} steps per worker", sps))
    if started_ray:
        import ray

        ray.shutdown()

    from common import no_sb3_log_dir
    from stable_baselines3 import A2C as SB3A2C
    from stable_baselines3.common.env_util import make_vec_env

    model = SB3A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=0), ent_coef=0.0, device="cpu")
    no_sb3_log_dir(model)
    model.learn(2_000)
    t0 = time.perf_counter()
    model.learn(30_000, reset_num_timesteps=False)
    sb3 = 30_000 / (time.perf_counter() - t0)
    rows.append(("stable-baselines3 A2C (RL-Zoo: 8 envs x 5 steps)", sb3))
    lines = ["| setup | env steps/s | × SB3 A2C |", "| --- | --- | --- |"]
    lines += [f"| {name} | {sps:,.0f} | {sps / sb3:.1f} |" for name, sps in rows]
    return "\n".join(lines)


def _ray_cfg(algo: str, workers: int, *extra: str):
    from rayac.config import build_config

    preset = f"{algo}_cartpole"  # a2c_cartpole, a3c_cartpole, impala_cartpole
    return build_config(preset=preset, overrides=[f"resources.num_workers={workers}", *extra])


def _steps_per_s(algo_obj, seconds: float) -> tuple[float, float]:
    """(env steps/s, updates/s) of the train loop, after a warm-up."""
    for _ in range(5):
        algo_obj.train_step()
    v0, n, t0 = algo_obj.version, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += algo_obj.train_step().num_steps
    dt = time.perf_counter() - t0
    return n / dt, (algo_obj.version - v0) / dt


def parameter_server_table(seconds: float = 3.0) -> str:
    """Pushes/s the parameter server sustains with synthetic gradients, next to a bare Ray actor call."""
    import numpy as np
    import ray

    from rayac.a3c.driver import A3C
    from rayac.a3c.messages import GradientPush
    from rayac.envs import describe_env
    from rayac.remote import _remote, init_ray, make_parameter_servers

    started = init_ray(num_cpus=4)
    cfg = _ray_cfg("a3c", 1)
    spec = describe_env(cfg.env)
    ps = make_parameter_servers(cfg, spec, num_shards=1)[0]
    published = ray.get(ps.pull.remote()).weights  # an ObjectRef of the flat weights
    grads = np.random.default_rng(0).normal(size=ray.get(published).data.size).astype(np.float32) * 1e-3

    class Echo:
        def ping(self, *args):
            return 0

    echo = _remote(Echo, num_cpus=0).remote()
    ray.get(echo.ping.remote())

    def rate(call, in_flight: int) -> float:
        n, t0, pending = 0, time.perf_counter(), []
        while time.perf_counter() - t0 < seconds:
            pending.append(call())
            if len(pending) >= in_flight:
                ray.get(pending)
                n += len(pending)
                pending = []
        ray.get(pending)
        return (n + len(pending)) / (time.perf_counter() - t0)

    rows = []
    for in_flight in (1, 8):
        floor = rate(lambda: echo.ping.remote(), in_flight)
        floor_payload = rate(lambda: echo.ping.remote(grads, 0), in_flight)
        v = ray.get(ps.pull.remote()).version
        push = rate(lambda v=v: ps.push.remote(GradientPush(v, grads)), in_flight)
        rows.append(
            f"| {in_flight} | {floor:,.0f} | {floor_payload:,.0f} | {push:,.0f} | {push / floor_payload:.2f} |"
        )
    from rayac.remote import kill_actors

    kill_actors([ps, echo])
    a3c_rows = []
    for workers in (1, 2):
        algo = A3C(_ray_cfg("a3c", workers), spec)
        sps, ups = _steps_per_s(algo, 5.0)
        algo.stop()
        a3c_rows.append(f"| A3C, {workers} worker{'s' if workers > 1 else ''} (8 envs x 5 steps each) | {sps:,.0f} | "
                        f"{ups:,.0f} |")  # fmt: skip
    if started:
        ray.shutdown()
    n_params = grads.size
    return (
        f"Gradients of the A3C CartPole policy ({n_params:,} parameters, Adam; one flat array, one shard), pushed "
        "from the driver (shards and Nature-CNN payloads: bench_a3c.py).\n\n"
        "| calls in flight | bare actor call/s | bare call with the gradient payload/s | push/s | push ÷ payload floor |\n"
        "| --- | --- | --- | --- | --- |\n" + "\n".join(rows)
        + "\n\n| A3C on Ray | env steps/s | pushes/s |\n| --- | --- | --- |\n" + "\n".join(a3c_rows)
    )  # fmt: skip


def scaling_table(workers_list: list[int], seconds: float = 8.0) -> str:
    """Env steps/s of A2C and A3C with 1..N rollout workers, and the learner on CUDA if there is one."""
    import os

    import ray
    import torch

    from rayac.a3c.driver import A3C
    from rayac.algorithms.a2c import A2C
    from rayac.envs import describe_env
    from rayac.remote import init_ray

    init_ray(num_cpus=(os.cpu_count() or 1) + 1)
    spec = describe_env(_ray_cfg("a2c", 1).env)
    rows = ["| workers | A2C env steps/s (32 envs x 16 steps each) | A3C env steps/s (8 envs x 5 steps each) "
            "| A3C pushes/s | A3C staleness mean |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for n in workers_list:
        a2c = A2C(_ray_cfg("a2c", n, "env.num_envs=32", "algo.rollout_steps=16"), spec)
        a2c_sps, _ = _steps_per_s(a2c, seconds)
        a2c.stop()
        a3c = A3C(_ray_cfg("a3c", n, "resources.learner_cpus=0"), spec)
        a3c_sps, pushes = _steps_per_s(a3c, seconds)
        stale = a3c.train_step().metrics.get("a3c/staleness_mean", float("nan"))
        a3c.stop()
        rows.append(f"| {n} | {a2c_sps:,.0f} | {a3c_sps:,.0f} | {pushes:,.0f} | {stale:.1f} |")
        print(rows[-1], flush=True)
    ray.shutdown()
    out = "\n".join(rows)
    if torch.cuda.is_available():
        import rayac

        for algo, workers in (("a2c", 0), ("a3c", 2)):
            cfg = _ray_cfg(algo, workers, "resources.device=cuda", "run.progress_bar=false", "run.tensorboard=false",
                           "run.eval_interval_steps=2000", "run.log_interval_s=100000")  # fmt: skip
            import tempfile

            res = rayac.train(cfg, run_dir=tempfile.mkdtemp() + "/run")
            out += (f"\n\nLearner on CUDA ({torch.cuda.get_device_name()}): {algo.upper()} with {workers} workers "
                    f"solved={res.solved} (best greedy return {res.best_eval_return:.1f}) in {res.env_steps:,} "
                    f"env steps, {res.elapsed_s:.1f} s.")  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", nargs=3, metavar=("SYSTEM", "SEED", "RUN_DIR"), help=argparse.SUPPRESS)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--skip-solve", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-ps", action="store_true")
    p.add_argument("--scaling", default="", help="worker counts for a scaling table, e.g. 1,2,4,8,16")
    args = p.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.one[2])
        return

    import tempfile

    from common import machine, write_section

    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    parts = [f"## Core: CartPole-v1 (bench_core.py)\n\nMachine: {machine()}. Run: `{' '.join(sys.argv)}` "
             f"on {time.strftime('%Y-%m-%d')}.\n"]  # fmt: skip
    if not args.skip_solve:
        with tempfile.TemporaryDirectory() as tmp:
            table, _ = solve_table(args.systems.split(","), args.seeds, Path(tmp))
        parts.append(f"### Time to solve (greedy mean >= {TARGET:g} over {EVAL_EPISODES} episodes, checked every "
                     f"{EVAL_EVERY:,} env steps; {args.seeds} seeds; unsolved counts as infinite)\n\n{table}\n")  # fmt: skip
    if not args.skip_throughput:
        parts.append(f"### Throughput (whole train loop, torch 1 thread)\n\n{throughput_table()}\n")
    if not args.skip_ps:
        parts.append(f"### A3C parameter server\n\n{parameter_server_table()}\n")
    if args.scaling:
        table = scaling_table([int(n) for n in args.scaling.split(",")])
        parts = [f"## Scaling over rollout workers (bench_core.py --scaling)\n\nMachine: {machine()}. Run: "
                 f"`{' '.join(sys.argv)}` on {time.strftime('%Y-%m-%d')}.\n\n{table}\n"]  # fmt: skip
        write_section("bench_scaling", "\n".join(parts))
        print("\n".join(parts))
        return
    body = "\n".join(parts)
    print(body)
    write_section("bench_core", body)


if __name__ == "__main__":
    main()
