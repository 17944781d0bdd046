"""Run-section fields through a real (short, num_workers=0) run: each test fails if its field were ignored."""

import pytest

from rayac.checkpoint import checkpoint_dirs, load_checkpoint
from rayac.metrics import read_metrics
from tests.runs import tiny_run


def test_time_limit_stops_a_run_that_has_no_step_budget(tmp_path):
    limit = 1.5
    # no total_env_steps: without the time limit this run would never end
    res = tiny_run(
        tmp_path,
        "run",
        "run.stop.total_env_steps=null",
        "run.stop.target_return=null",
        f"run.stop.time_limit_s={limit}",
    )
    assert res.stop_reason == "time_limit_s"
    assert res.elapsed_s >= limit
    train = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert len(train) > 1
    # the limit is checked before every step: a step is only taken while the run is under it
    assert all(r["time/elapsed_s"] < limit for r in train[:-1])
    assert res.env_steps == train[-1]["time/env_steps"]


@pytest.mark.parametrize("keep", [1, 3])
def test_keep_checkpoints_bounds_the_checkpoints_on_disk(tmp_path, keep):
    # 80 env steps per update: a checkpoint every 400 steps is ~7 of them in 3000 steps, plus the final one
    # no evaluation until the end: no best-evaluated checkpoint is kept besides the newest
    res = tiny_run(tmp_path, "run", "run.checkpoint_interval_steps=400", f"run.keep_checkpoints={keep}",
                   "run.eval_interval_steps=0")  # fmt: skip
    kept = checkpoint_dirs(res.run_dir)
    assert len(kept) == keep
    assert load_checkpoint(kept[-1]).state["env_steps"] == res.env_steps  # the newest are the ones kept
    steps = [load_checkpoint(p).state["env_steps"] for p in kept]
    assert steps == sorted(steps) and steps[0] >= res.env_steps - 400 * keep


def test_rmsprop_is_the_optimiser_whose_state_is_checkpointed(tmp_path):
    res = tiny_run(tmp_path, "run", "optim.name=rmsprop", "optim.rmsprop_alpha=0.95", steps=400)
    state = load_checkpoint(res.run_dir).optimizer_state()
    assert set(state["state"][0]) == {"step", "square_avg"}  # Adam's would be exp_avg / exp_avg_sq
    assert {g["alpha"] for g in state["param_groups"]} == {0.95}


def test_wandb_offline_writes_its_run_files(tmp_path, monkeypatch):
    import wandb  # noqa: F401  (a dev dependency: missing, this fails instead of being skipped)

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    res = tiny_run(tmp_path, "run", "run.wandb=true", steps=400)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "run").rglob("*"))
    logs = list(runs[0].glob("run-*.wandb"))
    assert len(logs) == 1
    # the run's transaction log (protobuf records, uncompressed) holds the metric keys and the config
    data = logs[0].read_bytes()
    for key in (b"train/policy_loss", b"time/env_steps", b"eval/return_mean", b"CartPole-v1"):
        assert key in data, key
    assert res.env_steps >= 400


def test_a_new_best_evaluation_is_checkpointed_and_pruning_keeps_it(tmp_path, monkeypatch):
    """A newcomer's run reported `best 500.0`, but no kept checkpoint held that policy: `--checkpoint best` gave a
    worse one. Evaluated every 1000 steps with returns 10, 50, 30, 20 (a2c_cartpole: 80 env steps an update)."""
    from rayac.checkpoint import select_checkpoint
    from rayac.evaluate import Evaluator

    returns = iter([10.0, 50.0, 30.0, 20.0])
    real = Evaluator.evaluate

    def scripted(self, *args, **kwargs):
        return real(self, *args, **kwargs) | {"eval/return_mean": next(returns)}

    monkeypatch.setattr(Evaluator, "evaluate", scripted)
    res = tiny_run(tmp_path, "run", "run.checkpoint_interval_steps=400", "run.keep_checkpoints=1",
                   "run.stop.target_return=null", steps=3200)  # fmt: skip
    assert res.best_eval_return == 50.0 and res.eval_return == 20.0
    kept = checkpoint_dirs(res.run_dir)
    assert [p.name for p in kept] == ["ckpt_000000002000", "ckpt_000000003200"]  # the best, and the newest
    best = load_checkpoint(kept[0]).state
    assert (best["eval_return"], best["eval_env_steps"], best["env_steps"]) == (50.0, 2000, 2000)
    assert select_checkpoint(res.run_dir, "best") == kept[0]
    # the periodic checkpoints after it carried 50.0 along, but not its weights: none of them counts as best
    returns = iter([30.0, 20.0])
    res2 = tiny_run(tmp_path, "run2", "run.checkpoint_interval_steps=400", "run.keep_checkpoints=3",
                    "run.stop.target_return=null", "run.eval_interval_steps=2000", steps=2800)  # fmt: skip
    states = [load_checkpoint(p).state for p in checkpoint_dirs(res2.run_dir)]
    assert [(s["env_steps"], s["eval_return"], s["eval_env_steps"]) for s in states] == [
        (2000, 30.0, 2000), (2400, 30.0, 2000), (2800, 20.0, 2800)]  # fmt: skip
    assert select_checkpoint(res2.run_dir, "best").name == "ckpt_000000002000"
