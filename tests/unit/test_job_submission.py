"""What the service hands to Ray's job submission, and its bookkeeping (a fake cluster records it; no Ray)."""

import asyncio
import json
from types import SimpleNamespace

import pytest

from api.services.errors import Unavailable
from api.services.jobs import JobService
from api.settings import Settings
from rayac.config import Config, ConfigError


class FakeJobs:
    def __init__(self):
        self.submitted = []

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        return kwargs["submission_id"]


class FakeCluster:
    def __init__(self, client, total=None):
        self._client, self.total = client, total or {"CPU": 4.0}
        self.connected, self.owned_head, self.dashboard_url = True, None, "http://fake"

    def client(self):
        return self._client

    def total_resources(self):
        return self.total


def service(tmp_path, total=None, **settings):
    fake = FakeJobs()
    cfg = Settings(storage_dir=tmp_path, **settings)
    return JobService(cfg, FakeCluster(fake, total)), fake


@pytest.mark.parametrize("algo", ["a2c", "a3c"])
def test_the_driver_is_never_pinned_the_learner_is(tmp_path, algo):
    """The driver (which writes the run's files) stays where Ray runs drivers; learner_resources go to the
    learner / parameter-server actors, which the driver makes (rayac.remote)."""
    jobs, fake = service(tmp_path, total={"CPU": 4, "learner": 1})
    rec = jobs.submit(Config(algo={"name": algo}, resources={"learner_resources": {"learner": 1}}), "pinned")
    call = fake.submitted[0]
    assert "entrypoint_resources" not in call and call["submission_id"] == rec.id
    assert f"--run-dir {tmp_path.resolve()}/runs/{rec.id}" in call["entrypoint"]
    assert jobs.store.get(rec.id).status == "pending"


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


@pytest.mark.parametrize(
    ("cfg", "settings", "total", "field", "words"),
    [
        ({"resources": {"num_workers": 9}}, {"max_workers_per_job": 8}, None, "config.resources.num_workers",
         "at most 8 per job"),
        ({"resources": {"num_workers": 5}}, {}, {"CPU": 4}, "config.resources.num_workers", "needs 5 CPU"),
        ({"algo": {"name": "a3c"}, "resources": {"num_workers": 4}}, {}, {"CPU": 4}, "config.resources.num_workers",
         "+ learner_cpus 1"),
        ({"resources": {"num_workers": 1, "learner_resources": {"gpu_box": 1}}}, {}, {"CPU": 4},
         "config.resources.learner_resources.gpu_box", "no node offers 'gpu_box'"),
        ({"env": {"num_envs": 64}, "algo": {"rollout_steps": 1000}}, {"max_rollout_bytes": 500_000}, None,
         "config.env.num_envs", "(num_envs × rollout steps = 64,000 env steps × 43 B)"),
    ],
)  # fmt: skip
def test_admission_refuses_jobs_that_can_never_run(tmp_path, cfg, settings, total, field, words):
    jobs, fake = service(tmp_path, total=total, **settings)
    with pytest.raises(ConfigError) as exc:
        jobs.submit(Config.model_validate(cfg), None)
    assert exc.value.field == field and words in exc.value.message, exc.value
    assert not fake.submitted and jobs.store.all() == []


def test_an_unreachable_cluster_leaves_no_job_behind(tmp_path):
    jobs, fake = service(tmp_path)

    def refuse(**_):
        raise ConnectionError("connection refused")

    fake.submit_job = refuse
    with pytest.raises(Unavailable):
        jobs.submit(Config(), "doomed")
    assert jobs.store.all() == [] and list((tmp_path / "jobs").iterdir()) == []


def test_the_run_directory_decides_when_ray_cannot(tmp_path):
    jobs, _ = service(tmp_path)
    done, cut, lost = (jobs.submit(Config(), n) for n in ("done", "cut", "lost"))
    for rec, reason in ((done, "total_env_steps"), (cut, "interrupted")):
        run = tmp_path / "runs" / rec.id
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"stop_reason": reason}))
    got = {r.name: jobs.finish_from_run_dir(r, "the cluster went away") for r in (done, cut, lost)}
    assert got["done"].status == "succeeded" and got["done"].error is None
    assert got["cut"].status == "stopped"
    assert got["lost"].status == "failed" and got["lost"].error == "the cluster went away"
    # a final status is never overwritten
    assert jobs.finish_from_run_dir(got["lost"], "again").error == "the cluster went away"


def test_job_list_pages_newest_first(tmp_path):
    jobs, _ = service(tmp_path)
    ids = [jobs.submit(Config(), f"j{i}").id for i in range(5)]
    first, cursor = jobs.page(limit=2, cursor=None)
    second, cursor2 = jobs.page(limit=2, cursor=cursor)
    third, cursor3 = jobs.page(limit=2, cursor=cursor2)
    assert [r.id for r in first + second + third] == ids[::-1] and cursor3 is None
    with pytest.raises(ConfigError) as exc:
        jobs.page(limit=2, cursor="garbage")
    assert exc.value.field == "cursor"


def test_a_policy_is_loaded_once_however_many_requests_miss_the_cache(tmp_path, monkeypatch):
    """Concurrent cache misses wait for one load, which runs off the event loop."""
    import threading

    import api.services.policies as policies_module
    from api.services.policies import PolicyService

    jobs, _ = service(tmp_path)
    rec = jobs.submit(Config(), "p")
    ckpt = tmp_path / "runs" / rec.id / "checkpoints" / "ckpt_1"
    monkeypatch.setattr(policies_module, "latest_checkpoint", lambda run_dir: ckpt)
    loads, loop_thread = [], []

    def slow_load(path):
        loads.append(threading.current_thread())
        import time

        time.sleep(0.2)
        return SimpleNamespace(path=path)

    monkeypatch.setattr(policies_module, "load_policy", slow_load)
    policies = PolicyService(jobs.settings, jobs)

    async def main():
        loop_thread.append(threading.current_thread())
        return await asyncio.gather(*(policies.batcher(rec.id) for _ in range(10)))

    batchers = asyncio.run(main())
    assert len(loads) == 1 and loads[0] is not loop_thread[0]
    assert all(b is batchers[0] for b in batchers)
