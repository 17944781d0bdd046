"""What the service hands to Ray's job submission (a fake client records it; no Ray needed)."""

from types import SimpleNamespace

import pytest

from api.services.jobs import JobService
from rayac.config import Config, ConfigError


class FakeJobs:
    def __init__(self):
        self.submitted = []

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        return kwargs["submission_id"]


def service(tmp_path, **settings):
    fake = FakeJobs()
    cfg = SimpleNamespace(storage_dir=tmp_path, train_command=None, allowed_env_modules=[], **settings)
    return JobService(cfg, lambda _: fake), fake


def test_a2c_driver_is_pinned_where_the_learner_should_run(tmp_path):
    jobs, fake = service(tmp_path)
    rec = jobs.submit(Config(resources={"learner_resources": {"learner": 1}}), "pinned")
    call = fake.submitted[0]
    assert call["entrypoint_resources"] == {"learner": 1} and call["submission_id"] == rec.id
    assert f"--run-dir {tmp_path.resolve()}/runs/{rec.id}" in call["entrypoint"]
    assert jobs.store.get(rec.id).status == "pending"


def test_a3c_pins_its_parameter_server_not_the_driver(tmp_path):
    jobs, fake = service(tmp_path)
    jobs.submit(Config(algo={"name": "a3c"}, resources={"learner_resources": {"learner": 1}}), None)
    assert fake.submitted[0]["entrypoint_resources"] is None


def test_module_env_ids_need_the_allow_list(tmp_path):
    jobs, fake = service(tmp_path)
    with pytest.raises(ConfigError) as exc:
        jobs.submit(Config(env={"id": "mypkg.envs:Thing-v0"}), None)
    assert exc.value.field == "config.env.id" and not fake.submitted


def test_submission_waits_for_a_fresh_heads_job_agent(tmp_path, monkeypatch):
    import api.services.jobs as jobs_module

    monkeypatch.setattr(jobs_module.time, "sleep", lambda s: None)
    jobs, fake = service(tmp_path)
    real_submit, calls = fake.submit_job, []

    def flaky(**kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("Request failed with status code 500: No available agent to submit job")
        return real_submit(**kwargs)

    fake.submit_job = flaky
    rec = jobs.submit(Config(), None)
    assert len(calls) == 3 and fake.submitted[0]["submission_id"] == rec.id
