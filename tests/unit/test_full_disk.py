"""A full disk gets a clear answer (issue 20, item 7): 507 with a reason, never 500; a refused submit leaves no
temp file; one job whose status cannot be written never breaks the list, and the watcher writes it once it can;
submits are refused below a free-space floor; everything recovers when space returns. In-process, fake Ray."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

import api.services.jobs as jobs_module
from api.app import create_app
from api.services.store import JobStore
from api.settings import Settings
from rayac.checkpoint import atomic_write_text
from tests.unit.test_dashboard_routes import AUTH, TOKEN, FakeCluster, FakeRay

JOB = {"name": "full", "config": {"env": {"id": "CartPole-v1"}}}


def enospc(*_, **__):
    raise OSError(errno.ENOSPC, "No space left on device")


def sqlite_full(*_, **__):
    raise sqlite3.OperationalError("database or disk is full")


class StatusRay(FakeRay):
    status = "RUNNING"
    stopped: list = []

    def get_job_info(self, job_id):
        return SimpleNamespace(status=self.status, message="driver exited", start_time=None)

    def get_job_logs(self, job_id):
        return ""

    def stop_job(self, job_id):
        self.stopped.append(job_id)


class StatusCluster(FakeCluster):
    ray = StatusRay()

    def client(self):
        return self.ray


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(storage_dir=tmp_path / "storage", api_token=TOKEN), cluster=StatusCluster())


@pytest.fixture
def client(app):
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as c:
        yield c


def leftovers(app) -> list[str]:
    jobs_dir = app.state.jobs.storage / "jobs"
    return sorted(p.name for p in jobs_dir.iterdir()) if jobs_dir.exists() else []


def test_atomic_write_text_leaves_no_temp_file_when_the_disk_is_full(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_text("old")
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"] and target.read_text() == "old"


@pytest.mark.parametrize("where", ["config file", "registry"])
def test_a_submit_on_a_full_disk_is_507_and_leaves_nothing(app, client, monkeypatch, where):
    if where == "config file":
        monkeypatch.setattr(os, "fsync", enospc)
    else:
        monkeypatch.setattr(JobStore, "insert", sqlite_full)
    resp = client.post("/v1/jobs", json=JOB)
    assert resp.status_code == 507 and resp.headers["content-type"] == "application/json", resp.text
    assert "full" in resp.json()["detail"] and "free some space" in resp.json()["detail"]
    assert leftovers(app) == [] and app.state.jobs.store.all() == []
    monkeypatch.undo()  # space returns
    assert client.post("/v1/jobs", json=JOB).status_code == 201


def test_submits_are_refused_below_the_free_space_floor(app, client, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(jobs_module.shutil, "disk_usage", lambda _: usage(10 * 2**30, 10 * 2**30, 10 * 2**20))
    resp = client.post("/v1/jobs", json=JOB)
    assert resp.status_code == 507 and "RAYAC_MIN_FREE_BYTES" in resp.json()["detail"], resp.text
    assert leftovers(app) == [] and app.state.jobs.store.all() == []
    monkeypatch.undo()
    assert client.post("/v1/jobs", json=JOB).status_code == 201


def test_a_status_that_cannot_be_written_breaks_no_list_and_is_written_later(app, client, monkeypatch):
    ids = [client.post("/v1/jobs", json=JOB).json()["id"] for _ in range(2)]
    StatusCluster.ray.status = "FAILED"  # the jobs ended while the disk is full
    monkeypatch.setattr(JobStore, "update", sqlite_full)
    listed = client.get("/v1/jobs")
    assert listed.status_code == 200, listed.text
    assert [j["status"] for j in listed.json()["jobs"]] == ["failed", "failed"]
    assert client.get(f"/v1/jobs/{ids[0]}").json()["status"] == "failed"
    app.state.jobs.watch_once()  # the watcher keeps going, job after job
    assert {r.status for r in app.state.jobs.store.all()} == {"pending"}
    monkeypatch.undo()  # space returns: the watcher's next pass records them
    app.state.jobs.watch_once()
    assert {r.status for r in app.state.jobs.store.all()} == {"failed"}


def test_a_stop_on_a_full_disk_still_reaches_ray(app, client, monkeypatch):
    StatusCluster.ray.status = "RUNNING"
    job_id = client.post("/v1/jobs", json=JOB).json()["id"]
    monkeypatch.setattr(jobs_module.Path, "touch", enospc)
    monkeypatch.setattr("api.routes.stopping.STOP_WAIT_S", 0.1)
    assert client.post(f"/v1/jobs/{job_id}/stop").status_code == 200
    assert job_id in StatusCluster.ray.stopped


def test_a_secret_is_written_0600_from_its_first_byte(tmp_path, monkeypatch):
    """(issue 20, item 6) the local head's address file, and any file written with mode=0o600."""
    import stat

    monkeypatch.setattr(os, "umask", os.umask)  # restored below whatever happens
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "secret.json", "{}", mode=0o600)
        atomic_write_text(tmp_path / "plain.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o644


def test_the_local_heads_address_file_is_0600(tmp_path, monkeypatch):
    import stat
    import subprocess

    import api.services.ray_cluster as rc

    monkeypatch.setattr(rc.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    monkeypatch.setattr(rc, "_find_pgid", lambda temp_dir: None)
    monkeypatch.setattr(rc, "dashboard_alive", lambda url, timeout=2.0, headers=None: True)
    record = rc.start_local_head(tmp_path, num_cpus=1)  # a fake `ray start`: only the files are looked at
    Path(record["temp_dir"]).rmdir()
    for name in (rc.HEAD_FILE, "ray_head.lock", rc.TOKEN_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
