"""The service on a cluster whose learner node is not the head: an A2C job pinned there over REST, its metrics
streamed and its policy served from the run's files, which the driver on the head wrote."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import rayac
from tests.api.conftest import Service, follow, free_port, small_job

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture
def cluster():
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("multinode_cluster.py"))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 180
    info = None
    while info is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        if line.startswith("READY "):
            info = json.loads(line[6:])
    assert info is not None, proc.stderr.read()[-5000:] if proc.poll() is not None else "no READY line"
    yield info
    proc.stdin.close()  # the script shuts down its own nodes
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _actors(dashboard_url: str) -> list[dict]:
    resp = httpx.get(f"{dashboard_url}/api/v0/actors", params={"limit": 1000, "detail": "true"}, timeout=30)
    return resp.json()["data"]["result"]["result"]


def test_a2c_learner_on_another_node_is_streamed_and_served(cluster, tmp_path):
    svc = Service(tmp_path, free_port(), RAYAC_DASHBOARD_URL=cluster["dashboard_url"])
    svc.start()
    try:
        body = small_job(steps=6000, run__stop={"total_env_steps": 6000}, run__eval_interval_steps=3000)
        body["config"]["resources"] = {"num_workers": 1, "learner_resources": {"learner": 1}}
        with svc.client() as c:
            resp = c.post("/v1/jobs", json=body)
            assert resp.status_code == 201, resp.text
            job = resp.json()
            events, final = follow(c, job["id"])
            assert final == {"status": "succeeded", "error": None}, c.get(f"/v1/jobs/{job['id']}/logs").text[
                -3000:
            ]
            assert [i for i, _ in events] == list(range(len(events))) and events[-1][1][
                "time/env_steps"
            ] >= 6000
            learners = [a for a in _actors(cluster["dashboard_url"]) if a["class_name"] == "Learner"]
            assert learners and {a["node_id"] for a in learners} == {cluster["learner_node"]}
            obs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
            act = c.post(f"/v1/policies/{job['id']}/act", json={"observations": obs.tolist()})
            assert act.status_code == 200, act.text
        local = rayac.load_policy(tmp_path / "runs" / job["id"])  # the files are where the service reads them
        np.testing.assert_array_equal(act.json()["actions"], local.act(obs, deterministic=True))
    finally:
        svc.stop()
