"""Admission bounds what a job consumes (issue 20, item 2): memory from every per-step array a rollout and the
learner hold, the network's size, CPUs a worker really uses; and the same estimate guards `rayac train`."""

from __future__ import annotations

import pytest

import rayac
import rayac.budget as budget
from rayac.cli import main
from rayac.config import Config, ConfigError, list_presets, load_preset, parse_config
from rayac.envs import check_config_against_env
from tests.unit.test_job_submission import service


def estimate(**sections):
    cfg = Config.model_validate(sections)
    return budget.estimate_memory(cfg, check_config_against_env(cfg))


def test_the_estimate_counts_what_a_run_holds_not_only_observations():
    big = estimate(env={"num_envs": 4096}, algo={"rollout_steps": 10_000})
    # the measurement: ~2.1 kB per CartPole env step, ~85 GB for 4096 envs × 10,000 steps
    assert 1_900 <= big.learner_sample_bytes <= 2_600 and 75 * 2**30 <= big.total <= 100 * 2**30
    small = estimate()
    assert small.total < 16 * 2**20 and small.params == 9_155
    wide = estimate(model={"hidden_sizes": [65536, 65536]})  # measured on the meta device: nothing allocated
    assert wide.params > 4 * 10**9


def test_impala_counts_its_learner_batch_and_the_rollouts_queued_for_it():
    def impala(workers: int, **algo):
        return estimate(algo={"name": "impala", **algo}, resources={"num_workers": workers})

    base = impala(2)
    step = base.steps_per_worker * base.rollout_step_bytes  # one rollout
    # each rollout queued (or waiting for room, or finished in a worker's object store) is one more rollout held
    assert impala(2, rollout_queue_size=1004).learner_bytes - base.learner_bytes == 1000 * step
    assert impala(3).learner_bytes - base.learner_bytes == step
    # the learner's update holds learner_batch_rollouts rollouts, not one per worker as A2C's does
    batch = impala(2, learner_batch_rollouts=9).learner_bytes - base.learner_bytes
    assert batch == 8 * base.steps_per_worker * base.learner_sample_bytes
    assert impala(0).learner_bytes < base.learner_bytes  # in process: nothing queued


@pytest.mark.parametrize(
    ("cfg", "total", "field", "words"),
    [
        ({"env": {"num_envs": 4096}, "algo": {"rollout_steps": 10_000}}, None, "config.env.num_envs",
         "RAYAC_MAX_ROLLOUT_BYTES"),
        ({"model": {"hidden_sizes": [65536, 65536]}}, None, "config.model.hidden_sizes", "RAYAC_MAX_POLICY_PARAMS"),
        ({"resources": {"num_workers": 64, "worker_cpus": 0.0625}}, {"CPU": 4}, "config.resources.num_workers",
         "needs 64 CPU (num_workers 64 × worker_cpus 0.0625, counted as 1 (RAYAC_MIN_WORKER_CPUS))"),
    ],
)  # fmt: skip
def test_the_service_refuses_what_it_could_not_hold(tmp_path, cfg, total, field, words):
    jobs, fake = service(tmp_path, total=total)
    with pytest.raises(ConfigError) as exc:
        jobs.submit(Config.model_validate(cfg), None)
    assert exc.value.field == field and words in exc.value.message, exc.value
    assert not fake.submitted and jobs.store.all() == []


def test_a_big_rollout_is_refused_with_its_numbers(tmp_path):
    jobs, _ = service(tmp_path)
    with pytest.raises(ConfigError) as exc:
        jobs.validate(Config(env={"num_envs": 4096}, algo={"rollout_steps": 10_000}))
    assert "84.9" in exc.value.message and "40,960,000 env steps" in exc.value.message


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_every_preset_is_admitted(tmp_path, name):
    jobs, _ = service(tmp_path, total={"CPU": 64})
    jobs.validate(parse_config(load_preset(name)))


def test_rayac_train_refuses_a_run_its_machine_cannot_hold(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(budget, "machine_memory_bytes", lambda: 2**30)
    run_dir = tmp_path / "run"
    code = main(
        ["train", "--set", "env.num_envs=512", "--set", "algo.rollout_steps=1000", "--run-dir", str(run_dir)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert (
        err.startswith("rayac: error: env.num_envs: the run would need about") and "1.00 GiB of memory" in err
    )
    assert not run_dir.exists()
    with pytest.raises(ConfigError):  # the library entry point too
        rayac.train(
            rayac.build_config(overrides=["env.num_envs=512", "algo.rollout_steps=1000"]), run_dir=run_dir
        )
