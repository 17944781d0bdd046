"""The device kit (benchmarks/device/) never rots: its smoke mode runs every row here, from a bundle built for this
machine's Python, with only the unpacked bundle and a stand-in for the device image on the path."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "benchmarks" / "device"
_spec = importlib.util.spec_from_file_location("device_merge", KIT / "merge.py")
merge = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(merge)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env["RAYAC_VENV_PYTHON"] = sys.executable
    env["PYTHON"] = sys.executable  # pip download is driven by the venv's pip
    return env


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_bundle_and_smoke_suite_run_every_row_from_the_bundle_alone(tmp_path: Path) -> None:
    build, out = tmp_path / "build", tmp_path / "out"
    pyver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    made = subprocess.run(["bash", str(KIT / "bundle.sh"), "--python-version", pyver, "--fast", "--out", str(build)],
                          env=_env(), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    archive = build / f"bundle-cp{pyver.replace('.', '')}.tar.xz"
    assert archive.is_file() and archive.stat().st_size <= 60 * 2**20
    assert f"bundle: {archive}" in made.stdout and "MiB" in made.stdout
    assert "travels: working tree" in made.stdout

    ran = subprocess.run(["bash", str(KIT / "suite.sh"), "--smoke", "--bundle", str(archive), "--out", str(out)],
                         env=_env(), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-5000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["a3c.json", "atari.json", "env.json", "pong.json", "ps.json", "suite.json", "suite.log"]

    env = json.loads((out / "env.json").read_text())
    assert env["ray_ok"], env.get("ray_error")
    assert env["rayac_file"].startswith("/tmp/rdev.") and "/site/rayac/" in env["rayac_file"]
    assert not any(".venv" in p or p == str(ROOT) for p in env["sys_path"]), env["sys_path"]
    assert env["bundle"]["python_tag"] == f"cp{pyver.replace('.', '')}"
    assert env["envpool"] == "1.2.5" and not env["pydantic"].startswith("missing")

    suite = json.loads((out / "suite.json").read_text())
    assert {name: row["rc"] for name, row in suite["rows"].items()} == {
        "env": 0,
        "a3c": 0,
        "ps": 0,
        "atari": 0,
        "pong": 0,
    }
    a3c = json.loads((out / "a3c.json").read_text())
    assert [(c["workers"], c["shards"]) for c in a3c["cells"]] == [(1, 1), (2, 2)]
    assert all(c.get("pushes_per_s", 0) > 0 and c["env_steps_per_s"] > 0 for c in a3c["cells"]), a3c
    ps = json.loads((out / "ps.json").read_text())
    assert [(c["shards"], c["in_flight"]) for c in ps["cells"]] == [(1, 1), (2, 1)], ps
    assert all(c["floor_per_s"] > 0 and c["pushes_per_s"] > 0 for c in ps["cells"]), ps
    atari = json.loads((out / "atari.json").read_text())
    assert set(atari["rows"]) == {"raw-envpool", "rayac-0w", "rayac-2w"}
    assert all(row.get("steps_per_s", 0) > 0 for row in atari["rows"].values()), atari
    pong = json.loads((out / "pong.json").read_text())
    assert pong["stop_reason"] == "time_limit_s" and pong["env_steps"] > 0 and pong["workers"] == 2

    results, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    results.write_text("# Benchmark results\n")
    readme.write_text(
        "intro\n<!-- device_latest:start -->\nNo device run yet.\n<!-- device_latest:end -->\nrest\n"
    )
    merged = subprocess.run([sys.executable, str(KIT / "merge.py"), str(out), "--results", str(results),
                             "--readme", str(readme), "--date", "2026-12-04"], capture_output=True, text=True)  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    text = results.read_text()
    assert "<!-- device_suite:start -->" in text and "SMOKE RUN" in text and "| 2 | 2 |" in text
    assert "| raw-envpool |" in text and "2026-12-04" in text
    assert "No device run yet" not in readme.read_text() and readme.read_text().endswith("rest\n")
    refused = subprocess.run(
        [sys.executable, str(KIT / "merge.py"), str(out)], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "smoke results" in refused.stderr


def _runs(ray_ok: bool) -> dict:
    env = {"nproc": 16, "cuda": True, "gpu": "NVIDIA H200", "python": "3.12.3", "torch": "2.11.0", "ray_ok": ray_ok,
           "ray": "2.60.0", "envpool": "1.2.5", "bundle": {"rayac_commit": "abc1234"}}  # fmt: skip
    if not ray_ok:
        env["ray_error"] = "RuntimeError: no raylet"
    cells = [{"workers": w, "shards": 1, "env_steps_per_s": 1000.0 * w, "pushes_per_s": 25.0 * w,
              "staleness_mean": 0.5, "staleness_max": 3} for w in (1, 2, 4)]  # fmt: skip
    return {
        "env": env,
        "suite": {"rows": {"env": {"rc": 0, "seconds": 5}, "pong": {"rc": 124, "seconds": 300}}},
        "a3c": {"preset": "a3c_cartpole", "seconds": 8, "cells": cells} if ray_ok else {"error": "Ray did not start"},
        "ps": {"seconds": 1.0, "rounds": 3, "cells": [
            {"payload": "CartPole MLP (a3c_cartpole)", "parameters": 9155, "dtype": "float32", "shards": k,
             "in_flight": 8, "floor_per_s": 4000.0, "pushes_per_s": 4000.0 * r, "ratio": r}
            for k, r in ((1, 0.95), (4, 0.91))]} if ray_ok else {"error": "Ray did not start"},
        "atari": {"env": "ALE/Pong-v5", "num_envs": 64, "seconds": 20, "device": "cuda", "preset": "a2c_pong",
                  "rows": {"raw-envpool": {"steps_per_s": 40000.0, "x_raw": 1.0},
                           "rayac-0w": {"steps_per_s": 10000.0, "x_raw": 0.25},
                           "rayac-16w": {"steps_per_s": 30000.0, "x_raw": 0.75} if ray_ok else {"error": "Ray did not start"}}},
        "pong": {"preset": "a2c_pong", "workers": 16, "envs_per_worker": 4, "device": "cuda", "seconds": 240,
                 "env_steps": 4_000_000, "frames_per_s": 66000.0, "best_score": 18.5, "time_to_18_s": 201.0,
                 "curve": [[10.0, 100000, None], [100.0, 1000000, -15.0], [201.0, 2000000, 18.5]]},
    }  # fmt: skip


def test_merge_writes_every_table_with_the_machine_and_date() -> None:
    body, latest = merge.render(_runs(ray_ok=True), "2026-12-04")
    assert "16 cores, NVIDIA H200" in body and "2026-12-04" in body and "SMOKE" not in body
    assert "| 4 | 1 | 4,000 | 2.00 | 100 | 0.50 / 3 |" in body  # 4 workers: 2.00x the 2-worker row
    assert "| rayac-16w | 30,000 | 0.75 |" in body
    assert (
        "| CartPole MLP (a3c_cartpole) | 4 | 8 | 4,000 | 3,640 | 0.91 |" in body
        and "3 alternating rounds" in body
    )
    assert "time to ≥ +18: 201 s" in body and "| 201 | 2,000,000 | 18.5 |" in body
    assert "pong rc=124" in body
    assert "0.75× the raw envpool engine" in latest and "+18 in 201 s" in latest and "100 pushes/s" in latest
    assert "A3C parameter server: 0.91–0.95 of the bare-call floor" in latest


def test_merge_reports_a_machine_where_ray_did_not_start() -> None:
    body, latest = merge.render(_runs(ray_ok=False), "2026-12-04")
    assert "Ray did not start (RuntimeError: no raylet)" in body
    assert "A3C: not measured (Ray did not start)" in body
    assert "A3C parameter server: not measured (Ray did not start)" in body
    assert "| rayac-16w | error: Ray did not start |" in body
    assert "0.25× the raw envpool engine" in latest  # the in-process row still counts


def test_merge_refuses_an_empty_outdir(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(KIT / "merge.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "OUTDIR: no suite results" in done.stderr
