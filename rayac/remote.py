"""The only module that applies ``ray.remote``: actor classes, their resource options, and Ray start-up.

Everything else in rayac is a plain class; ``num_workers=0`` never imports Ray at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

from rayac.config import Config
from rayac.envs import SpaceSpec

log = logging.getLogger(__name__)

# Embedded local Ray: loopback only, no telemetry, no dashboard, no token (nothing leaves 127.0.0.1).
LOCAL_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}


def init_ray(*, num_cpus: int | None = None) -> bool:
    """Connect to ``RAY_ADDRESS`` if set, else start an embedded local Ray. Returns True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return True
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    if not sys.stderr.isatty():  # a log file or a pipe: the workers' lines without terminal colour codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    cores = os.cpu_count() or 1
    cpus = max(cores, num_cpus or 0)
    # Ray's own INFO line ("INFO worker.py:… -- Started a local Ray instance.") read as noise to a newcomer: one
    # plain line instead; Ray's warnings and errors still show
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True,
             _node_ip_address="127.0.0.1", logging_level=logging.WARNING)  # fmt: skip
    # more CPUs than cores: what the run's actors reserve (a newcomer asked why 3 CPUs on a 2-core machine)
    what = f"{cpus} CPUs" if cpus == cores else f"{cpus} CPUs for the run's actors, on {cores} cores"
    print(f"rayac: started a local Ray on 127.0.0.1 ({what}; set RAY_ADDRESS to use a cluster)",
          file=sys.stderr, flush=True)  # fmt: skip
    return True


def spread_strategy() -> Any:
    """Where a run's actors go: spread over the nodes, or, when the run is itself a Tune trial (a sweep), into
    the trial's placement group, whose bundles were sized from the same config."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = ray.util.get_current_placement_group()
    if group is None:
        return "SPREAD"
    return PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)


def _remote(cls: type, **options: Any):
    import ray

    return ray.remote(**options)(cls)


def make_workers(
    cls: type, cfg: Config, spec: SpaceSpec, *, count: int, seed_offset: int = 0, **options: Any
):
    """``count`` actors of a worker class built as ``cls(cfg, spec, worker_index=i, seed_offset=...)``, spread over
    nodes, one ``worker_cpus`` each; Ray restarts one whose process dies. ``options``: more actor options
    (``max_concurrency``...)."""
    actor_cls = _remote(
        cls, num_cpus=cfg.resources.worker_cpus, max_restarts=-1, max_task_retries=0, **options
    )
    return [
        actor_cls.options(scheduling_strategy=spread_strategy()).remote(
            cfg, spec, worker_index=i, seed_offset=seed_offset
        )
        for i in range(count)
    ]


def kill_actors(handles: list) -> None:
    import ray

    for h in handles:
        with contextlib.suppress(Exception):  # already gone
            ray.kill(h, no_restart=True)


def make_parameter_servers(cfg: Config, spec: SpaceSpec, *, num_shards: int) -> list:
    """The A3C parameter-server shards. Together they reserve what one server did (``learner_cpus`` and
    ``learner_resources`` split evenly), so changing K never makes a run unschedulable. Ray restarts a shard whose
    process dies; the driver then hands that shard its own last checkpoint. Each shard runs one call at a time:
    its slices never wait for another shard's."""
    from rayac.a3c.server import ParameterServer

    res = cfg.resources
    gpus = 1 / num_shards if res.device == "cuda" else 0
    actor_cls = _remote(ParameterServer, num_cpus=res.learner_cpus / num_shards, num_gpus=gpus, max_restarts=-1,
                        max_task_retries=0,
                        resources={k: v / num_shards for k, v in res.learner_resources.items()})  # fmt: skip
    return [
        actor_cls.remote(cfg, spec, shard=i, num_shards=num_shards, publish=True) for i in range(num_shards)
    ]


STARTUP_TIMEOUT_S = float(os.environ.get("RAYAC_ACTOR_STARTUP_TIMEOUT_S", "120"))


class ActorStartupError(RuntimeError):
    """Ray could not start a run's actors in time: the message says what they need and what the cluster has."""


def wait_for_actors(handles: list, *, what: str, cfg: Config) -> None:
    """Block until every actor has started; an actor Ray cannot place never raises by itself, so say why here."""
    import ray
    from ray.exceptions import GetTimeoutError

    try:
        ray.get([h.__ray_ready__.remote() for h in handles], timeout=STARTUP_TIMEOUT_S)
    except GetTimeoutError:
        kill_actors(handles)  # pending actors would otherwise take their CPUs the moment some free up
        res = cfg.resources
        learner_actor = cfg.algo.name == "a3c" or bool(res.learner_resources) or res.device == "cuda"
        need = res.num_workers * res.worker_cpus + (res.learner_cpus if learner_actor else 0)
        have = ray.cluster_resources()
        custom = "".join(f"; learner_resources.{key}: {amount:g} needed, the cluster has {have.get(key, 0):g}"
                         for key, amount in res.learner_resources.items())  # fmt: skip
        raise ActorStartupError(
            f"{what} did not start within {STARTUP_TIMEOUT_S:.0f}s: they need {need:g} CPUs "
            f"(resources.num_workers × worker_cpus + learner_cpus), the Ray cluster has {have.get('CPU', 0):g}"
            f"{custom}. Lower resources.num_workers / worker_cpus / learner_cpus, or add nodes."
        ) from None


def make_learner(cfg: Config, spec: SpaceSpec):
    """The A2C learner as an actor, placed like the A3C parameter server (``learner_resources``, a GPU for
    ``device: cuda``), so the driver — which writes the run's files — stays where it was started."""
    from rayac.learning.learner import Learner

    res = cfg.resources
    actor_cls = _remote(Learner, num_cpus=res.learner_cpus, num_gpus=1 if res.device == "cuda" else 0,
                        max_restarts=0, resources=dict(res.learner_resources))  # fmt: skip
    return actor_cls.remote(cfg, spec)
