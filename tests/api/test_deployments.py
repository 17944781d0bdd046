"""Deployments on the real service: a pinned checkpoint answers the same while its job goes on writing and
pruning checkpoints (keep_checkpoints: 1), and a rollback answers exactly as the previous version did."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.api.conftest import small_job, wait_for

pytestmark = [pytest.mark.timeout(600)]
OBS = np.random.default_rng(3).normal(size=(64, 4)).astype(np.float32).tolist()


def act(c, name: str) -> dict:
    resp = c.post(f"/v1/deployments/{name}/act",
                  json={"observations": OBS, "return_values": True, "return_probs": True})  # fmt: skip
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_pinning_holds_while_the_job_prunes_and_rollback_is_exact(service):
    job_body = small_job(
        run__stop={"total_env_steps": 80_000, "target_return": None},
        run__checkpoint_interval_steps=2000,
        run__keep_checkpoints=1,
        run__eval_interval_steps=0,
    )  # fmt: skip  (no best-evaluated checkpoint kept besides)
    with service.client() as c:
        job = c.post("/v1/jobs", json=job_body).json()
        run_dir = Path(service.storage) / "runs" / job["id"]
        first = wait_for(lambda: c.get(f"/v1/jobs/{job['id']}").json()["checkpoints"], timeout=240)
        assert first, c.get(f"/v1/jobs/{job['id']}").json()

        resp = c.post("/v1/deployments", json={"name": "pinned", "policy": job["id"], "checkpoint": "latest"})
        assert resp.status_code == 201, resp.text
        pinned = resp.json()["checkpoint"]
        v1 = act(c, "pinned")

        # the job writes and prunes on: the deployment's answers never change
        seen, answers, deadline = set(), 0, time.monotonic() + 300
        while time.monotonic() < deadline:
            assert act(c, "pinned") == v1
            answers += 1
            info = c.get(f"/v1/jobs/{job['id']}").json()
            seen.update(ck["name"] for ck in info["checkpoints"])
            if len(seen - {pinned}) >= 2 or info["status"] != "running":
                break
            time.sleep(0.2)
        assert len(seen - {pinned}) >= 2, (seen, info["status"])  # the job checkpointed twice since
        assert not (
            run_dir / "checkpoints" / pinned
        ).exists()  # and pruned the pinned one (keep_checkpoints 1)
        assert act(c, "pinned") == v1

        resp = c.post("/v1/deployments", json={"name": "pinned", "policy": job["id"], "replace": True})
        assert resp.status_code == 200 and resp.json()["version"] == 2, resp.text
        assert resp.json()["checkpoint"] != pinned
        v2 = act(c, "pinned")
        assert v2["probs"] != v1["probs"]  # trained further: another policy

        resp = c.post("/v1/deployments/pinned/rollback")
        assert resp.status_code == 200 and resp.json()["version"] == 1
        assert act(c, "pinned") == v1  # exactly the first version's answers

        final = wait_for(lambda: c.get(f"/v1/jobs/{job['id']}").json()["status"] != "running", timeout=300)
        assert final
        assert act(c, "pinned") == v1
        history = c.get("/v1/deployments/pinned").json()["history"]
        assert [(h["version"], h["active"], h["job_id"]) for h in history] == [
            (1, True, job["id"]), (2, False, job["id"])]  # fmt: skip
        assert history[0]["checkpoint"] == pinned and history[0]["requested"] == "latest"
        assert c.delete("/v1/deployments/pinned").status_code == 204
        assert c.get("/v1/deployments/pinned").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/v1/deployments"), ("post", "/v1/deployments"), ("get", "/v1/deployments/x"),
     ("delete", "/v1/deployments/x"), ("post", "/v1/deployments/x/act"), ("post", "/v1/deployments/x/rollback"),
     ("get", "/v1/deployments/x/export")],
)  # fmt: skip
def test_every_deployment_route_needs_the_token(service, method, path):
    with service.client(token=None) as c:
        resp = c.request(method.upper(), path, json={} if method == "post" else None)
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer", (path, resp.text)
    with service.client(token="wrong-token") as c:
        assert c.request(method.upper(), path, json={} if method == "post" else None).status_code == 401
