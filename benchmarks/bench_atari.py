"""Atari throughput: agent steps/s of rayac A2C on ALE/Pong-v5, next to the raw env engine and SB3 A2C.

Every row uses the same total env count (16, RL-Zoo's Atari n_envs) and the same pipeline (30 no-ops,
frame skip 4, 84x84 gray, 4 stacked frames). Each measurement is its own process, warmed up, then timed
for ``--seconds`` of steady state (start-up excluded):

- raw engine: the training vector env stepping uniformly random actions, no policy (the floor to beat);
- rayac A2C (a2c_pong preset: Nature CNN, RMSpropTF, 5-step rollouts) with 0, 1 and 2 rollout workers, the
  16 envs split among them, on both backends (gymnasium vector env / envpool);
- SB3 A2C with RL-Zoo's Atari settings (AtariWrapper, VecFrameStack 4, 16 envs, 5 steps, RMSpropTFLike).

torch runs at 1 thread everywhere (the learner's default, and SB3 is given the same). Targets: rayac ≥ 0.7× the
raw engine at the same env count, ≥ 3× SB3.

    python benchmarks/bench_atari.py [--seconds 20] [--rows raw-gymnasium,rayac-0w-gymnasium,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

ENV_ID, NUM_ENVS = "ALE/Pong-v5", 16
ROWS = ["raw-gymnasium", "raw-envpool"] + [
    f"rayac-{w}w-{b}" for b in ("gymnasium", "envpool") for w in (0, 1, 2)
]
ROWS += ["rayac-0w-envpool-bf16", "rayac-2w-envpool-bf16", "sb3-a2c"]


def _rayac_cfg(workers: int, backend: str, encoder_dtype: str = "float32"):
    import rayac

    return rayac.build_config(preset="a2c_pong", overrides=[
        f"env.backend={backend}", f"env.num_envs={NUM_ENVS // max(workers, 1)}", f"resources.num_workers={workers}",
        "resources.device=cpu", "run.progress_bar=false", "run.tensorboard=false", f"model.encoder_dtype={encoder_dtype}",
    ])  # fmt: skip


def _timed(step, seconds: float, warmup: int) -> float:
    """Steps/s of ``step()`` (which returns how many agent steps it took) over ``seconds`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        steps += step()
    return steps / (time.perf_counter() - t0)


def measure(row: str, seconds: float) -> float:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    if row.startswith("raw-"):
        from rayac.envs import check_config_against_env, make_training_env

        cfg = _rayac_cfg(0, row.split("-")[1])
        spec = check_config_against_env(cfg)
        env = make_training_env(cfg.env, spec, seed=0)
        env.reset(seed=list(range(NUM_ENVS)))
        rng = np.random.default_rng(0)
        sps = _timed(lambda: int(env.step(rng.integers(0, spec.action_n, NUM_ENVS)).valid.sum()), seconds, 20)
        env.close()
        return sps
    if row.startswith("rayac-"):
        from rayac.algorithms.base import make_algorithm
        from rayac.envs import check_config_against_env

        _, workers, backend, *dtype = row.split("-")
        cfg = _rayac_cfg(int(workers.rstrip("w")), backend, "bfloat16" if dtype else "float32")
        algo = make_algorithm(cfg, check_config_against_env(cfg))
        try:
            return _timed(lambda: algo.train_step().num_steps, seconds, 5)
        finally:
            algo.stop()
    # SB3 A2C, RL-Zoo hyperparams/a2c.yml `atari` (ALE v5 made with frameskip=1 and no sticky actions, as
    # NoFrameskip-v4, so AtariWrapper does the skipping exactly as in RL-Zoo)
    import ale_py
    import gymnasium as gym
    from common import no_sb3_log_dir
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env(ENV_ID, n_envs=NUM_ENVS, seed=0,
                                       env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0}), n_stack=4)  # fmt: skip
    model = A2C("CnnPolicy", env, ent_coef=0.01, vf_coef=0.25, seed=0, device="cpu",
                policy_kwargs={"optimizer_class": RMSpropTFLike, "optimizer_kwargs": {"eps": 1e-5}})  # fmt: skip
    no_sb3_log_dir(model).learn(NUM_ENVS * 5 * 5)  # warm-up: 5 updates
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        model.learn(NUM_ENVS * 5 * 10, reset_num_timesteps=False)
        steps += NUM_ENVS * 5 * 10
    return steps / (time.perf_counter() - t0)


LABELS = {
    "raw": "raw {b} engine, 16 envs, random actions, no policy",
    "rayac": "rayac A2C, {w} workers ({n} envs each), {b}{d}",
    "sb3": "stable-baselines3 A2C (RL-Zoo Atari: 16 envs x 5 steps, DummyVecEnv)",
}


def label(row: str) -> str:
    if row == "sb3-a2c":
        return LABELS["sb3"]
    parts = row.split("-")
    if parts[0] == "raw":
        return LABELS["raw"].format(b=parts[1])
    workers = int(parts[1].rstrip("w"))
    dtype = ", bfloat16 encoder (model.encoder_dtype)" if parts[3:] == ["bf16"] else ""
    return LABELS["rayac"].format(w=workers, n=NUM_ENVS // max(workers, 1), b=parts[2], d=dtype)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps({"sps": measure(args.one, args.seconds)}), flush=True)
        return

    from common import machine, run_rows, uptime, write_section

    load_before = uptime()
    show = lambda row, r: f"{row:24s} {r['sps']:10,.0f} agent steps/s"  # noqa: E731
    results = {
        row: r["sps"] for row, r in run_rows(__file__, args.rows.split(","), args.seconds, show).items()
    }
    load_after = uptime()

    sb3 = results.get("sb3-a2c")
    lines = [
        "## Atari: ALE/Pong-v5 agent steps/s (bench_atari.py)",
        "",
        f"Machine: {machine()}. Run: `benchmarks/bench_atari.py --seconds {args.seconds:g}` on {date.today()}.",
        f"Load before: `{load_before}`; after: `{load_after}` (a shared machine: compare rows of this run only).",
        "",
        "Pipeline: 30 no-ops, frame skip 4 (max of the last two frames), 84x84 gray, 4 frames stacked; 16 envs in every "
        "row. rayac: a2c_pong preset (Nature CNN, RMSpropTF, 5-step rollouts), learner on the CPU, torch 1 thread (the "
        "bfloat16 rows: the CNN trunk under autocast, `model.encoder_dtype=bfloat16`); "
        "steady state after a warm-up, start-up excluded. An agent step = 4 frames.",
        "",
        "| setup | agent steps/s | × raw engine (same backend) | × SB3 A2C |",
        "| --- | --- | --- | --- |",
    ]
    for row, sps in results.items():
        backend = row.split("-")[1 if row.startswith("raw") else 2] if row != "sb3-a2c" else ""
        raw = results.get(f"raw-{backend}")
        x_raw = f"{sps / raw:.2f}" if raw and not row.startswith(("raw", "sb3")) else ""
        x_sb3 = f"{sps / sb3:.2f}" if sb3 else ""
        lines.append(f"| {label(row)} | {sps:,.0f} | {x_raw} | {x_sb3} |")
    write_section("bench_atari", "\n".join(lines))


if __name__ == "__main__":
    main()
