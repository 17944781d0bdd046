"""/v1/deployments in-process (no Ray: a fake job client; jobs are run dirs of constructed policies): versions,
rollback to exactly the old answers, pinning that outlives the job's checkpoints, errors naming their field,
export, and the registry surviving a restart."""

from __future__ import annotations

import base64
import shutil
import time
import warnings

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

import rayac
from api.app import create_app
from api.services.store import JobRecord
from api.settings import Settings
from rayac.checkpoint import load_policy
from tests.constructed import make_run, observations
from tests.unit.test_dashboard_routes import FakeCluster

TOKEN = "deploy-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OBS = observations("cartpole", 64).tolist()


@pytest.fixture
def storage(tmp_path):
    return tmp_path / "storage"


@pytest.fixture
def app(storage):
    return create_app(Settings(storage_dir=storage, api_token=TOKEN), cluster=FakeCluster())


@pytest.fixture
def client(app):
    with TestClient(app, headers=AUTH) as c:
        yield c


@pytest.fixture
def job(app, tmp_path):
    """A job whose run has checkpoints at 1000, 2000, 3000 env steps (evaluated 10, 50, 20): 2000 is 'best'."""
    run = make_run(tmp_path / "run", "cartpole", steps=(1000, 2000, 3000), evals=(10.0, 50.0, 20.0))
    now = time.time()
    rec = JobRecord("job-a", "a", "running", rayac.Config().model_dump(mode="json"), str(run), now, now, None)
    app.state.jobs.store.insert(rec)
    return rec


def act(client, name: str) -> dict:
    resp = client.post(f"/v1/deployments/{name}/act",
                       json={"observations": OBS, "return_values": True, "return_probs": True})  # fmt: skip
    assert resp.status_code == 200, resp.text
    return resp.json()


def direct(run_dir, step: int) -> dict:
    """What load_policy gives for that checkpoint, as the act route's JSON would carry it."""
    policy = load_policy(f"{run_dir}/checkpoints/ckpt_{step:012d}")
    return {"actions": policy.act(OBS).tolist(), "values": policy.values(OBS).tolist(),
            "probs": policy.action_probs(OBS).tolist()}  # fmt: skip


def test_versions_rollback_and_history(client, job):
    resp = client.post("/v1/deployments", json={"name": "cart", "policy": job.id, "checkpoint": 1000})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["version"], body["checkpoint"], body["job_id"], body["env_id"]) == (
        1, "ckpt_000000001000", job.id, "CartPole-v1")  # fmt: skip
    v1 = act(client, "cart")
    assert v1 == direct(job.run_dir, 1000)

    resp = client.post("/v1/deployments", json={"name": "cart", "policy": job.id, "checkpoint": "best"})
    assert resp.status_code == 409 and "replace" in resp.json()["detail"]
    resp = client.post("/v1/deployments", json={"name": "cart", "policy": job.id, "checkpoint": "best",
                                                "replace": True})  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert (resp.json()["version"], resp.json()["checkpoint"], resp.json()["eval_return"]) == (
        2, "ckpt_000000002000", 50.0)  # fmt: skip
    v2 = act(client, "cart")
    assert v2 == direct(job.run_dir, 2000) and v2["probs"] != v1["probs"]

    resp = client.post("/v1/deployments/cart/rollback")
    assert resp.status_code == 200 and resp.json()["version"] == 1
    assert act(client, "cart") == v1  # exactly: the same pinned weights
    history = client.get("/v1/deployments/cart").json()["history"]
    assert [(h["version"], h["checkpoint"], h["requested"], h["eval_return"], h["active"]) for h in history] == [
        (1, "ckpt_000000001000", "1000", 10.0, True), (2, "ckpt_000000002000", "best", 50.0, False)]  # fmt: skip
    resp = client.post("/v1/deployments/cart/rollback")
    assert resp.status_code == 409 and "first" in resp.json()["detail"]
    assert client.post("/v1/deployments/cart/rollback", json={"version": 2}).json()["version"] == 2
    assert act(client, "cart") == v2
    resp = client.post("/v1/deployments/cart/rollback", json={"version": 7})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "version"

    resp = client.post("/v1/deployments", json={"name": "cart", "policy": job.id, "replace": True})
    assert resp.json()["version"] == 3 and resp.json()["checkpoint"] == "ckpt_000000003000"  # latest
    listed = client.get("/v1/deployments").json()["deployments"]
    assert [(d["name"], d["version"], len(d["history"])) for d in listed] == [("cart", 3, 3)]


