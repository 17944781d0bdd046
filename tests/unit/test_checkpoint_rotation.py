"""Checkpoint rotation never shows as an error (issue 20, item 4): act, the policy list and a policy's page while
a job writes and prunes checkpoints; one bad job never fails a list; every error is JSON; a 405 lists its
methods. In-process (no Ray: a fake cluster), a real trained run."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import rayac
from api.app import create_app
from api.settings import Settings
from rayac.checkpoint import CKPT_PREFIX, checkpoint_dirs, prune_checkpoints
from tests.unit.test_dashboard_routes import AUTH, TOKEN, FakeCluster, add_job

OBS = {"observations": [[0.0, 0.1, 0.0, -0.1]]}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    cfg = rayac.build_config(preset="a2c_cartpole", overrides=["run.stop.total_env_steps=400", "run.tensorboard=false",
                             "run.progress_bar=false", "run.eval_interval_steps=0", "env.num_envs=4"])  # fmt: skip
    return Path(rayac.train(cfg, run_dir=tmp_path_factory.mktemp("trained") / "run").run_dir)


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(storage_dir=tmp_path / "storage", api_token=TOKEN), cluster=FakeCluster())


@pytest.fixture
def client(app):
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as c:
        yield c


def rotating_copy(trained_run: Path, dest: Path) -> Path:
    shutil.copytree(trained_run, dest)
    return dest


def rotate(run_dir: Path, step: int) -> None:
    """What a training job does: write the next checkpoint (temp dir, rename), then prune to the newest one."""
    newest = checkpoint_dirs(run_dir)[-1]
    tmp = run_dir / "checkpoints" / f".tmp-{step}"
    shutil.copytree(newest, tmp)
    tmp.rename(run_dir / "checkpoints" / f"{CKPT_PREFIX}{step:012d}")
    prune_checkpoints(run_dir, 1)


def test_a_pruned_checkpoint_that_was_just_looked_up_is_found_again(app, client, trained_run, tmp_path):
    run = rotating_copy(trained_run, tmp_path / "run")
    add_job(app, run, name="r", status="running")
    first = client.get("/v1/policies/job-r")
    assert first.status_code == 200
    rotate(run, 10**9)  # within the second the service trusts its lookup
    again = client.get("/v1/policies/job-r")
    assert again.status_code == 200 and again.json()["checkpoint"] == f"{CKPT_PREFIX}{10**9:012d}", again.text
    act = client.post("/v1/policies/job-r/act", json=OBS)  # not loaded yet: the load finds the new one
    assert act.status_code == 200 and act.json()["actions"] in ([0], [1]), act.text
    assert client.get("/v1/jobs/job-r").status_code == 200


def test_act_list_and_describe_under_continuous_rotation_never_5xx(app, client, trained_run, tmp_path):
    run = rotating_copy(trained_run, tmp_path / "run")
    add_job(app, run, name="r", status="running")
    app.state.settings.policy_cache_size = 1
    add_job(app, rotating_copy(trained_run, tmp_path / "other"), name="other")  # evicts r from the cache
    done = threading.Event()

    def trainer():
        step = 10**6
        while not done.wait(0.02):  # 50 checkpoints a second: faster than any real job writes them
            step += 1
            rotate(run, step)

    thread = threading.Thread(target=trainer)
    thread.start()
    codes: list[tuple[str, int, str]] = []
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            for method, path, body in (("POST", "/v1/policies/job-r/act", OBS), ("POST", "/v1/policies/job-other/act",
                                       OBS), ("GET", "/v1/policies", None), ("GET", "/v1/policies/job-r", None),
                                       ("GET", "/v1/jobs/job-r", None), ("GET", "/v1/jobs", None)):  # fmt: skip
                resp = client.request(method, path, json=body)
                codes.append((path, resp.status_code, resp.text[:200]))
    finally:
        done.set()
        thread.join(timeout=30)
    assert len(codes) > 30
    bad = [c for c in codes if c[1] != 200]
    assert not bad, bad[:5]


def test_one_broken_job_never_fails_the_policy_list(app, client, trained_run, tmp_path):
    add_job(app, rotating_copy(trained_run, tmp_path / "good"), name="good")
    broken = rotating_copy(trained_run, tmp_path / "broken")
    (checkpoint_dirs(broken)[-1] / "spaces.json").write_text("{not json")
    add_job(app, broken, name="broken")
    resp = client.get("/v1/policies")
    assert resp.status_code == 200 and [p["id"] for p in resp.json()["policies"]] == ["job-good"], resp.text
    one = client.get("/v1/policies/job-broken")
    assert one.status_code == 500 and one.headers["content-type"] == "application/json"
    assert "internal error" in one.json()["detail"] and "Traceback" not in one.text


def test_every_unexpected_error_is_json_the_act_fast_path_too(app, client, trained_run, tmp_path):
    add_job(app, rotating_copy(trained_run, tmp_path / "p"), name="p")

    def explode(*_, **__):
        raise RuntimeError("boom")

    app.state.policies.act = explode
    app.state.policies.list = explode
    for method, path in (("POST", "/v1/policies/job-p/act"), ("GET", "/v1/policies")):
        resp = client.request(method, path, json=OBS)
        assert (resp.status_code, resp.headers["content-type"]) == (500, "application/json"), resp.text
        assert resp.json() == {"detail": "internal error (RuntimeError); the service log has the details"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("PUT", "/v1/jobs", "GET, POST"), ("GET", "/v1/policies/x/act", "POST"), ("DELETE", "/healthz", "GET"),
     ("POST", "/static/app.js", "GET, HEAD"), ("PATCH", "/v1/jobs/job-x/stop", "POST"),
     ("OPTIONS", "/v1/jobs/validate", "POST"), ("PUT", "/v1/jobs/job-x", "DELETE, GET")],
)  # fmt: skip
def test_a_405_lists_its_methods_in_json(client, method, path, allow):
    resp = client.request(method, path)
    assert resp.status_code == 405 and resp.headers["allow"] == allow, (resp.headers, resp.text)
    assert resp.headers["content-type"] == "application/json" and resp.json()["detail"]


def test_checkpoints_that_rotate_faster_than_a_load_are_served_by_the_policy_in_memory(app, client, trained_run,
                                                                                     tmp_path, monkeypatch):  # fmt: skip
    import api.services.policies as policies_module

    run = rotating_copy(trained_run, tmp_path / "run")
    add_job(app, run, name="r", status="running")
    assert client.post("/v1/policies/job-r/act", json=OBS).status_code == 200  # loaded once

    def always_pruned(path):
        raise FileNotFoundError(f"{path} was pruned")

    monkeypatch.setattr(policies_module, "load_policy", always_pruned)
    rotate(run, 10**9)
    app.state.policies._resolved.clear()  # look at the disk again: a new checkpoint, which never loads
    resp = client.post("/v1/policies/job-r/act", json=OBS)
    assert resp.status_code == 200 and resp.json()["actions"] in ([0], [1]), resp.text
