"""Sweeps on Ray Tune: ASHA stops bad trials early and the best trial solves; PBT's perturbed values take effect."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from rayac.checkpoint import latest_checkpoint, load_checkpoint
from rayac.config import load_preset
from rayac.sweep import SweepSpec, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _base(steps: int, eval_every: int, episodes: int, **run) -> dict:
    base = load_preset("a2c_cartpole")
    base["run"] = {"stop": {"total_env_steps": steps, "target_return": 475}, "eval_interval_steps": eval_every,
                   "eval_episodes": episodes, "tensorboard": False, **run}  # fmt: skip
    return base


@pytest.mark.timeout(900)
def test_asha_stops_bad_learning_rates_early_and_the_best_trial_solves(ray_session, tmp_path) -> None:
    # grace 20k: at 10k a2c_cartpole's greedy return is still near random play's, at 20k it is ~150-250
    spec = SweepSpec(base=_base(60_000, 2000, 5), search=["optim.lr=choice(0.000001,0.006)"], samples=2,
                     concurrent=2, scheduler="asha", search_alg="grid", grace_steps=20_000)  # fmt: skip
    doc = run_sweep(spec, tmp_path / "sweep")
    assert doc == json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert doc["state"] == "finished" and doc["metric"] == "eval/return_mean" and doc["mode"] == "max"
    trials = doc["trials"]
    assert len(trials) == 4 and {t["config"]["optim.lr"] for t in trials} == {0.000001, 0.006}
    bad = [t for t in trials if t["config"]["optim.lr"] == 0.000001]
    good = [t for t in trials if t["config"]["optim.lr"] == 0.006]  # a2c_cartpole's own rate
    assert any(t["status"] == "stopped_early" and t["env_steps"] < 60_000 for t in bad), bad
    assert all(t["status"] == "succeeded" for t in good), good
    best = next(t for t in trials if t["id"] == doc["best_trial"])
    assert best["config"]["optim.lr"] == 0.006 and best["best"] >= 475
    # each trial is a normal run: metrics.jsonl and checkpoints in its own run dir
    for t in trials:
        assert (tmp_path / "sweep" / "trials" / t["id"] / "metrics.jsonl").is_file()
        assert t["run_dir"] == str(tmp_path / "sweep" / "trials" / t["id"])


@pytest.mark.timeout(900)
def test_pbt_exploits_and_the_perturbed_rate_is_the_optimisers(tmp_path) -> None:
    # its own Ray (the CLI's): both trials must run at once for PBT to compare them, whatever the shared test
    # Ray's CPUs are holding
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rp", dir="/tmp")}
    sweep = tmp_path / "sweep"
    # 7 sync points, not 4: CI once saw no exploit at all in 4 (on a loaded machine; the cause is not pinned down:
    # Tune's synchronous PBT skips a round when it has fewer than 2 scored live trials, or no saved checkpoint)
    done = _sweep_cli("--preset", "a2c_cartpole", "--set", "run.stop.total_env_steps=16000", "--set",
                      "run.stop.target_return=null", "--set", "run.eval_interval_steps=1000", "--set",
                      "run.eval_episodes=3", "--set", "run.tensorboard=false", "--search",
                      "optim.lr=choice(0.00001,0.003)", "--samples", "1", "--concurrent", "2", "--search-alg", "grid",
                      "--scheduler", "pbt", "--pbt-interval", "2000", "--sweep-dir", str(sweep), env=env)  # fmt: skip
    out = done.communicate(timeout=800)[0]
    assert done.returncode == 0, out[-3000:]
    # Tune's INFO lines from the trial actors (one per report and per exploit) stay off the sweep's console
    assert "Checkpoint successfully created" not in out and "from checkpoint" not in out, out[-3000:]
    # nor do Tune's own file loggers, whose files no one reads, warn 'Remote file not found' at each early resume
    assert "Remote file not found" not in out, out[-3000:]
    doc = json.loads((sweep / "sweep.json").read_text())
    assert doc["state"] == "finished" and all(t["status"] == "succeeded" for t in doc["trials"])
    perturbed = [t for t in doc["trials"] if len(t["config_history"]) > 1]
    assert perturbed, doc["trials"]
    for t in perturbed:  # the trial's final checkpoint carries the last perturbed rate, not its first
        lr = t["config"]["optim.lr"]
        assert t["config_history"][-1]["config"]["optim.lr"] == lr
        groups = load_checkpoint(latest_checkpoint(sweep / "trials" / t["id"])).optimizer_state()
        assert {g["lr"] for g in groups["param_groups"]} == {lr}


def _sweep_cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rayac.cli", "sweep", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


@pytest.mark.timeout(900)
def test_an_interrupted_sweep_resumes_its_unfinished_trials_and_reruns_no_finished_one(tmp_path) -> None:
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rs", dir="/tmp")}
    sweep = tmp_path / "sweep"
    first = _sweep_cli("--preset", "a2c_cartpole", "--set", "run.stop.total_env_steps=24000", "--set",
                       "run.stop.target_return=null", "--set", "run.eval_interval_steps=2000", "--set",
                       "run.eval_episodes=2", "--set", "run.checkpoint_interval_steps=2000", "--set",
                       "run.tensorboard=false", "--search", "optim.lr=choice(0.002,0.003,0.004)", "--samples", "1",
                       "--concurrent", "1", "--search-alg", "grid", "--sweep-dir", str(sweep), env=env)  # fmt: skip
    deadline = time.monotonic() + 400
    doc: dict = {}
    while (
        time.monotonic() < deadline
    ):  # interrupt once the first trial is done and the second has checkpoints
        time.sleep(1)
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads((sweep / "sweep.json").read_text())
        done = [t for t in doc.get("trials", []) if t["status"] == "succeeded"]
        going = [t for t in doc.get("trials", []) if t["status"] == "running" and t["env_steps"] >= 6000]
        if done and going:
            break
    else:
        first.kill()
        pytest.fail(f"the sweep did not get going: {doc}")
    first.send_signal(signal.SIGINT)
    out = first.communicate(timeout=120)[0]
    assert first.returncode == 130, out[-3000:]
    doc = json.loads((sweep / "sweep.json").read_text())
    assert doc["state"] == "interrupted"
    finished = {t["id"]: t for t in doc["trials"] if t["status"] == "succeeded"}
    cut = next(t for t in doc["trials"] if t["status"] == "running")
    finished_metrics = {i: (Path(t["run_dir"]) / "metrics.jsonl").read_text() for i, t in finished.items()}
    cut_ckpt = int(latest_checkpoint(Path(cut["run_dir"])).name.split("_")[-1])
    assert cut_ckpt < 24000

    second = _sweep_cli("--resume", str(sweep), env=env)
    out = second.communicate(timeout=600)[0]
    assert second.returncode == 0, out[-3000:]
    doc = json.loads((sweep / "sweep.json").read_text())
    assert doc["state"] == "finished" and len(doc["trials"]) == 3
    assert all(t["status"] == "succeeded" and t["env_steps"] == 24000 for t in doc["trials"]), doc["trials"]
    for i, text in finished_metrics.items():  # not re-run
        assert (Path(finished[i]["run_dir"]) / "metrics.jsonl").read_text() == text
    steps = [json.loads(line)["time/env_steps"] for line in (Path(cut["run_dir"]) / "metrics.jsonl").open()]
    assert steps == sorted(steps) and steps[-1] == 24000  # continued from its checkpoint: never back to 0
    assert len(steps) == len(set(steps)) or steps.count(steps[-1]) <= 2  # the final evaluation's own record


@pytest.mark.timeout(600)
def test_optuna_searches_within_the_bounds(ray_session, tmp_path) -> None:
    base = _base(2000, 1000, 2)
    spec = SweepSpec(base=base, search=["optim.lr=loguniform(1e-4,1e-2)", "algo.ent_coef=uniform(0,0.05)"],
                     samples=3, concurrent=1, search_alg="optuna")  # fmt: skip
    doc = run_sweep(spec, tmp_path / "sweep")
    assert doc["search_alg"] == "optuna" and doc["state"] == "finished" and len(doc["trials"]) == 3
    configs = [t["config"] for t in doc["trials"]]
    assert len({c["optim.lr"] for c in configs}) == 3
    assert all(1e-4 <= c["optim.lr"] <= 1e-2 and 0 <= c["algo.ent_coef"] <= 0.05 for c in configs)
    assert all(t["status"] == "succeeded" and t["best"] is not None for t in doc["trials"])
