"""Retries don't duplicate (issue 20, item 11): POST /v1/jobs with an Idempotency-Key returns the same job on a
retry, however many retries race each other; the same key with another body is a 409; a refused submission frees
its key. In-process, a fake Ray that counts submissions."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from tests.unit.test_dashboard_routes import AUTH, TOKEN, FakeCluster, FakeRay

JOB = {"name": "once", "config": {"env": {"id": "CartPole-v1"}}}


class CountingRay(FakeRay):
    def __init__(self):
        self.submitted, self.fail = [], False

    def submit_job(self, **kwargs):
        if self.fail:
            raise ConnectionError("connection refused")
        self.submitted.append(kwargs["submission_id"])
        return kwargs["submission_id"]


class CountingCluster(FakeCluster):
    def __init__(self):
        self.ray = CountingRay()

    def client(self):
        return self.ray


def make(tmp_path):
    cluster = CountingCluster()
    app = create_app(Settings(storage_dir=tmp_path / "storage", api_token=TOKEN), cluster=cluster)
    return TestClient(app, headers=AUTH), cluster.ray, app


def test_a_retry_with_the_same_key_returns_the_same_job(tmp_path):
    client, ray, app = make(tmp_path)
    with client as c:
        key = {"Idempotency-Key": "3f0c2a9e-retry-me"}
        first = c.post("/v1/jobs", json=JOB, headers=key)
        again = c.post("/v1/jobs", json=JOB, headers=key)
        assert first.status_code == again.status_code == 201
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        other = c.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "another"})
        assert other.json()["id"] != first.json()["id"]
        assert c.post("/v1/jobs", json=JOB).json()["id"] not in (first.json()["id"], other.json()["id"])
    assert len(ray.submitted) == 3 and len(app.state.jobs.store.all()) == 3


def test_racing_retries_make_one_job(tmp_path):
    client, ray, _ = make(tmp_path)
    results = []
    with client as c:
        threads = [threading.Thread(target=lambda: results.append(c.post("/v1/jobs", json=JOB,
                                    headers={"Idempotency-Key": "race"}))) for _ in range(6)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    ok = [r for r in results if r.status_code == 201]
    assert len(ray.submitted) == 1 and ok and {r.json()["id"] for r in ok} == {ray.submitted[0]}
    assert all(r.status_code in (201, 409) for r in results), [r.text for r in results]


def test_the_same_key_with_another_body_is_a_conflict_and_a_refused_submit_frees_its_key(tmp_path):
    client, ray, _ = make(tmp_path)
    with client as c:
        ray.fail = True
        assert c.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "k"}).status_code == 503
        ray.fail = False
        first = c.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "k"})  # the retry submits for real
        assert first.status_code == 201 and ray.submitted == [first.json()["id"]]
        changed = c.post("/v1/jobs", json={**JOB, "name": "other"}, headers={"Idempotency-Key": "k"})
        assert changed.status_code == 409 and "different request" in changed.json()["detail"]
        bad = c.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "a key with spaces"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "Idempotency-Key", bad.text
