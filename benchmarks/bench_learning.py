"""Learning benchmarks: final greedy return of rayac's presets vs SB3 A2C with RL-Zoo's settings, same budget.

    python benchmarks/bench_learning.py --env LunarLander-v3 --seeds 0,1,2      # runs what is missing, then reports
    python benchmarks/bench_learning.py --report                                 # only rewrite the RESULTS.md section

Each (system, env, seed) trains in its own process and leaves ``runs/bench_learning/<system>-<env>-<seed>.json``,
so a long sweep can be stopped and continued. The final policy of each run is scored by the same greedy check
(``common.greedy_eval``: 10 episodes at once, fixed seeds, raw observations) for both systems.

- LunarLander-v3, 300k steps: rayac `a2c_lunarlander` vs SB3 A2C (RL-Zoo: 8 envs, n_steps 5, gamma 0.995,
  lr lin_8.3e-4, ent 1e-5); both anneal the lr linearly.
- HalfCheetah-v5, 1M steps: rayac `a2c_halfcheetah` vs SB3 A2C (RL-Zoo MuJoCo: SB3 defaults + VecNormalize);
  ``--systems rayac-rlzoo`` runs rayac's preset under those same RL-Zoo settings (``RL_ZOO_SETTINGS``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

OUT = Path(__file__).resolve().parent.parent / "runs" / "bench_learning"
PRESETS = {"LunarLander-v3": ("a2c_lunarlander", 300_000), "HalfCheetah-v5": ("a2c_halfcheetah", 1_000_000)}
# system "rayac-rlzoo": rayac's preset set back to RL-Zoo's settings for SB3 A2C, so the two implementations also meet
# under equal settings (HalfCheetah: SB3's A2C defaults, 1 env x 5 steps, torch RMSprop 7e-4, no GAE)
RL_ZOO_SETTINGS = {
    "HalfCheetah-v5": ["env.num_envs=1", "algo.rollout_steps=5", "algo.gae_lambda=1.0", "optim.name=rmsprop",
                       "optim.lr=0.0007", "optim.lr_schedule=constant", "algo.normalize_advantages=false"],
}  # fmt: skip
SYSTEMS = ("rayac", "rayac-rlzoo", "sb3")
EVAL_EPISODES = 10
EVAL_SEED = 10_000


def run_rayac(env_id: str, seed: int, steps: int, *, rl_zoo: bool = False) -> dict:
    from common import greedy_eval

    import rayac

    preset, _ = PRESETS[env_id]
    if rl_zoo and env_id not in RL_ZOO_SETTINGS:
        raise SystemExit(f"rayac-rlzoo: no RL-Zoo settings written down for {env_id}")
    run_dir = OUT / f"rayac{'-rlzoo' if rl_zoo else ''}-{env_id}-{seed}"
    cfg = rayac.build_config(preset=preset, overrides=[
        *(RL_ZOO_SETTINGS[env_id] if rl_zoo else []), f"env.seed={seed}", f"run.stop.total_env_steps={steps}",
        "run.progress_bar=false", "run.tensorboard=false", "run.log_interval_s=600", "resources.device=cpu",
    ])  # fmt: skip
    t0 = time.perf_counter()
    res = rayac.train(cfg, run_dir=run_dir)
    policy = rayac.load_policy(res.run_dir)  # raw observations in: the normaliser is part of the policy
    score = greedy_eval(lambda obs: policy.act(obs), env_id, episodes=EVAL_EPISODES, seed=EVAL_SEED)
    return {"return": score, "env_steps": res.env_steps, "train_s": time.perf_counter() - t0}


def run_sb3(env_id: str, seed: int, steps: int) -> dict:
    import torch
    from common import greedy_eval, no_sb3_log_dir
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if env_id == "LunarLander-v3":  # rl-baselines3-zoo hyperparams/a2c.yml LunarLander-v3
        env = make_vec_env(env_id, n_envs=8, seed=seed)
        model = A2C("MlpPolicy", env, gamma=0.995, n_steps=5, learning_rate=lambda p: p * 0.00083, ent_coef=1e-5,
                    seed=seed, device="cpu")  # fmt: skip
        no_sb3_log_dir(model).learn(steps)
        act = lambda obs: model.predict(obs, deterministic=True)[0]  # noqa: E731
    else:  # rl-baselines3-zoo hyperparams/a2c.yml HalfCheetah-v4: SB3 defaults + normalize (obs and reward)
        env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), gamma=0.99)
        model = A2C("MlpPolicy", env, seed=seed, device="cpu")
        no_sb3_log_dir(model).learn(steps)
        env.training = False
        act = lambda obs: model.predict(env.normalize_obs(obs), deterministic=True)[0]  # noqa: E731
    score = greedy_eval(act, env_id, episodes=EVAL_EPISODES, seed=EVAL_SEED)
    return {"return": score, "env_steps": steps, "train_s": time.perf_counter() - t0}


TABLE_HEAD = "| env | budget (env steps) | system | seeds | final greedy return per seed | mean | train s (mean) | measured |"


def _rows_on_record() -> dict[tuple[str, int, str], str]:
    """The table rows RESULTS.md already holds, by (env, budget, system): results measured on another machine or
    in an earlier session, whose per-run files are not here. A row from this machine's files replaces its own."""
    from common import read_section

    rows = {}
    for line in read_section("bench_learning").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 7 and cells[1].replace(",", "").isdigit():
            measured = cells[7] if len(cells) > 7 else "2026-11-23"  # the tables before this column
            rows[(cells[0], int(cells[1].replace(",", "")), cells[2])] = (
                "| " + " | ".join(cells[:7] + [measured]) + " |"
            )
    return rows


