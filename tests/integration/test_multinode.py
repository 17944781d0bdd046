"""A3C across nodes (a head and two worker nodes on this machine), surviving the loss of one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_a3c_workers_spread_and_survive_a_removed_node(tmp_path):
    script = Path(__file__).with_name("multinode_a3c.py")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=540)  # fmt: skip
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, proc.stdout[-3000:] + proc.stderr[-5000:]
    r = json.loads(line[7:])
    assert sorted(r["before"]) == sorted(r["worker_nodes"])  # one worker on each worker node (SPREAD)
    assert r["ps"] == r["head"]  # pinned by the 'learner' resource
    survivor = next(n for n in r["worker_nodes"] if n != r["removed"])
    assert "after" in r, r  # the run went on 3,000 env steps past the removal
    assert r["after"] == [survivor, survivor]  # the lost node's worker came back on the remaining node
    assert r["worker_restarts"] >= 1 and r["ps_restarts"] == 0
    assert r["solved"], r
