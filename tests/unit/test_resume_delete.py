"""Resume and delete through the service (issue 20, item 12): a finished job continues from its last checkpoint as
a new job on the same run directory (`rayac train --resume` with the overrides), and a finished job is deleted with
its files; a running one is refused both. In-process, a fake Ray that records submissions."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from tests.unit.test_checkpoint_rotation import trained_run  # noqa: F401 (a fixture)
from tests.unit.test_dashboard_routes import AUTH, TOKEN, add_job
from tests.unit.test_idempotent_submit import CountingCluster


@pytest.fixture
def setup(tmp_path, trained_run):  # noqa: F811
    cluster = CountingCluster()
    app = create_app(Settings(storage_dir=tmp_path / "storage", api_token=TOKEN), cluster=cluster)
    run = shutil.copytree(trained_run, app.state.jobs.storage / "runs" / "job-a")
    add_job(app, run, name="a")
    add_job(app, tmp_path / "elsewhere", name="live", status="running")
    with TestClient(app, headers=AUTH) as c:
        yield c, app, cluster.ray, run


def test_a_finished_job_resumes_as_a_new_job_on_its_run(setup):
    c, app, ray, run = setup
    resp = c.post("/v1/jobs/job-a/resume", json={"total_env_steps": 800, "overrides": ["optim.lr=0.001"]})
    assert resp.status_code == 201, resp.text
    new = resp.json()
    assert new["id"] != "job-a" and new["name"] == "a (resumed)" and new["config"]["optim"]["lr"] == 0.001
    assert new["config"]["run"]["stop"]["total_env_steps"] == 800 and new["config"]["run"]["run_dir"] == str(
        run
    )
    call = ray.submitted[-1]
    assert call == new["id"]
    rec = app.state.jobs.store.get(new["id"])
    assert rec.run_dir == str(run)
    again = c.post("/v1/jobs/job-a/resume", json={})  # the run is already being continued
    assert again.status_code == 409 and "already being continued" in again.json()["detail"]


def test_the_resumed_driver_runs_train_resume_with_the_overrides(tmp_path, trained_run):  # noqa: F811
    from tests.unit.test_job_submission import service

    jobs, fake = service(tmp_path)
    run = shutil.copytree(trained_run, tmp_path / "runs" / "job-a")
    from api.services.lifecycle import resume_job
    from api.services.store import JobRecord

    jobs.store.insert(JobRecord("job-a", "a", "failed", {}, str(run), 0.0, 0.0, "the cluster went away"))
    rec = resume_job(jobs, "job-a", total_env_steps=900, overrides=["algo.ent_coef=0.01"])
    entry = fake.submitted[-1]["entrypoint"]
    assert f"train --resume {run} --no-progress" in entry and fake.submitted[-1]["submission_id"] == rec.id
    assert "--set algo.ent_coef=0.01 --set run.stop.total_env_steps=900" in entry


@pytest.mark.parametrize(
    ("job", "body", "code", "words"),
    [("job-live", {}, 409, "only a finished job"), ("job-a", {"overrides": ["algo.gamma=1.5"]}, 422, "algo.gamma"),
     ("job-a", {"overrides": ["nonsense"]}, 422, "overrides"), ("job-nope", {}, 404, "no job")],
)  # fmt: skip
def test_what_cannot_resume_is_refused(setup, job, body, code, words):
    c, *_ = setup
    resp = c.post(f"/v1/jobs/{job}/resume", json=body)
    assert resp.status_code == code and words in resp.json()["detail"], resp.text
    if code == 422:
        assert resp.json()["errors"][0]["field"] == "overrides"


def test_delete_removes_a_finished_job_and_its_files_not_a_running_one(setup):
    c, app, _, run = setup
    assert c.delete("/v1/jobs/job-live").status_code == 409
    resumed = c.post("/v1/jobs/job-a/resume", json={}).json()["id"]
    assert c.delete("/v1/jobs/job-a").status_code == 204
    assert c.get("/v1/jobs/job-a").status_code == 404 and run.is_dir()  # the resumed job still uses the run
    assert c.delete(f"/v1/jobs/{resumed}").status_code == 409  # running
    app.state.jobs.store.update(resumed, status="succeeded")
    assert c.delete(f"/v1/jobs/{resumed}").status_code == 204
    assert not run.exists() and not list(run.parent.glob(".deleted-*"))
    assert not (app.state.jobs.storage / "jobs" / f"{resumed}.json").exists()
    assert [j["id"] for j in c.get("/v1/jobs").json()["jobs"]] == ["job-live"]
    assert c.delete("/v1/jobs/job-a").status_code == 404


def test_delete_never_removes_a_directory_outside_the_storage(setup, tmp_path):
    c, app, *_ = setup
    outside = tmp_path / "elsewhere-run"
    outside.mkdir()
    add_job(app, outside, name="outside")
    assert c.delete("/v1/jobs/job-outside").status_code == 204 and outside.is_dir()


def test_a_job_resumed_from_the_cli_shows_its_new_state(setup):
    """`rayac train --resume RUN_DIR` on a failed job's run: `running` while it trains, then its new result."""
    import json
    import os
    import time

    c, app, _, run = setup
    past = time.time() - 30
    app.state.jobs.store.set_final("job-a", status="failed", error="the Ray cluster went away")
    with app.state.jobs.store._db() as db:  # the record ended 30 s ago
        db.execute("UPDATE jobs SET updated_at=? WHERE id='job-a'", (past,))
    os.utime(run / "result.json", (past - 10, past - 10))
    with open(run / "metrics.jsonl", "a") as f:  # the CLI's session writes records now
        f.write(json.dumps({"time/iteration": 99, "time/env_steps": 9999}) + "\n")
    job = c.get("/v1/jobs/job-a").json()
    assert job["status"] == "running" and job["error"] is None, job
    assert [j["status"] for j in c.get("/v1/jobs").json()["jobs"] if j["id"] == "job-a"] == ["running"]
    (run / "result.json").write_text(json.dumps({"stop_reason": "total_env_steps"}))  # and it ends
    job = c.get("/v1/jobs/job-a").json()
    assert job["status"] == "succeeded" and job["error"] is None, job
    assert app.state.jobs.store.get("job-a").status == "succeeded"
