"""Short real training runs with num_workers=0 (no Ray): determinism, checkpoints, resume, presets.

Not unit tests: each trains for real (a few thousand env steps), so they live here, beside the learning tests."""

import json

import numpy as np
import pytest
import torch

import rayac
from rayac.checkpoint import checkpoint_dirs, load_checkpoint
from rayac.cli import main
from rayac.config import build_config, list_presets
from rayac.metrics import read_metrics
from tests.runs import quiet, resume_run, tiny_run

MEASURED = {"time/elapsed_s", "time/sps", "time/sample_s", "time/learn_s"}


def test_same_seed_same_metrics(tmp_path):
    a = tiny_run(tmp_path, "a", "env.seed=7")
    b = tiny_run(tmp_path, "b", "env.seed=7")
    c = tiny_run(tmp_path, "c", "env.seed=8")
    strip = lambda recs: [{k: v for k, v in r.items() if k not in MEASURED} for r in recs]  # noqa: E731
    ra, rb, rc = (strip(read_metrics(f"{r.run_dir}/metrics.jsonl")) for r in (a, b, c))
    assert len(ra) > 10 and ra == rb
    assert ra != rc


def test_checkpoint_round_trip_and_load_policy(tmp_path):
    res = tiny_run(tmp_path, "run")
    ckpt = load_checkpoint(res.run_dir)
    assert ckpt.state["env_steps"] == res.env_steps and ckpt.state["version"] == res.version
    assert {p.name for p in ckpt.path.iterdir()} == {
        "policy.safetensors",
        "optimizer.pt",
        "config.json",
        "spaces.json",
        "state.json",
        "sampler.pkl",
    }
    policy = rayac.load_policy(res.run_dir)
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    actions = policy.act(obs, deterministic=True)
    assert actions.shape == (16,) and set(actions.tolist()) <= {0, 1}
    with torch.no_grad():
        logits = ckpt.build_policy().policy_head(ckpt.build_policy().actor_body(torch.as_tensor(obs)))
    np.testing.assert_array_equal(actions, logits.argmax(-1).numpy())
    with pytest.raises(ValueError, match="shape"):
        policy.act(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        policy.act(np.full((1, 4), np.nan))
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def test_resume_continues_counters_and_optimizer(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "--preset", "a2c_cartpole", "--run-dir", str(run_dir), "--no-progress"]
    assert main(args + ["--steps", "2000", "--set", "run.stop.target_return=null"]) == 0
    first = load_checkpoint(run_dir)
    steps_1, version_1 = first.state["env_steps"], first.state["version"]
    adam_steps_1 = float(first.optimizer_state()["state"][0]["step"])
    assert adam_steps_1 == version_1

    assert (
        main(
            [
                "train",
                "--resume",
                str(run_dir),
                "--steps",
                "4000",
                "--no-progress",
                "--set",
                "run.stop.target_return=null",
            ]
        )
        == 0
    )
    second = load_checkpoint(run_dir)
    assert second.state["env_steps"] >= 4000
    per_update = first.cfg.env.num_envs * first.cfg.algo.rollout_steps
    assert second.state["version"] == version_1 + (second.state["env_steps"] - steps_1) // per_update
    assert float(second.optimizer_state()["state"][0]["step"]) == second.state["version"]
    records = read_metrics(run_dir / "metrics.jsonl")
    steps = [r["time/env_steps"] for r in records]
    assert steps == sorted(steps) and steps_1 + per_update in steps  # the counter went on, not back to zero
    assert len(checkpoint_dirs(run_dir)) <= 3


def test_resume_without_workers_equals_a_straight_run_bit_for_bit(tmp_path):
    """20k steps, then --resume to 40k == 40k straight: the envs mid-episode, the action generator, the
    evaluator's seeds and the 100-episode window all continue (a2c_cartpole: 80 steps an update, 20k = 250)."""
    no_target = "run.stop.target_return=null"
    straight = tiny_run(tmp_path, "straight", no_target, "run.eval_interval_steps=5000", steps=40_000)
    tiny_run(tmp_path, "resumed", no_target, "run.eval_interval_steps=5000", steps=20_000)
    assert (tmp_path / "resumed" / "checkpoints" / "ckpt_000000020000" / "sampler.pkl").is_file()
    resumed = resume_run(tmp_path / "resumed", "run.stop.total_env_steps=40000")
    assert resumed.env_steps == straight.env_steps == 40_000

    a, b = load_checkpoint(straight.run_dir), load_checkpoint(resumed.run_dir)
    assert a.weights.keys() == b.weights.keys()
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert a.state["episode_window"] == b.state["episode_window"] and len(a.state["episode_window"]) == 100
    strip = lambda recs: [{k: v for k, v in r.items() if k not in MEASURED} for r in recs]  # noqa: E731
    ra = strip(read_metrics(tmp_path / "straight" / "metrics.jsonl"))
    rb = strip(read_metrics(tmp_path / "resumed" / "metrics.jsonl"))
    assert len(ra) == 500 and ra == rb  # every record, evaluations included, to the last digit


def test_resume_applies_the_configs_learning_rate(tmp_path):
    tiny_run(tmp_path, "run", "run.stop.target_return=null", steps=2000)
    before = load_checkpoint(tmp_path / "run")
    assert before.optimizer_state()["param_groups"][0]["lr"] == 0.006  # a2c_cartpole's
    resume_run(tmp_path / "run", "run.stop.total_env_steps=4000", "optim.lr=0.0001")
    after = load_checkpoint(tmp_path / "run")
    assert (
        after.state["version"] > before.state["version"]
    )  # it trained, at the new rate (Adam's step uses it)
    assert [g["lr"] for g in after.optimizer_state()["param_groups"]] == [0.0001, 0.0001]
    assert float(after.optimizer_state()["state"][0]["step"]) == after.state["version"]  # moments kept


def test_resume_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "run.run_dir" in capsys.readouterr().err


def test_run_writes_all_sinks(tmp_path):
    cfg = build_config(
        preset="a2c_cartpole",
        overrides=["run.stop.total_env_steps=2000", "run.progress_bar=false", "run.eval_interval_steps=1000"],
    )
    res = rayac.train(cfg, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    header = (run / "progress.csv").read_text().splitlines()[0].split(",")
    assert "eval/return_mean" in header and "train/policy_loss" in header
    assert list((run / "tb").glob("events.out.tfevents.*"))
    result = json.loads((run / "result.json").read_text())
    assert result["env_steps"] == res.env_steps >= 2000


def test_metrics_interval_writes_one_record_per_span_every_evaluation_and_the_last_update(tmp_path):
    """run.metrics_interval_steps: a record at the first update past each multiple, at every evaluation and at the
    end, instead of one per update; progress.csv keeps every row through the rewrite the first eval column causes."""
    res = tiny_run(tmp_path, "run", "run.metrics_interval_steps=1000", "run.eval_interval_steps=2500",
                   "run.stop.target_return=null", steps=6000)  # fmt: skip
    records = read_metrics(f"{res.run_dir}/metrics.jsonl")
    per_update = 16 * 5  # a2c_cartpole: 16 envs x 5 steps
    updates = [per_update * i for i in range(1, res.iterations + 1)]
    first_past = lambda m: min(s for s in updates if s >= m)  # noqa: E731
    expected = {first_past(m) for m in range(1000, res.env_steps + 1, 1000)}
    expected |= {first_past(m) for m in (2500, 5000)} | {updates[-1]}
    train_records = [r for r in records if "train/policy_loss" in r]
    assert [r["time/env_steps"] for r in train_records] == sorted(expected)
    assert res.iterations > 3 * len(train_records)  # most updates were not written
    evals = [r["time/env_steps"] for r in records if "eval/return_mean" in r]
    assert evals[:2] == [first_past(2500), first_past(5000)] and evals[-1] == res.env_steps
    assert all(r["time/sps"] > 0 for r in train_records)
    rows = (tmp_path / "run" / "progress.csv").read_text().splitlines()
    assert len(rows) == 1 + len(records) and "eval/return_mean" in rows[0].split(",")
    # the rows written before the first eval column appeared survived the rewrite
    assert rows[1].split(",")[0] == str(records[0]["time/iteration"])


def test_a_run_stopped_between_metrics_records_still_writes_its_last_update(tmp_path):
    """Ctrl-C / a job's SIGTERM between two subsampled records: the last update's record is written, so the metrics
    end where the checkpoint does."""
    from rayac.checkpoint import load_checkpoint
    from rayac.runner import Runner
    from tests.runs import tiny_config

    runner = Runner(tiny_config("run.metrics_interval_steps=100000", "run.eval_interval_steps=0", steps=100_000),
                    run_dir=tmp_path / "run")  # fmt: skip
    real_step, calls = runner.algo.train_step, []

    def interrupted_on_the_seventh_update():
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real_step()

    runner.algo.train_step = interrupted_on_the_seventh_update
    res = runner.run()
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert res.stop_reason == "interrupted" and res.env_steps == 6 * 16 * 5
    assert [r["time/env_steps"] for r in records] == [res.env_steps] and "train/policy_loss" in records[0]
    assert load_checkpoint(res.run_dir).state["env_steps"] == res.env_steps


def test_a_stop_inside_the_sinks_or_an_evaluation_loses_no_record_and_writes_none_twice(tmp_path):
    """A stop (SIGTERM is a KeyboardInterrupt in `rayac train`) lands while a sink writes a record, or while the
    evaluation of a record's update runs: the records stay in order, the newest written last and exactly once."""
    from rayac.checkpoint import load_checkpoint
    from rayac.runner import Runner
    from tests.runs import tiny_config

    class StopWhileWriting:  # a sink after the files: the files have the record, then the stop arrives
        def write(self, record):
            if record["time/iteration"] == 10:
                raise KeyboardInterrupt

        def close(self):
            pass

    runner = Runner(tiny_config("run.metrics_interval_steps=400", "run.eval_interval_steps=0", steps=100_000),
                    run_dir=tmp_path / "sinks")  # fmt: skip
    make_sinks = runner._sinks

    def sinks():
        logger = make_sinks()
        logger.sinks.append(StopWhileWriting())
        return logger

    runner._sinks = sinks
    res = runner.run()
    steps = [r["time/env_steps"] for r in read_metrics(tmp_path / "sinks" / "metrics.jsonl")]
    assert res.stop_reason == "interrupted" and steps == [400, 800] and res.env_steps == 800
    rows = (tmp_path / "sinks" / "progress.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["5", "10"]

    runner = Runner(tiny_config("run.metrics_interval_steps=400", "run.eval_interval_steps=800", steps=100_000),
                    run_dir=tmp_path / "eval")  # fmt: skip

    def stopped_while_evaluating():
        raise KeyboardInterrupt

    runner.evaluate = stopped_while_evaluating
    res = runner.run()
    records = read_metrics(tmp_path / "eval" / "metrics.jsonl")
    assert res.stop_reason == "interrupted" and [r["time/env_steps"] for r in records] == [400, 800]
    assert "train/policy_loss" in records[-1] and load_checkpoint(res.run_dir).state["env_steps"] == 800


def test_a_one_off_metric_of_a_skipped_update_goes_into_the_next_record_written(tmp_path):
    """Subsampled metrics keep events: a key only one update reported (A3C's a3c/ps_rollback_updates after a
    resync) is carried into the next record written, not dropped with its update's record."""
    from rayac.runner import Runner
    from tests.runs import tiny_config

    runner = Runner(tiny_config("run.metrics_interval_steps=100000", "run.eval_interval_steps=0", steps=800),
                    run_dir=tmp_path / "run")  # fmt: skip
    real_step, calls = runner.algo.train_step, []

    def an_event_on_the_third_update():
        calls.append(1)
        result = real_step()
        if len(calls) == 3:
            result.metrics["test/event"] = 7.0
        return result

    runner.algo.train_step = an_event_on_the_third_update
    res = runner.run()
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/policy_loss" in r]
    assert res.iterations == 10 and [r["time/iteration"] for r in records] == [10]
    assert records[0]["test/event"] == 7.0


def test_a3c_rollbacks_reach_subsampled_metrics_and_whole_run_counts_survive_a_resume(tmp_path):
    """A shard restart's a3c/ps_rollback_updates is written although its update's record was skipped;
    a3c/pushes_total counts the whole run: the driver sums the workers' reports and a --resume goes on from the
    checkpoint's, as does a3c/ps_restarts (a resume is not a restart)."""
    from rayac.a3c.server import ParameterServer
    from rayac.runner import Runner
    from tests.runs import resume_run, tiny_config

    a3c = ("resources.num_workers=0", "algo.ps_shards=2", "run.eval_interval_steps=0", "run.eval_episodes=1")
    runner = Runner(tiny_config(*a3c, "run.metrics_interval_steps=100000", preset="a3c_cartpole", steps=400),
                    run_dir=tmp_path / "run")  # fmt: skip
    real_step, calls = runner.algo.train_step, []

    def restart_before_the_fourth_update():
        calls.append(1)
        if len(calls) == 4:  # as after shard 1's process died: Ray re-runs __init__
            algo = runner.algo
            algo.shards[1] = ParameterServer(algo.cfg, algo.spec, shard=1, num_shards=2, restarted=True)
        return real_step()

    runner.algo.train_step = restart_before_the_fourth_update
    res = runner.run()
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "a3c/pushes" in r]
    assert len(records) == 1 and records[0]["time/iteration"] == res.iterations > 4
    assert records[0]["a3c/ps_rollback_updates"] >= 0 and records[0]["a3c/ps_restored_version"] >= 0
    first_total = records[0]["a3c/pushes_total"]
    assert first_total == res.iterations  # one push per in-process step, none lost to the restart's count
    assert records[0]["a3c/ps_restarts"] == 1

    resumed = resume_run(tmp_path / "run", "run.stop.total_env_steps=800", "run.metrics_interval_steps=0")
    later = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "a3c/pushes" in r][1:]
    assert [r["a3c/pushes_total"] for r in later] == list(range(first_total + 1, resumed.iterations + 1))
    assert later and all(r["a3c/ps_restarts"] == 1 for r in later)


@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_every_preset_trains_briefly(tmp_path, preset):
    overrides = quiet("run.stop.total_env_steps=1500", "resources.num_workers=0")
    # an untrained Atari policy's full games take minutes to evaluate: one short game
    if preset.endswith(("pong", "breakout")):
        overrides += ["run.eval_episodes=1", "env.max_episode_steps=200"]
    cfg = build_config(preset=preset, overrides=overrides)
    res = rayac.train(cfg, run_dir=tmp_path / preset)
    assert res.env_steps >= 1500 and res.eval_return is not None and np.isfinite(res.eval_return)
    policy = rayac.load_policy(res.run_dir)
    assert policy.act(np.zeros((1, *policy.spec.obs_shape), np.float32)).shape[0] == 1


def test_last_record_reads_the_tail_and_ignores_a_partial_line(tmp_path):
    from rayac.metrics import last_record

    path = tmp_path / "metrics.jsonl"
    assert last_record(path) is None
    path.write_text("".join(json.dumps({"i": i, "pad": "x" * 100}) + "\n" for i in range(2000)) + '{"i": 20')
    assert last_record(path, tail_bytes=4096)["i"] == 1999


def test_a_sampler_state_that_no_longer_loads_resumes_on_fresh_episodes(tmp_path, caplog):
    tiny_run(tmp_path, "run", "run.stop.target_return=null", steps=1000)
    ckpt = checkpoint_dirs(tmp_path / "run")[-1]
    (ckpt / "sampler.pkl").write_bytes(b"not a pickle")
    resumed = resume_run(tmp_path / "run", "run.stop.total_env_steps=2000")
    assert resumed.env_steps >= 2000
    assert "could not restore the rollout workers' envs" in caplog.text
