"""Run by test_multinode.py in its own process: A3C on a Ray cluster of a head and two worker nodes (one
machine, ray.cluster_utils.Cluster), with one worker node removed mid-training. Prints one RESULT line."""

from __future__ import annotations

import json
import sys

import ray
from ray.cluster_utils import Cluster

import rayac
from rayac.config import build_config
from rayac.metrics import read_metrics


def main(run_dir: str) -> None:
    # The head has no CPUs, so rollout workers can only land on worker nodes; it has the 'learner' resource,
    # so the parameter server is pinned there and is never on the node that goes away.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "resources": {"learner": 1},
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                           "health_check_failure_threshold": 3},
    })  # fmt: skip
    worker_nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    state: dict = {}
    try:
        cfg = build_config(preset="a3c_cartpole", overrides=[
            "resources.num_workers=2", "resources.learner_cpus=0", "resources.learner_resources={learner: 1}",
            "env.seed=0", "run.stop.total_env_steps=300000", "run.stop.target_return=475",
            # the first evaluation (where a run can stop, solved) comes after the check 3,000 steps past the node's
            # removal at ~2,000: with evaluations every 5,000 a lucky run solved at 5,000, before the check
            "run.eval_interval_steps=10000", "run.progress_bar=false", "run.tensorboard=false",
        ])  # fmt: skip

        def callback(runner, record):
            algo = runner.algo
            if "before" not in state and record["time/env_steps"] >= 2000:
                state["before"] = algo.worker_nodes()
                state["ps"] = algo.ps_node()
                victim = next(n for n in worker_nodes if n.node_id == state["before"][0])
                state["removed"] = victim.node_id
                state["removed_at"] = record["time/env_steps"]
                cluster.remove_node(victim)
            elif (
                "removed" in state
                and "after" not in state
                and record["time/env_steps"] >= state["removed_at"] + 3000
            ):
                state["after"] = algo.worker_nodes()

        result = rayac.Runner(cfg, run_dir=run_dir, callbacks=[callback]).run()
        records = read_metrics(f"{run_dir}/metrics.jsonl")
        print("RESULT " + json.dumps({
            "head": cluster.head_node.node_id, "worker_nodes": [n.node_id for n in worker_nodes], **state,
            "solved": result.solved, "env_steps": result.env_steps,
            "worker_restarts": max(r.get("workers/restarts", 0) for r in records),
            "ps_restarts": max(r.get("a3c/ps_restarts", 0) for r in records),
        }), flush=True)  # fmt: skip
    finally:
        ray.shutdown()
        cluster.shutdown()  # only the nodes this script started


if __name__ == "__main__":
    main(sys.argv[1])
