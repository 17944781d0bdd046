"""The Ray head the service starts is no open door: its dashboard refuses anyone without the head's token (a job
`{"entrypoint": "id"}` included), its address and token files are 0600, and the service, which sends the token
on every call, still runs jobs on it."""

import json
import stat

import httpx
import pytest

from api.services.ray_cluster import HEAD_FILE, TOKEN_FILE, auth_headers
from tests.api.conftest import follow, small_job

pytestmark = [pytest.mark.timeout(600)]


def test_the_heads_dashboard_refuses_a_job_without_its_token(service):
    for name in (HEAD_FILE, TOKEN_FILE):
        assert stat.S_IMODE((service.storage / name).stat().st_mode) == 0o600, name
    head = json.loads((service.storage / HEAD_FILE).read_text())
    jobs = f"{head['dashboard_url']}/api/jobs/"
    assert httpx.post(jobs, json={"entrypoint": "id"}, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer " + "0" * 64}
    assert httpx.post(jobs, json={"entrypoint": "id"}, headers=wrong, timeout=30).status_code == 403
    assert httpx.get(jobs, timeout=30).status_code == 401
    listed = httpx.get(jobs, headers=auth_headers(head), timeout=30)  # the head's own token opens it
    assert listed.status_code == 200 and all(j["entrypoint"] != "id" for j in listed.json())


def test_the_service_runs_a_job_on_its_token_guarded_head(service):
    with service.client() as c:
        resp = c.post("/v1/jobs", json=small_job())
        assert resp.status_code == 201, resp.text
        _, final = follow(c, resp.json()["id"])
        assert final == {"status": "succeeded", "error": None}
