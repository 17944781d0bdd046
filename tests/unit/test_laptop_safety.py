"""Safe on a laptop with no token (issue 20, item 5): only loopback Host names are answered (DNS rebinding), act
needs a JSON Content-Type like every other body (no CORS-free "simple" request gets in), no CORS headers, and the
FastAPI range whose strict Content-Type check this relies on is pinned. In-process, fake Ray."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from packaging.requirements import Requirement

from api.app import create_app
from api.settings import Settings, settings_from_env
from tests.unit.test_dashboard_routes import AUTH, TOKEN, FakeCluster

ROOT = Path(__file__).resolve().parents[2]


def make_client(tmp_path, **settings) -> TestClient:
    app = create_app(Settings(storage_dir=tmp_path / "storage", **settings), cluster=FakeCluster())
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "10.0.0.5:8000", ""]
)
def test_without_a_token_only_loopback_hosts_are_answered(tmp_path, host):
    with make_client(tmp_path) as c:
        for method, path in (("GET", "/"), ("GET", "/v1/jobs"), ("GET", "/v1/policies"), ("GET", "/healthz"),
                             ("POST", "/v1/policies/job-x/act")):  # fmt: skip
            resp = c.request(method, path, headers={"host": host}, json={"observations": [[0.0]]})
            assert resp.status_code == 403 and resp.headers["content-type"] == "application/json", (
                path,
                resp.text,
            )
            assert (
                "not a loopback name" in resp.json()["detail"]
                and "RAYAC_ALLOWED_HOSTS" in resp.json()["detail"]
            )


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "127.1.2.3", "[::1]:8000",
                                  "rayac.localhost:8000", "LOCALHOST"])  # fmt: skip
def test_loopback_names_are_answered(tmp_path, host):
    with make_client(tmp_path) as c:
        assert c.get("/v1/jobs", headers={"host": host}).status_code == 200


def test_allowed_hosts_and_a_token_open_other_names(tmp_path):
    assert settings_from_env({"RAYAC_ALLOWED_HOSTS": "box.lan, other"}).allowed_hosts == ["box.lan", "other"]
    with make_client(tmp_path, allowed_hosts=["box.lan"]) as c:
        assert c.get("/v1/jobs", headers={"host": "box.lan:8000"}).status_code == 200
        assert c.get("/v1/jobs", headers={"host": "evil.example"}).status_code == 403
    with make_client(tmp_path, api_token=TOKEN) as c:  # with a token, the token guards
        assert c.get("/v1/jobs", headers={"host": "box.lan", **AUTH}).status_code == 200


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_act_and_every_other_body_need_a_json_content_type(tmp_path, content_type):
    body = b'{"observations": [[0.0, 0.0, 0.0, 0.0]]}'
    headers = {"content-type": content_type} if content_type else {}
    with make_client(tmp_path) as c:
        act = c.post("/v1/policies/job-x/act", content=body, headers=headers)
        assert act.status_code == 422 and act.json()["errors"][0]["field"] == "body", act.text
        submit = c.post(
            "/v1/jobs/validate", content=b'{"config": {}}', headers=headers
        )  # FastAPI's strict check
        assert submit.status_code == 422 and submit.json()["errors"][0]["field"] == "body", submit.text
        ok = c.post(
            "/v1/policies/job-x/act",
            content=body,
            headers={"content-type": "application/json; charset=utf-8"},
        )
        assert ok.status_code == 404  # past the check: no such policy


def test_no_cors(tmp_path):
    with make_client(tmp_path) as c:
        origin = {"origin": "https://evil.example"}
        pre = c.options("/v1/jobs", headers={**origin, "access-control-request-method": "POST"})
        got = c.get("/v1/jobs", headers=origin)
        assert got.status_code == 200
        for resp in (pre, got):
            assert not any(k.lower().startswith("access-control-") for k in resp.headers), resp.headers


def test_fastapi_is_pinned_to_the_range_with_strict_content_types():
    (line,) = re.findall(r'^\s*"(fastapi[^"]*)"', (ROOT / "pyproject.toml").read_text(), flags=re.M)
    fastapi = Requirement(line)
    assert (
        "0.131" not in fastapi.specifier and "0.132" in fastapi.specifier and "1.0" not in fastapi.specifier
    )
    assert version("fastapi") in fastapi.specifier