def test_a_deployment_outlives_the_checkpoints_of_its_job(client, job, app, storage):
    """Pinned is copied: the job may prune every checkpoint (keep_checkpoints) or lose its run entirely."""
    client.post("/v1/deployments", json={"name": "pinned", "policy": job.id, "checkpoint": "latest"})
    before = act(client, "pinned")
    latest_before = client.post(f"/v1/policies/{job.id}/act", json={"observations": OBS}).json()
    assert latest_before["actions"] == before["actions"]
    make_run(job.run_dir, "cartpole", steps=(4000,))  # the job writes a newer checkpoint (other weights)...
    shutil.rmtree(f"{job.run_dir}/checkpoints/ckpt_000000003000")  # ... and prunes the deployed one
    time.sleep(1.1)  # the policies route trusts its "latest" for 1 s
    latest_after = client.post(f"/v1/policies/{job.id}/act", json={"observations": OBS, "return_probs": True})
    assert latest_after.json()["probs"] != before["probs"]  # the job's own route keeps its "latest" meaning
    assert act(client, "pinned") == before
    shutil.rmtree(job.run_dir)
    assert act(client, "pinned") == before

    # a restarted service on the same storage serves the same version
    with TestClient(create_app(Settings(storage_dir=storage, api_token=TOKEN), cluster=FakeCluster()),
                    headers=AUTH) as other:  # fmt: skip
        assert act(other, "pinned") == before
        assert other.get("/v1/deployments/pinned").json()["checkpoint"] == "ckpt_000000003000"

    assert client.delete("/v1/deployments/pinned").status_code == 204
    assert not (storage / "deployments" / "pinned").exists()
    for method, path in (("GET", ""), ("POST", "/act"), ("POST", "/rollback"), ("DELETE", ""),
                         ("GET", "/export")):  # fmt: skip
        kwargs = {"json": {"observations": OBS}} if path == "/act" else {}
        resp = client.request(method, f"/v1/deployments/pinned{path}", **kwargs)
        assert resp.status_code == 404 and resp.json()["detail"] == "no deployment 'pinned'", (method, path)


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"name": "x", "policy": "job-nope"}, "policy", "no job 'job-nope'"),
        ({"name": "x", "policy": "job-a", "checkpoint": 1500}, "checkpoint",
         "no checkpoint at step 1500 in job 'job-a' (there are: 1000, 2000, 3000)"),
        ({"name": "x", "policy": "job-a", "checkpoint": "worst"}, "checkpoint", "must be 'best', 'latest'"),
        ({"name": "x", "policy": "job-a", "checkpoint": -5}, "checkpoint", ">= 0"),
        ({"name": "x", "policy": "job-a", "checkpoint": True}, "checkpoint", "must be 'best', 'latest'"),
        ({"name": "no spaces", "policy": "job-a"}, "name", "letters, digits"),
        ({"name": "../up", "policy": "job-a"}, "name", "letters, digits"),
        ({"name": "x", "policy": "job-a", "replace": "yes"}, "replace", "valid boolean"),
        ({"name": "x", "policy": "job-a", "colour": 1}, "colour", "unknown field"),
    ],
)  # fmt: skip
def test_bad_deployments_name_the_field(client, job, body, field, says):
    resp = client.post("/v1/deployments", json=body)
    assert resp.status_code == 422, resp.text
    errors = resp.json()["errors"]
    assert errors[0]["field"] == field and says in errors[0]["msg"], errors
    assert client.get("/v1/deployments").json()["deployments"] == []


