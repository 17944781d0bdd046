"""Sweeps through the service (issue 23, item 7): submitted over REST, a trial's metrics over SSE, a trial's and the
best trial's policy queried with act, the sweep stopped with every trial; a service restart in the middle of a
second sweep loses and duplicates no trial; a bad search space is a 422 naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import follow, wait_for
from tests.api.test_stop_is_a_stop import processes_with

pytestmark = [pytest.mark.timeout(900)]
OBS = {"observations": [[0.0, 0.0, 0.0, 0.0], [0.1, -0.2, 0.05, 0.3]], "deterministic": True}


def sweep_body(search: dict, *, steps: int = 4000, **options) -> dict:
    config = {
        "env": {"id": "CartPole-v1", "num_envs": 8, "seed": 0},
        "optim": {"lr": 0.002},
        "resources": {"num_workers": 0},
        "run": {"stop": {"total_env_steps": steps}, "eval_interval_steps": 2000, "eval_episodes": 3,
                "checkpoint_interval_steps": 2000, "tensorboard": False},
    }  # fmt: skip
    return {
        "name": "sweep-test",
        "config": config,
        "search": search,
        "samples": 1,
        "concurrent": 1,
        **options,
    }


def _sweep(c: httpx.Client, sweep_id: str) -> dict:
    resp = c.get(f"/v1/sweeps/{sweep_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def _trial(c: httpx.Client, sweep_id: str, index: int, status: tuple[str, ...]) -> dict | None:
    trials = sorted(_sweep(c, sweep_id)["trials"], key=lambda t: t["id"])
    return trials[index] if len(trials) > index and trials[index]["status"] in status else None


def test_a_sweep_over_rest_streams_acts_and_stops(service):
    # a grid of two trials, one at a time: the first is short (followed to its end), the second long (stopped)
    body = sweep_body({"run.stop.total_env_steps": "choice(4000, 2000000)"}, search_alg="grid")
    with service.client() as c:
        resp = c.post("/v1/sweeps", json=body)
        assert resp.status_code == 201, resp.text
        sweep = resp.json()
        assert sweep["id"].startswith("sweep-") and sweep["status"] == "pending" and sweep["trials"] == []
        assert (
            sweep["search"] == body["search"]
            and sweep["samples"] == 1
            and sweep["metric"] == "eval/return_mean"
        )
        sid = sweep["id"]
        assert sid in [s["id"] for s in c.get("/v1/sweeps").json()["sweeps"]]

        first = wait_for(lambda: _trial(c, sid, 0, ("running", "succeeded")), timeout=300, every=1)
        assert first, _sweep(c, sid)
        assert first["job_id"] == f"{sid}-{first['id']}" and first["config"] == {
            "run.stop.total_env_steps": 4000
        }
        # the trial is a job: its metrics stream like a job's, to its final status
        events, final = follow(c, first["job_id"], timeout=300)
        assert final == {"status": "succeeded", "error": None}, final
        assert [i for i, _ in events] == list(range(len(events)))
        steps = [r["time/env_steps"] for _, r in events]
        assert (
            steps == sorted(steps) and steps[-1] >= 4000 and any("eval/return_mean" in r for _, r in events)
        )
        job = c.get(f"/v1/jobs/{first['job_id']}").json()
        assert job["status"] == "succeeded" and job["checkpoints"]
        assert job["config"]["run"]["run_dir"].endswith(f"/sweeps/{sid}/trials/{first['id']}")
        # its policy is served like a job's
        acted = c.post(f"/v1/policies/{first['job_id']}/act", json=OBS)
        assert acted.status_code == 200, acted.text
        assert len(acted.json()["actions"]) == 2
        second = wait_for(lambda: _trial(c, sid, 1, ("running",)), timeout=300, every=1)
        assert second, _sweep(c, sid)
        # it has evaluated and checkpointed once: whichever trial is best has a policy
        assert wait_for(lambda: c.get(f"/v1/jobs/{second['job_id']}").json()["checkpoints"], timeout=120)
        assert c.post(f"/v1/jobs/{second['job_id']}/stop").status_code == 409  # a trial stops with its sweep
        stopped = c.post(f"/v1/sweeps/{sid}/stop")
        assert stopped.status_code == 200, stopped.text
        done = wait_for(lambda: (s := _sweep(c, sid))["status"] == "stopped" and s, timeout=120)
        assert done, _sweep(c, sid)
        by_id = {t["id"]: t for t in done["trials"]}
        assert len(by_id) == 2 and by_id[first["id"]]["status"] == "succeeded"
        assert by_id[second["id"]]["status"] == "stopped", done["trials"]
        assert by_id[second["id"]]["env_steps"] < 2_000_000
        assert c.get(f"/v1/jobs/{second['job_id']}").json()["status"] == "stopped"
        assert c.post(f"/v1/sweeps/{sid}/stop").status_code == 409
        # the best trial's policy at the sweep's stable address
        best = done["best_job_id"]
        assert best == f"{sid}-{done['best_trial']}" and best in (first["job_id"], second["job_id"]), done
        assert by_id[done["best_trial"]]["best"] == max(
            t["best"] for t in done["trials"] if t["best"] is not None
        )
        described = c.get(f"/v1/sweeps/{sid}/best")
        assert described.status_code == 200 and described.json()["job_id"] == best, described.text
        best_acted = c.post(f"/v1/sweeps/{sid}/best/act", json=OBS)
        assert best_acted.status_code == 200, best_acted.text
        assert best_acted.json() == c.post(f"/v1/policies/{best}/act", json=OBS).json()
        # and nothing of the sweep runs on: no process with its stop file in its environment (driver, trials)
        marker = f"RAYAC_STOP_FILE={service.storage / 'sweeps' / f'{sid}.stop'}".encode()
        assert wait_for(lambda: not processes_with(marker), timeout=60), processes_with(marker)
        metrics = Path(by_id[second["id"]]["run_dir"]) / "metrics.jsonl"
        size = metrics.stat().st_size
        wait_for(lambda: False, timeout=3)
        assert metrics.stat().st_size == size


def test_a_service_restart_mid_sweep_loses_and_duplicates_no_trial(service):
    body = sweep_body({"optim.lr": "choice(0.002, 0.003)"}, steps=30_000, search_alg="grid")
    with service.client() as c:
        resp = c.post("/v1/sweeps", json=body)
        assert resp.status_code == 201, resp.text
        sid = resp.json()["id"]
        first = wait_for(lambda: _trial(c, sid, 0, ("running",)), timeout=300, every=1)
        assert first, _sweep(c, sid)
        before = _sweep(c, sid)
    service.stop()  # mid-trial: the sweep's Ray job runs on without the service
    service.start()
    with service.client() as c:
        assert _sweep(c, sid)["status"] in ("running", "succeeded")
        done = wait_for(lambda: (s := _sweep(c, sid))["status"] in ("succeeded", "failed", "stopped") and s,
                        timeout=400, every=1)  # fmt: skip
        assert done and done["status"] == "succeeded", done
        ids = [t["id"] for t in done["trials"]]
        assert len(ids) == len(set(ids)) == 2  # the grid's two trials, each once
        assert {t["id"] for t in before["trials"]} <= set(ids)  # none seen before the restart was lost
        assert sorted(t["config"]["optim.lr"] for t in done["trials"]) == [0.002, 0.003]
        assert all(t["status"] == "succeeded" and t["env_steps"] >= 30_000 for t in done["trials"]), done
        assert done["best_trial"] in ids and done["best_job_id"] == f"{sid}-{done['best_trial']}"
        # each trial is one job, followed to its end
        jobs = [j for j in c.get("/v1/jobs", params={"limit": 200}).json()["jobs"] if j["id"].startswith(sid)]
        assert sorted(j["id"] for j in jobs) == sorted(t["job_id"] for t in done["trials"])
        assert all(j["status"] == "succeeded" for j in jobs), jobs
        for trial in done["trials"]:  # and trained once: no step of a trial was run or recorded twice
            lines = (Path(trial["run_dir"]) / "metrics.jsonl").read_text().splitlines()
            steps = [json.loads(line)["time/env_steps"] for line in lines]
            assert steps == sorted(set(steps)), steps
    doc = json.loads((service.storage / "sweeps" / sid / "sweep.json").read_text())
    assert doc["state"] == "finished" and sorted(t["id"] for t in doc["trials"]) == sorted(ids)


@pytest.mark.parametrize(
    ("search", "options", "field", "words"),
    [
        ({"optim.lrx": "loguniform(1e-5,1e-1)"}, {}, "search.optim.lrx", "unknown field"),  # an unknown key
        ({"optim.lr": "loguniform(0,0.1)"}, {}, "search.optim.lr", "bounds must be > 0"),  # a bad bound
        (
            {"optim.lr": "loguniform(1e-5,5)"},
            {},
            "search.optim.lr",
            "less than or equal to 1",
        ),  # out of range
        ({"optim.lr": "uniform(fast,slow)"}, {}, "search.optim.lr", "'fast' is not a number"),  # non-numeric
        ({"optim.lr": "choice(fast,slow)"}, {}, "search.optim.lr", "valid number"),
        ({"optim.lr": "normal(0,1)"}, {}, "search.optim.lr", "the search spec is one of"),
        ({"optim.lr": "uniform(0.001,0.01)"}, {"mode": "maximum"}, "mode", ""),
        ({"optim.lr": "uniform(0.001,0.01)"}, {"concurrent": 5}, "concurrent", "the Ray cluster has 4"),
        ({}, {}, "search", ""),
    ],
)
def test_a_bad_sweep_is_a_422_naming_the_field(service, search, options, field, words):
    with service.client() as c:
        before = len(c.get("/v1/sweeps").json()["sweeps"])
        resp = c.post("/v1/sweeps", json=sweep_body(search, **options))
        assert resp.status_code == 422, resp.text
        errors = resp.json()["errors"]
        assert errors[0]["field"] == field and words in errors[0]["msg"], errors
        assert resp.json()["detail"].startswith(f"{field}: ")
        assert len(c.get("/v1/sweeps").json()["sweeps"]) == before  # nothing registered


def test_an_unknown_sweep_is_404(service):
    with service.client() as c:
        for method, path in (("get", "/v1/sweeps/sweep-nope"), ("post", "/v1/sweeps/sweep-nope/stop"),
                             ("get", "/v1/sweeps/sweep-nope/best")):  # fmt: skip
            resp = c.request(method, path)
            assert resp.status_code == 404 and "no sweep 'sweep-nope'" in resp.json()["detail"], resp.text
        resp = c.post("/v1/sweeps/sweep-nope/best/act", json=OBS)
        assert resp.status_code == 404 and "no sweep" in resp.json()["detail"], resp.text


def test_a_sweep_stopped_at_once_ends_stopped_and_trains_nothing(service):
    """Stopped right after its 201 (while Ray prepares its driver) or a moment later (while Tune starts its
    trials): the sweep ends `stopped` with every trial, no process of it lives on and nothing trains afterwards."""
    import time

    body = sweep_body({"optim.lr": "choice(0.002, 0.003)"}, steps=200_000, search_alg="grid")
    with service.client() as c:
        sids = []
        for delay in (0.0, 1.0, None):  # None: as soon as Tune has started a trial
            resp = c.post("/v1/sweeps", json=body)
            assert resp.status_code == 201, resp.text
            sids.append(resp.json()["id"])
            if delay is None:
                assert wait_for(lambda: _sweep(c, sids[-1])["trials"], timeout=300, every=0.1)
            else:
                time.sleep(delay)
            assert c.post(f"/v1/sweeps/{sids[-1]}/stop").status_code == 200
        assert wait_for(lambda: all(_sweep(c, s)["status"] == "stopped" for s in sids), timeout=120), [
            _sweep(c, s) for s in sids
        ]
        markers = [f"RAYAC_STOP_FILE={service.storage / 'sweeps' / f'{s}.stop'}".encode() for s in sids]
        assert wait_for(lambda: not any(processes_with(m) for m in markers), timeout=120)
        finals = [_sweep(c, s) for s in sids]
        trials = [t for f in finals for t in f["trials"]]
        assert all(f["status"] == "stopped" for f in finals) and all(t["status"] == "stopped" for t in trials)
        runs = [Path(t["run_dir"]) / "metrics.jsonl" for t in trials]
        sizes = [p.stat().st_size if p.exists() else 0 for p in runs]
        time.sleep(5)
        assert [p.stat().st_size if p.exists() else 0 for p in runs] == sizes  # nothing trains afterwards
        assert [_sweep(c, s)["status"] for s in sids] == ["stopped"] * 3
        assert trials and all(t["env_steps"] < 200_000 for t in trials)  # the last one's trial was cut short
