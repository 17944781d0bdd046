"""Deployment act on Ray Serve (RAYAC_SERVE_REPLICAS): 1 and 2 replicas on the service's own head answer as the
in-process path does, version switches route to the new replicas, and a replica SIGKILLed under bounded load
gives answers or clear 503s, never a hang."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest

import rayac
from api.services.store import JobRecord, JobStore
from tests.api.conftest import wait_for
from tests.constructed import make_run, observations

pytestmark = [pytest.mark.timeout(600)]
OBS = [observations("cartpole", n).tolist() for n in (1, 7, 64)]
BODY = {"return_values": True, "return_probs": True}


def answers(c: httpx.Client, name: str) -> list[dict]:
    out = []
    for obs in OBS:
        resp = c.post(f"/v1/deployments/{name}/act", json={"observations": obs, **BODY})
        assert resp.status_code == 200, resp.text
        out.append(resp.json())
    return out


def replicas(service, name: str) -> list[dict]:
    """The RUNNING replicas of the Serve application serving ``name`` (from the head's dashboard API)."""
    import json

    from api.services.ray_cluster import auth_headers

    head = json.loads((service.storage / "ray_head.json").read_text())
    apps = httpx.get(
        f"{head['dashboard_url']}/api/serve/applications/", headers=auth_headers(head), timeout=30
    )
    apps = apps.json()["applications"]
    out = []
    for app_name, app in apps.items():
        if app_name.startswith(f"rayac-{name}-v") and app["status"] == "RUNNING":
            out += [r for r in app["deployments"]["policy"]["replicas"] if r["state"] == "RUNNING"]
    return out


@pytest.fixture(scope="module")
def serve_job(service):
    """A job (constructed checkpoints at 1000 and 2000 steps) and the in-process answers of each checkpoint."""
    run = make_run(service.storage / "runs" / "job-serve", "cartpole", steps=(1000, 2000))
    now = time.time()
    JobStore(service.storage / "jobs.db").insert(JobRecord("job-serve", "serve", "succeeded",
                                                           rayac.Config().model_dump(mode="json"), str(run), now,
                                                           now, None))  # fmt: skip
    expected = {}
    with service.client() as c:
        for step in (1000, 2000):
            resp = c.post(
                "/v1/deployments", json={"name": f"ref{step}", "policy": "job-serve", "checkpoint": step}
            )
            assert resp.status_code == 201, resp.text
            expected[step] = answers(c, f"ref{step}")
    assert expected[1000] != expected[2000]
    return expected


@pytest.fixture
def serve_service(extra_service):
    """``start(name, **settings)``: a service with Serve settings; afterwards its deployment ``name`` is deleted,
    so no replica keeps the session head's CPUs from the tests that follow."""
    started = []

    def start(name: str, **settings: str):
        svc = extra_service(**settings)
        started.append((svc, name))
        return svc

    yield start
    for svc, name in started:
        with svc.client() as c:
            c.delete(f"/v1/deployments/{name}")
        assert wait_for(lambda svc=svc, name=name: not replicas(svc, name), timeout=120)


@pytest.mark.parametrize("replica_count", [1, 2])
def test_serve_replicas_answer_as_in_process(service, serve_service, serve_job, replica_count):
    name = f"srv{replica_count}"
    with service.client() as c:
        assert (
            c.post(
                "/v1/deployments", json={"name": name, "policy": "job-serve", "checkpoint": 1000}
            ).status_code
            == 201
        )
    served = serve_service(name, RAYAC_SERVE_REPLICAS=str(replica_count))
    with served.client() as c:
        assert answers(c, name) == serve_job[1000]
        assert wait_for(lambda: len(replicas(served, name)) == replica_count, timeout=120), replicas(
            served, name
        )
        # the request checks are the service's own: the same 422 naming the field
        resp = c.post(f"/v1/deployments/{name}/act", json={"observations": [[1.0, 2.0]]})
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "observations"
        # a new version is served by new replicas, and a rollback by the old version's again: exactly
        resp = c.post("/v1/deployments", json={"name": name, "policy": "job-serve", "checkpoint": 2000,
                                               "replace": True})  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert answers(c, name) == serve_job[2000]
        assert c.post(f"/v1/deployments/{name}/rollback").json()["version"] == 1
        assert answers(c, name) == serve_job[1000]
        apps = wait_for(
            lambda: len({r["actor_name"].split("#")[0] for r in replicas(served, name)}) == 1, timeout=60
        )
        assert apps  # the other version's application is removed
        assert c.delete(f"/v1/deployments/{name}").status_code == 204
        assert wait_for(lambda: not replicas(served, name), timeout=60)


def served_replicas(service, serve_service, serve_job, name: str, count: int, timeout_s: int):
    """Deploy job-serve's 1000-step checkpoint as ``name`` on ``count`` Serve replicas, each asked for at most
    ``timeout_s`` per try; returns the serving service once every replica is up, and one replica's pid."""
    with service.client() as c:
        resp = c.post("/v1/deployments", json={"name": name, "policy": "job-serve", "checkpoint": 1000})
        assert resp.status_code == 201, resp.text
    served = serve_service(name, RAYAC_SERVE_REPLICAS=str(count), RAYAC_SERVE_TIMEOUT_S=str(timeout_s))
    with served.client() as c:
        assert answers(c, name) == serve_job[1000]  # started
    assert wait_for(lambda: len(replicas(served, name)) == count, timeout=120)
    return served, replicas(served, name)[0]["pid"]


def test_a_replica_killed_under_load_gives_answers_or_clear_503s(service, serve_service, serve_job):
    served, victim = served_replicas(service, serve_service, serve_job, "kill", count=2, timeout_s=5)

    results: list[tuple[int | str, float, Any]] = []  # (status, latency, the answer or the error text)
    stop = threading.Event()

    def client_loop() -> None:
        with served.client() as c:
            for _ in range(150):  # bounded
                if stop.is_set():
                    return
                t0 = time.monotonic()
                try:
                    resp = c.post(
                        "/v1/deployments/kill/act", json={"observations": OBS[1], **BODY}, timeout=60
                    )
                    body = resp.json() if resp.status_code == 200 else resp.text[:300]
                    results.append((resp.status_code, time.monotonic() - t0, body))
                except httpx.HTTPError as err:  # a hang shows here (60 s) or as a dropped connection
                    results.append((type(err).__name__, time.monotonic() - t0, str(err)))

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    before = len(results)
    os.kill(victim, signal.SIGKILL)  # a replica of our own head, by its pid
    time.sleep(8.0)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)

    after_kill = results[before:]
    assert before > 0 and len(after_kill) > 10, (before, len(results))
    assert all(status in (200, 503) for status, _, _ in results), [
        r for r in results if r[0] not in (200, 503)
    ][:5]
    assert max(latency for _, latency, _ in results) < 3 * 5 + 10  # ATTEMPTS × RAYAC_SERVE_TIMEOUT_S + slack
    failed = [r for r in results if r[0] == 503]
    print(
        f"SERVE-KILL: {len(results)} requests, {before} before the kill, {len(failed)} 503s, max latency "
        f"{max(lat for _, lat, _ in results):.2f} s"
    )
    assert all("Serve replicas did not answer" in text and "retry" in text for _, _, text in failed), failed[
        :3
    ]
    assert len(failed) <= len(after_kill) // 4, f"{len(failed)} of {len(after_kill)} after the kill were 503"
    assert sum(1 for status, _, _ in after_kill if status == 200) > 10  # the other replica went on answering
    want = serve_job[1000][1]
    for status, _, body in results:  # every answer, before and after the kill, is the pinned policy's
        if status == 200:  # (batched with other requests on a replica: the same actions, floats to rounding)
            assert body["actions"] == want["actions"]
            assert max(abs(a - b) for a, b in zip(body["values"], want["values"], strict=True)) < 1e-5
    # Serve replaces the dead replica
    assert wait_for(lambda: len(replicas(served, "kill")) == 2 and victim not in [r["pid"] for r in replicas(served, "kill")],
                    timeout=120)  # fmt: skip
    with served.client() as c:
        assert answers(c, "kill") == serve_job[1000]


