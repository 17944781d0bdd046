"""Validation never touches the filesystem or blocks (issue 20, item 8): env kwargs that name a path are refused
before any env is built, so a caller learns nothing about which files exist and a FIFO hangs nothing; an env module
the operator allows may take them. In-process, fake Ray, a real MuJoCo env id."""

from __future__ import annotations

import builtins
import os
import threading

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from tests.unit.test_dashboard_routes import AUTH, TOKEN, FakeCluster

pytestmark = [pytest.mark.timeout(120)]


def body(**kwargs) -> dict:
    return {"config": {"env": {"id": "HalfCheetah-v5", "num_envs": 1, "kwargs": kwargs}}}


@pytest.fixture
def client(tmp_path):
    app = create_app(Settings(storage_dir=tmp_path / "storage", api_token=TOKEN), cluster=FakeCluster())
    with TestClient(app, headers=AUTH) as c:
        yield c


def post_with_deadline(client, path, json, seconds=60):
    """The answer, or None if the request hung (a validation blocked on a FIFO)."""
    out = []
    t = threading.Thread(target=lambda: out.append(client.post(path, json=json)), daemon=True)
    t.start()
    t.join(seconds)
    return out[0] if out else None


@pytest.mark.parametrize(
    "value", ["/etc/passwd", "/nonexistent/x.xml", "../../secret.xml", "~root/.ssh/id_rsa"]
)
def test_path_kwargs_are_refused_the_same_whether_the_file_exists_or_not(client, monkeypatch, value):
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(
        builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1]
    )
    for path in ("/v1/jobs/validate", "/v1/jobs"):
        resp = post_with_deadline(client, path, body(xml_file=value))
        assert resp is not None and resp.status_code == 422, resp and resp.text
        err = resp.json()["errors"][0]
        assert err["field"] == "config.env.kwargs.xml_file" and "filesystem path" in err["msg"], err
    assert not [f for f in opened if value.strip("~") in f or "passwd" in f], opened


def test_a_fifo_hangs_nothing(client, tmp_path):
    fifo = tmp_path / "model.xml"
    os.mkfifo(fifo)
    resp = post_with_deadline(client, "/v1/jobs/validate", body(xml_file=str(fifo)))
    assert resp is not None, "validation blocked on a FIFO"
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "config.env.kwargs.xml_file"


def test_nested_and_named_paths_are_found_and_plain_kwargs_pass(client):
    nested = post_with_deadline(client, "/v1/jobs/validate", body(extra={"assets": ["a", "/tmp/b"]}))
    assert nested.json()["errors"][0]["field"] == "config.env.kwargs.extra.assets.1"
    named = post_with_deadline(client, "/v1/jobs/validate", body(model_path="cheetah"))
    assert named.json()["errors"][0]["field"] == "config.env.kwargs.model_path"
    ok = post_with_deadline(
        client, "/v1/jobs/validate", body(forward_reward_weight=2.0, ctrl_cost_weight=0.2)
    )
    assert ok.status_code == 200, ok.text


def test_an_allowed_env_module_may_name_files(tmp_path):
    settings = Settings(
        storage_dir=tmp_path / "s", api_token=TOKEN, allowed_env_modules=["gymnasium.envs.mujoco"]
    )
    with TestClient(create_app(settings, cluster=FakeCluster()), headers=AUTH) as c:
        resp = c.post("/v1/jobs/validate", json=body(xml_file="half_cheetah.xml"))
        assert resp.status_code == 200, resp.text
