"""observations_b64 means what the policy says (issue 20, item 10): bytes are read in the dtype the policy
advertises (a MuJoCo policy's float64), or in observations_dtype; a byte count that does not divide is refused.
In-process: a CartPole checkpoint whose spaces say float64 stands in for HalfCheetah (whose env emits float64)."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from rayac.checkpoint import checkpoint_dirs
from tests.unit.test_checkpoint_rotation import trained_run  # noqa: F401 (a fixture)
from tests.unit.test_dashboard_routes import AUTH, TOKEN, FakeCluster, add_job

OBS = np.array([[0.01, -0.02, 0.03, 0.5]])


def b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(array.astype(dtype).tobytes()).decode()


@pytest.fixture
def client(tmp_path, trained_run):  # noqa: F811
    app = create_app(Settings(storage_dir=tmp_path / "storage", api_token=TOKEN), cluster=FakeCluster())
    run64 = shutil.copytree(trained_run, tmp_path / "run64")
    spaces = checkpoint_dirs(run64)[-1] / "spaces.json"
    spaces.write_text(json.dumps({**json.loads(spaces.read_text()), "obs_dtype": "float64"}))
    add_job(app, run64, name="f64")
    add_job(app, trained_run, name="f32")
    with TestClient(app, headers=AUTH) as c:
        yield c


def test_the_policy_says_what_its_bytes_are_read_as(client):
    assert client.get("/v1/policies/job-f64").json()["observations_b64_dtype"] == "float64"
    assert client.get("/v1/policies/job-f32").json()["observations_b64_dtype"] == "float32"


def test_float64_bytes_of_a_float64_policy_are_one_observation_each(client):
    want = client.post("/v1/policies/job-f64/act", json={"observations": OBS.tolist()}).json()["actions"]
    resp = client.post("/v1/policies/job-f64/act", json={"observations_b64": b64(OBS, "float64")})
    assert resp.status_code == 200 and resp.json()["actions"] == want, (
        resp.text
    )  # one observation, one action
    as32 = {"observations_b64": b64(OBS, "float32"), "observations_dtype": "float32"}
    assert client.post("/v1/policies/job-f64/act", json=as32).json()["actions"] == want
    two = {"observations_b64": b64(np.concatenate([OBS, OBS]), "float64")}
    assert len(client.post("/v1/policies/job-f64/act", json=two).json()["actions"]) == 2


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"observations_b64": base64.b64encode(b"\0" * 20).decode()}, "observations_b64", "20 bytes are not a whole"),
        ({"observations_b64": b64(OBS, "float64"), "observations_dtype": "int8"}, "observations_dtype", "float64"),
        ({"observations": OBS.tolist(), "observations_dtype": "float64"}, "body", "give observations_b64"),
    ],
)  # fmt: skip
def test_what_does_not_fit_is_refused_naming_the_field(client, body, field, words):
    resp = client.post("/v1/policies/job-f64/act", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == field and words in resp.json()["detail"], resp.text
