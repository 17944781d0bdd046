"""Run by test_multinode_service.py in its own process: a Ray cluster of a head (with the dashboard and its Jobs
API) and one worker node that alone has the 'learner' resource, on this machine (ray.cluster_utils.Cluster).
Prints one READY line, then holds the cluster until its standard input closes."""

from __future__ import annotations

import json
import sys

from ray.cluster_utils import Cluster

from api.services.ray_cluster import free_port


def main() -> None:
    dashboard_port = free_port()
    # Every agent port is picked free: Ray's defaults collide with any other Ray on this machine.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port,
        "dashboard_agent_listen_port": free_port(), "node_ip_address": "127.0.0.1",
    })  # fmt: skip
    learner_node = cluster.add_node(num_cpus=1, resources={"learner": 1}, dashboard_agent_listen_port=free_port(),
                                    node_ip_address="127.0.0.1")  # fmt: skip
    cluster.wait_for_nodes()
    try:
        print("READY " + json.dumps({
            "dashboard_url": f"http://127.0.0.1:{dashboard_port}", "head": cluster.head_node.node_id,
            "learner_node": learner_node.node_id,
        }), flush=True)  # fmt: skip
        sys.stdin.read()  # until the test closes it
    finally:
        cluster.shutdown()  # only the nodes this script started


if __name__ == "__main__":
    main()
