"""The sweep service's bookkeeping without Ray: what it submits, what it refuses (naming the body's field), and
how a sweep's trials become job records (a fake cluster answers for Ray; sweep.json is written by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from api.services.errors import Conflict
from api.services.jobs import JobService
from api.services.sweeps import SweepService, rest_field
from api.settings import Settings
from rayac.checkpoint import atomic_write_text
from rayac.config import Config, ConfigError

BASE = {"env": {"id": "CartPole-v1", "num_envs": 4}, "run": {"stop": {"total_env_steps": 4000}, "eval_interval_steps": 2000}}  # fmt: skip
SEARCH = {"optim.lr": "loguniform(1e-4,1e-2)"}


class FakeRay:
    def __init__(self):
        self.submitted, self.stopped, self.status = [], [], "RUNNING"

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        return kwargs["submission_id"]

    def get_job_info(self, job_id):
        if not any(s["submission_id"] == job_id for s in self.submitted):
            raise RuntimeError(f"Job {job_id} does not exist")
        return SimpleNamespace(status=self.status, message=None, start_time=None)

    def stop_job(self, job_id):
        self.stopped.append(job_id)
        self.status = "STOPPED"

    def get_job_logs(self, job_id):
        return f"log of {job_id}\n"


class FakeCluster:
    def __init__(self, client, total=None):
        self._client, self.total = client, total or {"CPU": 4.0}
        self.owned_head, self.dashboard_url = None, "http://fake"

    def client(self):
        return self._client

    def total_resources(self):
        return self.total


def services(tmp_path, total=None):
    ray = FakeRay()
    settings = Settings(storage_dir=tmp_path)
    jobs = JobService(settings, FakeCluster(ray, total))
    return SweepService(settings, jobs), jobs, ray


def submit(sweeps, config=None, search=None, **options):
    options = {"samples": 2, "concurrent": 2, "metric": "eval/return_mean", "mode": "max", "scheduler": "none",
               "pbt_interval": 1000, "search_alg": "random", **options}  # fmt: skip
    return sweeps.submit(Config(**(config or BASE)), "s", search=search or SEARCH, **options)


def write_doc(rec, trials, state="running", best=None):
    sweep_dir = Path(rec.sweep_dir)
    doc = {"metric": "eval/return_mean", "mode": "max", "state": state, "best_trial": best, "trials": [
        {"id": tid, "config": {"optim.lr": 0.001}, "config_history": [{"env_steps": 0, "config": {"optim.lr": 0.001}}],
         "status": status, "best": None, "env_steps": 100, "run_dir": str(sweep_dir / "trials" / tid)}
        for tid, status in trials]}  # fmt: skip
    atomic_write_text(sweep_dir / "sweep.json", json.dumps(doc))


def test_a_sweep_is_one_ray_job_that_starts_from_its_spec(tmp_path):
    sweeps, _, ray = services(tmp_path)
    rec = submit(sweeps)
    call = ray.submitted[0]
    assert call["submission_id"] == rec.id and rec.id.startswith("sweep-")
    assert call["entrypoint"].endswith(f"sweep --resume {tmp_path.resolve()}/sweeps/{rec.id}")
    spec = json.loads((Path(rec.sweep_dir) / "spec.json").read_text())
    assert spec["search"] == ["optim.lr=loguniform(1e-4,1e-2)"] and spec["samples"] == 2
    assert spec["base"]["run"]["stop"]["total_env_steps"] == 4000
    assert call["runtime_env"]["env_vars"]["RAYAC_STOP_FILE"] == str(sweeps.stop_path(rec.id))
    assert sweeps.get(rec.id).status == "running"


@pytest.mark.parametrize(
    ("search", "options", "field", "words"),
    [
        (
            {"optim.lrx": "uniform(0.1,0.2)"},
            {},
            "search.optim.lrx",
            "unknown field (did you mean 'optim.lr'?)",
        ),
        ({"optim.lr": "loguniform(0,0.1)"}, {}, "search.optim.lr", "bounds must be > 0"),
        ({"optim.lr": "loguniform(1e-5,5)"}, {}, "search.optim.lr", "less than or equal to 1"),
        ({"optim.lr": "uniform(a,b)"}, {}, "search.optim.lr", "'a' is not a number"),
        ({"optim.lr": "choice(fast,slow)"}, {}, "search.optim.lr", "valid number"),
        ({"env.num_envs": "choice(2,4)"}, {"scheduler": "pbt"}, "search.env.num_envs", "PBT perturbs only"),
        (
            {"optim.lr": "uniform(0.001,0.002)"},
            {"search_alg": "grid"},
            "search.optim.lr",
            "grid takes choice",
        ),
    ],
)
def test_a_bad_space_is_refused_naming_the_bodys_field(tmp_path, search, options, field, words):
    sweeps, _, ray = services(tmp_path)
    with pytest.raises(ConfigError) as err:
        submit(sweeps, search=search, **options)
    assert err.value.field == field and words in err.value.message, str(err.value)
    assert not ray.submitted and not sweeps.store.newest(10)


def test_options_and_the_base_config_are_named_as_the_body_names_them(tmp_path):
    sweeps, _, _ = services(tmp_path)
    no_budget = {
        **BASE,
        "run": {"eval_interval_steps": 2000, "stop": {"total_env_steps": None, "time_limit_s": 60}},
    }
    with pytest.raises(ConfigError) as err:
        submit(sweeps, config=no_budget)
    assert err.value.field == "config.run.stop.total_env_steps"
    with pytest.raises(ConfigError) as err:
        submit(sweeps, config={**BASE, "run": {"stop": {"total_env_steps": 4000}, "eval_interval_steps": 0}})
    assert err.value.field == "metric"
    assert rest_field("--pbt-interval", []) == "pbt_interval"


def test_admission_counts_every_concurrent_trial(tmp_path):
    sweeps, _, ray = services(tmp_path, total={"CPU": 4.0})
    with pytest.raises(ConfigError) as err:
        submit(sweeps, concurrent=5)  # 5 trials × a driver of 1 CPU > 4
    assert (
        err.value.field == "concurrent"
        and "needs 5 CPU" in err.value.message
        and "has 4" in err.value.message
    )
    with pytest.raises(ConfigError) as err:  # 2 trials × (1 + 2 workers) = 6 > 4
        submit(sweeps, config={**BASE, "resources": {"num_workers": 2}}, concurrent=2)
    assert err.value.field == "concurrent" and "needs 6 CPU" in err.value.message
    with pytest.raises(ConfigError) as err:  # not even one trial fits
        submit(sweeps, config={**BASE, "resources": {"num_workers": 4}}, concurrent=1)
    assert err.value.field == "config.resources.num_workers"
    assert not ray.submitted
    submit(sweeps, concurrent=4)
    assert len(ray.submitted) == 1


def test_trials_become_jobs_once_and_follow_the_sweep(tmp_path):
    sweeps, jobs, ray = services(tmp_path)
    rec = submit(sweeps)
    write_doc(rec, [("t1_00000", "running"), ("t1_00001", "pending")])
    for _ in range(3):  # the watcher and every read register; each trial is one job record, however often
        sweeps.watch_once()
        trials = sweeps.sync_trials(sweeps.get(rec.id))
    job_ids = [t["job_id"] for t in trials]
    assert job_ids == [f"{rec.id}-t1_00000", f"{rec.id}-t1_00001"]
    assert sorted(j.id for j in jobs.store.all()) == job_ids
    job = jobs.get(job_ids[0])
    assert job.status == "running" and job.run_dir == f"{rec.sweep_dir}/trials/t1_00000"
    assert job.config["optim"]["lr"] == 0.001 and job.config["run"]["run_dir"] == job.run_dir
    with pytest.raises(Conflict, match="trial of sweep"):
        jobs.request_stop(job_ids[0])
    assert jobs.logs(job_ids[0], tail_bytes=100)[0] == f"log of {rec.id}\n"  # the sweep driver's log

    write_doc(rec, [("t1_00000", "succeeded"), ("t1_00001", "stopped_early")], state="finished")
    assert [jobs.get(i).status for i in job_ids] == ["succeeded", "stopped"]
    ray.status = "SUCCEEDED"
    assert sweeps.get(rec.id).status == "succeeded"


def test_a_stopped_sweep_ends_every_unfinished_trial_as_stopped(tmp_path):
    sweeps, jobs, ray = services(tmp_path)
    rec = submit(sweeps)
    write_doc(rec, [("t1_00000", "running"), ("t1_00001", "succeeded"), ("t1_00002", "pending")])
    # a trial that ended because the stop file asked it to, before the driver died: stopped too
    run_dir = Path(rec.sweep_dir) / "trials" / "t1_00001"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({"stop_reason": "interrupted"}))
    sweeps.request_stop(rec.id)
    assert ray.stopped == [rec.id] and sweeps.stop_path(rec.id).exists()
    after = sweeps.get(rec.id)
    assert after.status == "stopped"
    assert [t["status"] for t in sweeps.sync_trials(after)] == ["stopped"] * 3
    assert [j.status for j in jobs.store.all()] == ["stopped"] * 3
    with pytest.raises(Conflict, match="already stopped"):
        sweeps.request_stop(rec.id)


def test_a_sweep_ray_forgot_ends_with_a_reason(tmp_path, monkeypatch):
    import api.services.sweeps as module

    sweeps, _, ray = services(tmp_path)
    rec = submit(sweeps)
    write_doc(rec, [("t1_00000", "running")])
    ray.submitted.clear()  # a new cluster: it never heard of the sweep
    monkeypatch.setattr(module, "AGENT_WAIT_S", -60.0)
    after = sweeps.get(rec.id)
    assert after.status == "failed" and "no longer knows this sweep" in after.error
    assert f"rayac sweep --resume {rec.sweep_dir}" in after.error
    assert sweeps.sync_trials(after)[0]["status"] == "failed"


def test_the_best_trial_is_found_by_its_sweep(tmp_path):
    from api.services.errors import NotFound

    sweeps, _, _ = services(tmp_path)
    rec = submit(sweeps)
    write_doc(rec, [("t1_00000", "running")])
    with pytest.raises(NotFound, match="no best trial yet"):
        sweeps.best_job_id(rec.id)
    write_doc(rec, [("t1_00000", "running"), ("t1_00001", "running")], best="t1_00001")
    assert sweeps.best_job_id(rec.id) == f"{rec.id}-t1_00001"
    with pytest.raises(NotFound):
        sweeps.get("sweep-000000000000")


@pytest.mark.parametrize(
    ("search", "options", "field", "words"),
    [
        ({"resources.num_workers": "choice(0,100)"}, {}, "search.resources.num_workers",
         "a trial with resources.num_workers=100: config.resources.num_workers: 100 rollout workers asked"),
        ({"env.id": "choice(CartPole-v1, os:system)"}, {}, "search.env.id", "does not allow"),
        ({"resources.num_workers": "randint(0,4)"}, {"concurrent": 2}, "concurrent", "needs 8 CPU"),
    ],
)  # fmt: skip
def test_searched_values_get_no_way_around_the_caps(tmp_path, search, options, field, words):
    """Each listed value and each end of a range is checked as a job's config, and admission counts the largest
    trial the space can make (randint(0,4): at most 3 workers, so 2 × (1 + 3) CPUs)."""
    sweeps, _, ray = services(tmp_path, total={"CPU": 4.0})
    with pytest.raises(ConfigError) as err:
        submit(sweeps, search=search, **options)
    assert err.value.field == field and words in err.value.message, str(err.value)
    assert not ray.submitted


def test_a_failed_sweep_fails_its_unfinished_trials_with_the_reason(tmp_path):
    sweeps, jobs, ray = services(tmp_path)
    rec = submit(sweeps)
    write_doc(rec, [("t1_00000", "succeeded"), ("t1_00001", "running")])
    assert [t["status"] for t in sweeps.sync_trials(sweeps.get(rec.id))] == ["succeeded", "running"]
    ray.status = "FAILED"
    after = sweeps.get(rec.id)
    assert after.status == "failed" and f"log of {rec.id}" in after.error  # the driver log's tail
    ended = {j.id: j for j in jobs.store.all()}
    assert ended[f"{rec.id}-t1_00000"].status == "succeeded"
    failed = ended[f"{rec.id}-t1_00001"]
    assert failed.status == "failed" and f"log of {rec.id}" in failed.error