def test_a_job_without_checkpoints_or_evaluations(client, app, tmp_path):
    now = time.time()
    for job_id, run in (
        ("job-empty", tmp_path / "empty"),
        ("job-noeval", make_run(tmp_path / "n", "cartpole")),
    ):
        rec = JobRecord(
            job_id, None, "running", rayac.Config().model_dump(mode="json"), str(run), now, now, None
        )
        app.state.jobs.store.insert(rec)
    resp = client.post("/v1/deployments", json={"name": "e", "policy": "job-empty"})
    assert resp.status_code == 422
    assert resp.json()["errors"] == [{"field": "policy", "msg": "no checkpoint in job 'job-empty' yet"}]
    resp = client.post("/v1/deployments", json={"name": "e", "policy": "job-noeval", "checkpoint": "best"})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "checkpoint"
    assert "has an evaluation yet" in resp.json()["detail"]


def test_act_checks_are_the_policies_own(client, job):
    client.post("/v1/deployments", json={"name": "c", "policy": job.id})
    resp = client.post("/v1/deployments/c/act", json={"observations": [[1.0, 2.0]]})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "observations"
    resp = client.post("/v1/deployments/c/act", content=b'{"observations": [[1e39, 0, 0, 0]]}',
                       headers={"content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 422 and "float32 range" in resp.json()["detail"]
    with warnings.catch_warnings():  # refused as a 422, not also a numpy RuntimeWarning in the service's log
        warnings.simplefilter("error")
        resp = client.post("/v1/deployments/c/act", content=b'{"observations": [[0, -1e300, 0, 0]]}',
                           headers={"content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 422 and "float32 range" in resp.json()["detail"]
    b64 = np.asarray(OBS, np.float32).tobytes()
    resp = client.post("/v1/deployments/c/act", json={"observations_b64": base64.b64encode(b64).decode()})
    assert resp.json()["actions"] == act(client, "c")["actions"]


def test_export_route_is_the_deployed_version(client, job, tmp_path):
    client.post("/v1/deployments", json={"name": "ex", "policy": job.id, "checkpoint": 2000})
    want = act(client, "ex")
    resp = client.get("/v1/deployments/ex/export", params={"format": "onnx"})
    assert resp.status_code == 200 and resp.headers["x-deployment-version"] == "1"
    assert "ex-v1.onnx" in resp.headers["content-disposition"]
    session = ort.InferenceSession(resp.content)
    action, probs, value = session.run(None, {"observations": np.asarray(OBS, np.float32)})
    assert action.tolist() == want["actions"]
    np.testing.assert_allclose(probs, want["probs"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(value, want["values"], rtol=0, atol=1e-5)
    sidecar = client.get("/v1/deployments/ex/export", params={"format": "onnx", "sidecar": True}).json()
    assert sidecar["checkpoint"] == "ckpt_000000002000" and sidecar["env_id"] == "CartPole-v1"
    resp = client.get("/v1/deployments/ex/export", params={"format": "torchscript"})
    assert resp.status_code == 200 and resp.content[:2] == b"PK"  # a TorchScript archive is a zip
    resp = client.get("/v1/deployments/ex/export", params={"format": "tflite"})
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "format"


def test_strings_sqlite_cannot_store_are_422_or_404_not_500(client, job):
    resp = client.post("/v1/deployments", content=b'{"name": "x", "policy": "\\udfff"}',
                       headers={"content-type": "application/json"})  # fmt: skip
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "policy"
    for path in ("/v1/deployments/%ED%A0%80", "/v1/deployments/%F0%9F%A6%84", "/v1/deployments/a%20b"):
        assert client.get(path).status_code == 404, path
        assert client.post(path + "/act", json={"observations": OBS}).status_code == 404, path


def test_serve_replicas_setting_is_checked_at_start_up(monkeypatch, capsys):
    from api.settings import settings_from_env
    from rayac.cli import main

    assert settings_from_env({"RAYAC_SERVE_REPLICAS": "auto"}).serve_replicas == "auto"
    assert settings_from_env({"RAYAC_SERVE_REPLICAS": "4"}).serve_replicas == "4"
    assert settings_from_env({}).serve_replicas is None  # in process by default
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("RAYAC_SERVE_REPLICAS", bad)
        assert main(["serve", "--port", "9"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "RAYAC_SERVE_REPLICAS: must be a number of replicas" in err, err
