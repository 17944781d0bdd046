"""A stop is a stop (issue 20, item 1), against a real service and Ray: jobs stopped at once after their 201 (while
Ray still prepares them) or a moment later end as `stopped`, and no process of theirs trains on afterwards."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.api.conftest import small_job, wait_for

pytestmark = [pytest.mark.timeout(600)]


def processes_with(marker: bytes) -> list[int]:
    """PIDs whose environment holds ``marker`` (a job's RAYAC_STOP_FILE=…): its driver and anything it started."""
    pids = []
    for pid in filter(str.isdigit, (p.name for p in Path("/proc").iterdir())):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_a_job_stopped_while_ray_prepares_it_never_trains(service):
    job = small_job(steps=2_000_000, run__stop={"total_env_steps": 2_000_000}, run__eval_interval_steps=0,
                    resources__num_workers=1)  # fmt: skip
    ids = []
    with service.client() as c:
        for delay in (0.0, 0.3, 1.5):  # during submission's aftermath, runtime-env setup, driver start-up
            resp = c.post("/v1/jobs", json=job)
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["id"])
            time.sleep(delay)
            assert c.post(f"/v1/jobs/{ids[-1]}/stop").status_code == 200
        assert wait_for(
            lambda: all(c.get(f"/v1/jobs/{i}").json()["status"] == "stopped" for i in ids), timeout=120
        )
        markers = [f"RAYAC_STOP_FILE={service.storage / 'jobs' / f'{i}.stop'}".encode() for i in ids]
        # the record says stopped, and the processes agree: none of these jobs' processes lives on
        assert wait_for(lambda: not any(processes_with(m) for m in markers), timeout=60), [
            processes_with(m) for m in markers
        ]
        runs = [
            Path(c.get(f"/v1/jobs/{i}").json()["config"]["run"]["run_dir"]) / "metrics.jsonl" for i in ids
        ]
        sizes = [p.stat().st_size if p.exists() else 0 for p in runs]
        time.sleep(5)
        assert [p.stat().st_size if p.exists() else 0 for p in runs] == sizes  # nothing trains afterwards
        assert all(c.get(f"/v1/jobs/{i}").json()["status"] == "stopped" for i in ids)
