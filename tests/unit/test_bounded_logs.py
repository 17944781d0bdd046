"""/logs is a bounded tail (issue 20, item 3): a default cap, ?tail_bytes=, ?offset= for only the new bytes, and on
a head of the service's own the driver's log file is read a slice at a time. In-process, a fake cluster."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from tests.unit.test_dashboard_routes import AUTH, TOKEN, FakeCluster, FakeRay, add_job

LINES = [f"step {i:07d} loss 0.123456 reward 1.0 and more words for a longer line" for i in range(80_000)]
LOG = "\n".join(LINES) + "\n"  # ~6.5 MB


class LoggingRay(FakeRay):
    def get_job_logs(self, job_id):
        return LOG


class LoggingCluster(FakeCluster):
    def __init__(self, owned_head=None):
        self.owned_head = owned_head

    def client(self):
        return LoggingRay()


def client_for(tmp_path, cluster):
    app = create_app(Settings(storage_dir=tmp_path / "storage", api_token=TOKEN), cluster=cluster)
    add_job(app, tmp_path / "run", name="log", status="running")
    return TestClient(app, headers=AUTH)


def check_tail(c: TestClient) -> None:
    resp = c.get("/v1/jobs/job-log/logs")
    assert resp.status_code == 200 and len(resp.content) <= 64 * 1024, len(resp.content)
    assert resp.text.endswith(LINES[-1] + "\n") and resp.text.startswith("step ")  # whole lines
    size = int(resp.headers["x-log-size"])
    assert size == len(LOG) and int(resp.headers["x-log-start"]) == size - len(resp.content)
    small = c.get("/v1/jobs/job-log/logs", params={"tail_bytes": 300})
    assert 0 < len(small.content) <= 300 and small.text.endswith(LINES[-1] + "\n")
    new = c.get("/v1/jobs/job-log/logs", params={"offset": size - len(LINES[-1]) - 1})
    assert new.text == LINES[-1] + "\n" and new.headers["x-log-start"] == str(size - len(LINES[-1]) - 1)
    assert c.get("/v1/jobs/job-log/logs", params={"offset": size}).text == ""
    too_big = c.get("/v1/jobs/job-log/logs", params={"tail_bytes": 2**30})
    assert too_big.status_code == 422 and too_big.json()["errors"][0]["field"] == "tail_bytes"


def test_logs_from_rays_api_are_a_bounded_tail(tmp_path):
    with client_for(tmp_path, LoggingCluster()) as c:
        check_tail(c)


def test_logs_of_the_services_own_head_are_read_from_the_file_a_slice_at_a_time(tmp_path, monkeypatch):
    logs = tmp_path / "head" / "session_latest" / "logs"
    logs.mkdir(parents=True)
    (logs / "job-driver-job-log.log").write_text(LOG)
    monkeypatch.setattr(LoggingRay, "get_job_logs", lambda self, job_id: pytest.fail("read the whole log"))
    with client_for(tmp_path, LoggingCluster(owned_head={"temp_dir": str(tmp_path / "head")})) as c:
        check_tail(c)