def test_the_only_replica_killed_gives_clear_503s_then_answers(service, serve_service, serve_job):
    """No replica at all until Serve has replaced it: each request waits at most 3 tries × RAYAC_SERVE_TIMEOUT_S,
    then is a 503 that says what happened — never a hang — and answers resume once the new replica is up."""
    served, victim = served_replicas(service, serve_service, serve_job, "solo", count=1, timeout_s=2)
    os.kill(victim, signal.SIGKILL)  # a replica of our own head, by its pid
    results: list[tuple[int | str, float, str]] = []
    deadline = time.monotonic() + 120
    with served.client() as c:
        while time.monotonic() < deadline:  # bounded: until answers resume (or 2 min)
            t0 = time.monotonic()
            try:
                resp = c.post("/v1/deployments/solo/act", json={"observations": OBS[0], **BODY}, timeout=60)
                results.append((resp.status_code, time.monotonic() - t0, resp.text[:300]))
            except httpx.HTTPError as err:
                results.append((type(err).__name__, time.monotonic() - t0, str(err)))
            if results[-1][0] == 200 and any(r[0] == 503 for r in results):
                break
            time.sleep(0.2)
    failed = [r for r in results if r[0] != 200]
    print(
        f"SERVE-SOLO: {len(results)} requests after the kill, {len(failed)} 503s, max latency "
        f"{max(lat for _, lat, _ in results):.1f} s"
    )
    assert all(status in (200, 503) for status, _, _ in results), failed[:3]
    assert max(latency for _, latency, _ in results) < 3 * 2 + 5  # ATTEMPTS × RAYAC_SERVE_TIMEOUT_S + slack
    assert all(
        "Serve replicas did not answer after 3 tries" in text and "retry" in text for _, _, text in failed
    )
    assert results[-1][0] == 200  # answers resumed
    assert wait_for(lambda: [r["pid"] for r in replicas(served, "solo")] not in ([], [victim]), timeout=120)
    with served.client() as c:
        assert answers(c, "solo") == serve_job[1000]
