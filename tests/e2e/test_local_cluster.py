"""`ray up` on cluster/local.yaml for real: a head (with the rayac service) at 127.0.0.1 and a worker node at
127.0.0.2 over ssh, a CartPole job over REST, act, `ray down`.

Everything runs inside its own PID namespace (unshare), so `ray up`/`ray down` — which run `ray stop` — see only
this cluster's processes, and whatever is left dies with the namespace. Needs root, sshd and rsync
(`make test` installs them)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]


def cluster_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "127.0.0.2" in line or ":6390" in line]


def modes_on_the_way(*paths: Path) -> dict[str, int]:
    """The mode of every directory from / to each path (what a chmod to let the ssh user in would change)."""
    dirs = {d for p in paths for d in [p.resolve(), *p.resolve().parents]}
    return {str(d): d.stat().st_mode for d in dirs if d.is_dir()}


def test_ray_up_local_cluster_serves_trains_and_goes_down(tmp_path):
    venv = Path(sys.executable).parent.parent
    had_tmp_ray = Path("/tmp/ray").exists()
    modes = modes_on_the_way(venv, Path(sys.executable), ROOT)
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", str(ROOT / "cluster" / "local-e2e.sh"),
                           str(venv), str(tmp_path / "state")], capture_output=True, text=True, timeout=800)  # fmt: skip
    lines = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in proc.stdout.splitlines() if " " in ln}
    logs = proc.stdout[-3000:] + proc.stderr[-3000:]
    up = tmp_path / "state" / "ray-up.log"
    assert lines.get("UP", "").startswith("rc=0"), logs + (up.read_text()[-4000:] if up.exists() else "")
    assert "E2E" in lines, logs
    e2e = json.loads(lines["E2E"])
    assert e2e["healthz"] and e2e["nodes_before_job"] == 2, e2e  # head + the worker node joined
    serve_log = tmp_path / "state" / "rayac-serve.log"
    assert e2e["submit_status"] == 201 and e2e["status"] == "succeeded", json.dumps(e2e) + (
        serve_log.read_text()[-3000:] if serve_log.exists() else ""
    )
    assert e2e["act_status"] == 200 and len(e2e["actions"]) == 3 and set(e2e["actions"]) <= {0, 1}
    assert lines.get("DOWN", "").startswith("rc=0"), logs
    assert lines.get("LEFT") == "0", logs  # ray down left no Ray process of that cluster
    assert cluster_processes() == []  # and nothing of it outlives the namespace on the host
    assert Path("/tmp/ray").exists() == had_tmp_ray  # its /tmp/ray was private, and its mount point is gone
    # the ssh user reached the venv, its interpreter and this checkout (a private clone, say) without a chmod
    assert modes_on_the_way(venv, Path(sys.executable), ROOT) == modes
