"""A2C on Ray rollout workers: learning, and surviving a worker's death."""

import pytest

import rayac
from rayac.algorithms.a2c import A2C
from rayac.checkpoint import load_checkpoint
from rayac.config import build_config
from rayac.envs import describe_env
from rayac.evaluate import Evaluator
from rayac.metrics import read_metrics
from tests.runs import resume_run, tiny_run

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_a2c_two_ray_workers_solves_cartpole(ray_session, tmp_path):
    cfg = build_config(preset="a2c_cartpole", overrides=[
        "resources.num_workers=2", "env.seed=0", "run.stop.total_env_steps=200000", "run.stop.target_return=475",
        "run.eval_interval_steps=2000", "run.eval_episodes=10", "run.progress_bar=false", "run.tensorboard=false",
    ])  # fmt: skip
    result = rayac.train(cfg, run_dir=tmp_path / "run")
    assert result.solved, result
    assert result.best_eval_return >= 475 and result.env_steps <= 200_000
    assert result.stop_reason == "target_return" and result.eval_return >= 475

    # the saved policy is the one that solved it: replaying the solving evaluation (same episodes, same env
    # seeds) with the final checkpoint's weights gives the recorded return to the last digit
    assert str(rayac.load_policy(result.run_dir).checkpoint) == result.checkpoint
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.state["env_steps"] == result.env_steps and ckpt.state["eval_return"] == result.eval_return
    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/return_mean" in r]
    assert evals[-1]["eval/return_mean"] == result.eval_return
    replay = Evaluator(ckpt.cfg.env, ckpt.build_policy(), episodes=ckpt.cfg.run.eval_episodes)
    try:  # the solving evaluation's seeds are those of its step count
        assert replay.evaluate(at_step=result.env_steps)["eval/return_mean"] == result.eval_return
    finally:
        replay.close()


def test_a2c_survives_a_killed_worker(ray_session):
    import ray

    cfg = build_config(preset="a2c_cartpole", overrides=["resources.num_workers=2"])
    algo = A2C(cfg, describe_env(cfg.env))
    try:
        algo.train_step()
        ray.kill(algo.group.actors[0], no_restart=False)  # the process dies; Ray restarts the actor
        steps = [algo.train_step() for _ in range(5)]
        assert all(s.num_steps == 2 * cfg.env.num_envs * cfg.algo.rollout_steps for s in steps)
        assert algo.group.restarts >= 1
        assert algo.version == 6
    finally:
        algo.stop()


def test_workers_that_cannot_be_placed_fail_with_a_clear_error(ray_session, monkeypatch):
    from rayac import remote

    monkeypatch.setattr(remote, "STARTUP_TIMEOUT_S", 3.0)
    cfg = build_config(overrides=["resources.num_workers=3", "resources.worker_cpus=2"])
    with pytest.raises(RuntimeError, match=r"need 6 CPUs .* has 4"):
        A2C(cfg, describe_env(cfg.env))


def test_resume_with_ray_workers_continues_each_workers_envs_exactly(ray_session, tmp_path):
    """The checkpoint holds every Ray worker's envs and generator: 4k + resume to 8k == 8k straight."""
    import torch

    overrides = ["resources.num_workers=2", "run.stop.target_return=null", "run.eval_interval_steps=2000"]
    straight = tiny_run(
        tmp_path, "straight", *overrides, steps=8000
    )  # a2c_cartpole splits its 16 envs: 2 workers x 8 envs x 5 = 80 an update
    tiny_run(tmp_path, "resumed", *overrides, steps=4000)
    resumed = resume_run(tmp_path / "resumed", "run.stop.total_env_steps=8000")
    a, b = load_checkpoint(straight.run_dir), load_checkpoint(resumed.run_dir)
    assert a.state["env_steps"] == b.state["env_steps"] == 8000 and len(b.sampler_state()) == 2
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert a.state["eval_return"] == b.state["eval_return"]


def test_the_embedded_ray_is_one_plain_line_not_rays_info_log(tmp_path):
    """A newcomer read `2026-… INFO worker.py:2038 -- Started a local Ray instance.` as noise, or as a problem."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "rayac.cli", "train", "--preset", "a2c_cartpole", "--workers", "1",
                           "--steps", "80", "--no-progress", "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = (
        f"rayac: started a local Ray on 127.0.0.1 ({os.cpu_count()} CPUs; set RAY_ADDRESS to use a cluster)\n"
    )
    assert line in proc.stderr
    assert "worker.py" not in proc.stderr and "Started a local Ray instance" not in proc.stderr


def test_worker_lines_in_a_log_file_carry_no_colour_codes():
    """Piped to a file, a Pong run's worker lines read `\\x1b[36m(RolloutWorker pid=…)\\x1b[0m …`."""
    import os
    import subprocess
    import sys
    import textwrap

    # the driver prints worker lines when Ray's log monitor hands them over: wait for the line (a busy machine is
    # slow to), not a fixed time
    code = textwrap.dedent("""
        import sys, time
        import ray
        from rayac.remote import init_ray

        class Tee:
            def __init__(self, f):
                self.f, self.seen = f, ""
            def write(self, text):
                self.seen += text
                return self.f.write(text)
            def __getattr__(self, name):
                return getattr(self.f, name)

        sys.stdout = Tee(sys.stdout)
        init_ray(num_cpus=1)

        @ray.remote
        def hello():
            print("hello from a worker", flush=True)

        ray.get(hello.remote(), timeout=60)
        t0 = time.monotonic()
        while "hello from a worker" not in sys.stdout.seen and time.monotonic() - t0 < 60:
            time.sleep(0.1)
        ray.shutdown()
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_COLOR_PREFIX")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "(hello pid=" in done.stdout and "hello from a worker" in done.stdout, done.stdout + done.stderr
    assert "\x1b[" not in done.stdout + done.stderr
