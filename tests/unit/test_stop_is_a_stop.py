"""A stop is a stop (issue 20, item 1): the stop file the service writes before asking Ray reaches a driver that
Ray starts late (still preparing its runtime env when the stop came) and one that Ray's signal missed. No Ray."""

from __future__ import annotations

import json

import pytest

import rayac
from rayac.cli import main
from rayac.stopfile import STOP_FILE_ENV
from tests.unit.test_job_submission import service

TINY = ["--env", "CartPole-v1", "--steps", "4000", "--no-progress", "--set", "run.tensorboard=false",
        "--set", "run.eval_interval_steps=0", "--set", "env.num_envs=2"]  # fmt: skip


def test_a_driver_started_after_its_stop_builds_nothing_and_never_trains(tmp_path, monkeypatch):
    stop = tmp_path / "job.stop"
    stop.touch()
    monkeypatch.setenv(STOP_FILE_ENV, str(stop))
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--run-dir", str(run_dir)]) == 130
    assert not run_dir.exists()  # no config, no metrics, no checkpoint: nothing was built


def test_a_stop_file_that_appears_mid_run_ends_it_at_the_next_step(tmp_path, monkeypatch):
    stop = tmp_path / "job.stop"
    monkeypatch.setenv(STOP_FILE_ENV, str(stop))
    cfg = rayac.build_config(overrides=["env.num_envs=2", "run.tensorboard=false", "run.progress_bar=false",
                                        "run.eval_interval_steps=0", "run.stop.total_env_steps=100000"])  # fmt: skip
    at = []

    def stop_after_first_record(runner, record):
        at.append(runner.iterations)
        stop.touch()

    result = rayac.train(cfg, run_dir=tmp_path / "run", callbacks=[stop_after_first_record])
    assert result.stop_reason == "interrupted" and result.iterations == at[0] + 1 and len(at) == 2
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["time/iteration"] == at[0] + 1 < 100
    assert result.checkpoint is not None  # it ends as SIGTERM does: with a checkpoint


def test_the_service_writes_the_stop_file_before_it_asks_ray(tmp_path):
    jobs, fake = service(tmp_path)
    rec = jobs.submit(rayac.Config(), "soon stopped")
    env = fake.submitted[0]["runtime_env"]["env_vars"]
    stop_file = jobs.stop_path(rec.id)
    assert env[STOP_FILE_ENV] == str(stop_file) and not stop_file.exists()
    seen = []
    fake.get_job_info = lambda job_id: type("Info", (), {"status": "PENDING", "message": None})()
    fake.stop_job = lambda job_id: seen.append(stop_file.exists())
    jobs.request_stop(rec.id)
    assert seen == [True]


@pytest.mark.parametrize("why", ["placement", "time_limit"])
def test_the_services_own_stops_write_it_too(tmp_path, why):
    jobs, fake = service(tmp_path, placement_timeout_s=0.01, time_limit_grace_s=0)
    cfg = rayac.Config(run={"stop": {"time_limit_s": 0.01}}) if why == "time_limit" else rayac.Config()
    rec = jobs.submit(cfg, why)
    status = "PENDING" if why == "placement" else "RUNNING"
    fake.get_job_info = lambda job_id: type(
        "Info", (), {"status": status, "message": None, "start_time": 1}
    )()
    fake.stop_job = lambda job_id: None
    import time

    time.sleep(0.05)
    assert jobs.get(rec.id).status in ("failed", "stopped") and jobs.stop_path(rec.id).exists()
