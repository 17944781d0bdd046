"""The routes the dashboard adds or relies on, in-process (no Ray: a fake job client): the paged job list,
per-field 422 errors, presets and schema, the public page vs the token, and the bounded, cached episode GIF."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from types import SimpleNamespace

import imageio.v2 as imageio
import pytest
from fastapi.testclient import TestClient

import rayac
from api.app import create_app
from api.routes.dashboard import STATIC_DIR
from api.services.episodes import Busy
from api.services.store import JobRecord
from api.settings import Settings

TOKEN = "dash-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeRay:
    def submit_job(self, **kwargs):
        return kwargs["submission_id"]

    def get_job_info(self, job_id):
        return SimpleNamespace(status="RUNNING", message=None)


class FakeCluster:
    connected, owned_head, dashboard_url = True, None, "http://fake"

    def client(self):
        return FakeRay()

    def alive(self):
        return True

    def alive_processes(self):
        return True

    def total_resources(self):
        return {"CPU": 4.0}


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(storage_dir=tmp_path / "storage", api_token=TOKEN), cluster=FakeCluster())


@pytest.fixture
def client(app):
    with TestClient(app, headers=AUTH) as c:
        yield c


def add_job(app, run_dir, *, name="j", status="succeeded", created_at=None) -> JobRecord:
    now = created_at if created_at is not None else time.time()
    rec = JobRecord(
        f"job-{name}", name, status, rayac.Config().model_dump(mode="json"), str(run_dir), now, now, None
    )
    app.state.jobs.store.insert(rec)
    return rec


def test_job_list_pages_newest_first_with_an_opaque_cursor(app, client, tmp_path):
    for i in range(7):
        add_job(app, tmp_path / f"r{i}", name=f"{i}", created_at=1000.0 + i // 2)  # ties on created_at too
    seen, cursor, pages = [], None, 0
    while True:
        resp = client.get("/v1/jobs", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        seen += [j["id"] for j in body["jobs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 7
    assert seen == [f"job-{i}" for i in (6, 5, 4, 3, 2, 1, 0)]  # newest first, ties by id
    assert client.get("/v1/jobs").json()["next_cursor"] is None  # default limit 50: one page
    for bad in ({"cursor": "not-a-cursor"}, {"cursor": "WzEsMl0"}, {"limit": 0}, {"limit": 201}):
        resp = client.get("/v1/jobs", params=bad)
        assert resp.status_code == 422, (bad, resp.text)
        assert next(iter(bad)) in resp.json()["detail"]


def test_job_summary_has_the_latest_returns_and_no_config(app, client, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    records = [{"time/env_steps": 100, "rollout/episode_return_mean": 12.0, "eval/return_mean": 30.0},
               {"time/env_steps": 200, "rollout/episode_return_mean": 15.5}]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"time/env')
    add_job(app, run, name="m")
    add_job(app, tmp_path / "empty", name="e", status="pending", created_at=0)
    jobs = {j["id"]: j for j in client.get("/v1/jobs").json()["jobs"]}
    assert "config" not in jobs["job-m"]
    assert {k: jobs["job-m"][k] for k in ("algo", "env_id", "env_steps", "episode_return", "eval_return")} == {
        "algo": "a2c", "env_id": "CartPole-v1", "env_steps": 200, "episode_return": 15.5, "eval_return": 30.0}  # fmt: skip
    assert jobs["job-e"]["env_steps"] is None and jobs["job-e"]["status"] == "running"  # refreshed from "Ray"


def test_422_lists_each_problem_with_its_field(client):
    cases = [
        ({"algo": {"gamma": 1.5}, "bogus": 1}, {"config.algo.gamma": "less than 1", "config.bogus": "unknown field"}),
        ({"algo": {"estimator": "mc", "batch_mode": "steps"}}, {"config.algo.batch_mode": "whole episodes"}),
        ({"env": {"id": "os:system"}}, {"config.env.id": "does not allow"}),
        ({"env": {"id": "Pendulum-v1"}, "algo": {"estimator": "q"}}, {"config.algo.estimator": ""}),
    ]  # fmt: skip
    for config, expected in cases:
        resp = client.post("/v1/jobs/validate", json={"config": config})
        assert resp.status_code == 422, resp.text
        errors = {e["field"]: e["msg"] for e in resp.json()["errors"]}
        assert set(errors) == set(expected), resp.json()
        for field, words in expected.items():
            assert words in errors[field] and f"{field}: {errors[field]}" in resp.json()["detail"]


def test_presets_are_full_valid_configs_and_the_schema_describes_them(client):
    presets = client.get("/v1/presets").json()["presets"]
    assert {"a2c_cartpole", "a3c_cartpole"} <= {p["name"] for p in presets}
    for p in presets:
        assert client.post("/v1/jobs/validate", json={"config": p["config"]}).status_code == 200, p["name"]
    schema = client.get("/v1/config/schema").json()
    assert set(schema["properties"]) == set(presets[0]["config"])
    assert "Discount factor" in schema["$defs"]["AlgoConfig"]["properties"]["gamma"]["description"]


def test_the_page_is_public_and_every_route_it_calls_needs_the_token(app):
    with TestClient(app) as anon:
        page = anon.get("/")
        assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("/static/app.js", "/static/api.js", "/static/vendor/uplot/uPlot.iife.min.js"):
            assert anon.get(asset).status_code == 200, asset
        for path in ("/v1/jobs", "/v1/config/schema", "/v1/presets", "/v1/policies/job-x/episode.gif"):
            assert anon.get(path).status_code == 401, path
    scripts = " ".join(p.read_text() for p in STATIC_DIR.glob("*.js"))
    assert "localStorage" not in scripts and "?token" not in scripts  # the token stays in sessionStorage
    assert (STATIC_DIR / "vendor/uplot/LICENSE").is_file()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    cfg = rayac.build_config(preset="a2c_cartpole", overrides=["run.stop.total_env_steps=400", "run.tensorboard=false",
                             "run.progress_bar=false", "run.eval_interval_steps=0", "env.num_envs=4"])  # fmt: skip
    return Path(rayac.train(cfg, run_dir=tmp_path_factory.mktemp("trained") / "run").run_dir)


def test_episode_gif_is_bounded_and_cached(app, client, trained_run):
    add_job(app, trained_run, name="p")
    renderer = app.state.episodes
    resp = client.get("/v1/policies/job-p/episode.gif", params={"seed": 1})
    assert (
        resp.status_code == 200
        and resp.content[:4] == b"GIF8"
        and resp.headers["content-type"] == "image/gif"
    )
    assert 1 <= int(resp.headers["x-episode-length"]) <= renderer.max_steps and renderer.renders == 1
    assert resp.headers["x-checkpoint"].startswith("ckpt_")
    frames = imageio.mimread(io.BytesIO(resp.content))
    assert frames[0].shape[:2] == (200, 300)  # CartPole's 600x400 at half resolution
    assert 2 <= len(frames) <= int(resp.headers["x-episode-length"]) + 1
    assert client.get("/v1/policies/job-p/episode.gif", params={"seed": 1}).content == resp.content
    assert renderer.renders == 1  # the same (policy, checkpoint, seed): from the cache
    renderer.max_steps = 3
    short = client.get("/v1/policies/job-p/episode.gif", params={"seed": 2})
    assert short.status_code == 200 and short.headers["x-episode-length"] == "3" and renderer.renders == 2
    assert client.get("/v1/policies/job-p/episode.gif", params={"seed": -1}).status_code == 422
    assert client.get("/v1/policies/job-nope/episode.gif").status_code == 404
    add_job(app, trained_run.parent / "none", name="untrained")
    assert "no checkpoint" in client.get("/v1/policies/job-untrained/episode.gif").json()["detail"]


def test_episode_renders_are_capped_shared_and_off_the_event_loop(app, trained_run):
    add_job(app, trained_run, name="p")
    renderer = app.state.episodes
    renderer.max_concurrent, renderer.max_waiting = 1, 0

    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        tick = asyncio.create_task(ticker())
        same = await asyncio.gather(renderer.gif("job-p", 5), renderer.gif("job-p", 5))
        busy = await asyncio.gather(
            renderer.gif("job-p", 6), renderer.gif("job-p", 7), return_exceptions=True
        )
        tick.cancel()
        return same, busy, ticks

    same, busy, ticks = asyncio.run(scenario())
    # one render for both waiters on a key, one for seed 6
    assert same[0] is same[1] and renderer.renders == 2
    assert isinstance(busy[1], Busy) and busy[0].length >= 1  # a second distinct render over the cap: refused
    assert ticks > 0  # the loop kept running while frames were drawn in a thread
    assert not renderer.inflight