def report() -> None:
    import numpy as np
    from common import machine, write_section

    runs = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    rows = _rows_on_record()
    for env_id, budget in sorted({(r["env"], r["budget"]) for r in runs}):
        for system in SYSTEMS:
            got = [r for r in runs if (r["env"], r["budget"], r["system"]) == (env_id, budget, system)]
            if not got:
                continue
            rets = [r["return"] for r in got]
            rows[(env_id, budget, system)] = (
                f"| {env_id} | {budget:,} | {system} | {', '.join(str(r['seed']) for r in got)} "
                f"| {', '.join(f'{x:.1f}' for x in rets)} | {np.mean(rets):.1f} "
                f"| {np.mean([r['train_s'] for r in got]):.0f} | {max(r.get('date', '') for r in got)} |"
            )
    lines = [
        "## Learning: final greedy return at a fixed budget (bench_learning.py)",
        "",
        f"Machine: {machine()}; written {date.today()}. Greedy check: {EVAL_EPISODES} episodes, fixed seeds, the "
        "final policy of each run. Only finished runs are listed; rows measured earlier (their date in the last "
        "column) are kept until a run here replaces them.",
        "",
        TABLE_HEAD,
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(rows[key] for key in sorted(rows)),
    ]
    write_section("bench_learning", "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=list(PRESETS), default="LunarLander-v3")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--systems", default="rayac,sb3")
    p.add_argument(
        "--steps", type=int, help="override the budget (recorded with each result and in the table)"
    )
    p.add_argument("--report", action="store_true")
    p.add_argument("--one", nargs=2, metavar=("SYSTEM", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    steps = args.steps or PRESETS[args.env][1]
    if args.one:
        system, seed = args.one[0], int(args.one[1])
        if system not in SYSTEMS:
            raise SystemExit(f"--systems: unknown system {system!r} (one of {', '.join(SYSTEMS)})")
        if system == "sb3":
            out = run_sb3(args.env, seed, steps)
        else:
            out = run_rayac(args.env, seed, steps, rl_zoo=system == "rayac-rlzoo")
        out.update(system=system, env=args.env, seed=seed, budget=steps, date=str(date.today()))
        tmp = OUT / f".{system}-{args.env}-{seed}.tmp"
        tmp.write_text(json.dumps(out))
        tmp.replace(OUT / f"{system}-{args.env}-{seed}.json")
        print(json.dumps(out), flush=True)
        return
    if not args.report:
        for seed in args.seeds.split(","):
            for system in args.systems.split(","):
                if (OUT / f"{system}-{args.env}-{seed}.json").exists():
                    continue
                cmd = [sys.executable, __file__, "--env", args.env, "--one", system, seed]
                if args.steps:
                    cmd += ["--steps", str(args.steps)]
                subprocess.run(cmd, check=False)
    report()


if __name__ == "__main__":
    main()
