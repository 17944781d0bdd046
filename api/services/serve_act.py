"""Deployment act on Ray Serve (``RAYAC_SERVE_REPLICAS=N|auto``): replicas spread over the service's cluster.

Each deployment version is one Serve application, ``rayac-<name>-<version dir>``, of ``PolicyReplica``: its
pinned checkpoint's files travel in the replicas' init arguments (replicas on other nodes cannot read the
service's storage), and each replica micro-batches concurrent requests with ``@serve.batch`` through the same
``forward_batch`` as the in-process path — so the answers are the same. Serve runs without its HTTP proxy
(``proxy_location="Disabled"``); the service calls it through a ``DeploymentHandle``, after its own checks
of the request (the same model, validation and 422s as in process).

A version switch (deploy, rollback) starts the new application and only then routes to it; the old one is
deleted. A replica that dies mid-request fails that call fast (Serve replaces the replica): it is retried on
another, and after ``ATTEMPTS`` tries — or ``serve_timeout_s`` per try — the request is a 503 saying so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import serve

from api.services.errors import Unavailable
from api.services.policies import ActResult, forward_batch
from api.services.ray_cluster import enable_token_auth
from rayac.checkpoint import load_policy

log = logging.getLogger(__name__)

APP_PREFIX = "rayac-"
PINNED_FILES = ("policy.safetensors", "config.json", "spaces.json", "state.json")
REPLICA_CPUS = 1.0
AUTO_MAX_REPLICAS = 8
BATCH_MAX_REQUESTS = 64
BATCH_WAIT_S = 0.002
ATTEMPTS = 3


class PolicyReplica:
    """One Serve replica of one deployment version."""

    def __init__(self, files: dict[str, bytes]):
        torch.set_num_threads(1)  # as the service's in-process path: small forward passes, the same numbers
        ckpt = Path(tempfile.mkdtemp(prefix="rayac-replica-")) / "ckpt"
        ckpt.mkdir()
        for name, data in files.items():
            (ckpt / name).write_bytes(data)
        self.policy = load_policy(ckpt)

    @serve.batch(max_batch_size=BATCH_MAX_REQUESTS, batch_wait_timeout_s=BATCH_WAIT_S)
    async def act(self, requests: list[tuple[np.ndarray, bool, bool, bool]]) -> list[ActResult]:
        return forward_batch(self.policy, requests)

    def pid(self) -> int:
        return os.getpid()


def app_name(name: str, ckpt_dir: Path) -> str:
    """One application per deployment version (its pinned copy's directory, e.g. ``v2-1a2b3c4d``)."""
    return f"{APP_PREFIX}{name}-{ckpt_dir.parent.name}"


class ServeActs:
    def __init__(self, settings: Any, cluster: Any):
        self.settings = settings
        self.cluster = cluster
        self._lock = threading.Lock()  # one connect / deploy at a time
        self._handles: dict[str, tuple[str, Any]] = {}  # deployment name -> (app name, DeploymentHandle)
        self._connected = False

    def _connect(self) -> None:
        import ray

        if self._connected:
            return
        address = self.settings.ray_address
        if not address:
            self.cluster.client()  # starts (or finds) the service's own head
            head = getattr(self.cluster, "owned_head", None) or {}
            address = head.get("gcs_address")
        if not address:
            raise Unavailable("RAYAC_SERVE_REPLICAS needs the cluster's address: set RAY_ADDRESS")
        try:
            if not ray.is_initialized():
                token_path = (getattr(self.cluster, "owned_head", None) or {}).get("token_path")
                if token_path and not self.settings.ray_address:  # the service's own head wants its token
                    enable_token_auth(token_path)
                ray.init(address=address, namespace="rayac", log_to_driver=False)
            serve.start(proxy_location="Disabled")
        except Exception as err:
            raise Unavailable(f"Ray Serve could not start on the cluster at {address}: {err}") from err
        self._connected = True

    def _options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"ray_actor_options": {"num_cpus": REPLICA_CPUS},
                                "max_ongoing_requests": 2 * BATCH_MAX_REQUESTS}  # fmt: skip
        if self.settings.serve_replicas == "auto":
            opts["autoscaling_config"] = {"min_replicas": 1, "max_replicas": AUTO_MAX_REPLICAS,
                                          "target_ongoing_requests": 8}  # fmt: skip
        else:
            opts["num_replicas"] = int(self.settings.serve_replicas)
        return opts

    def handle(self, name: str, ckpt_dir: Path) -> Any:
        """The handle of the application serving ``ckpt_dir`` (started, and older versions removed, if new)."""
        app = app_name(name, ckpt_dir)
        hit = self._handles.get(name)
        if hit is not None and hit[0] == app:
            return hit[1]
        with self._lock:
            hit = self._handles.get(name)
            if hit is not None and hit[0] == app:
                return hit[1]
            self._connect()
            files = {f: (ckpt_dir / f).read_bytes() for f in PINNED_FILES}
            deployment = serve.deployment(PolicyReplica, name="policy", **self._options())
            try:
                handle = serve.run(deployment.bind(files), name=app, route_prefix=None)
            except Exception as err:
                raise Unavailable(f"deployment '{name}': its Serve replicas did not start: {err}") from err
            self._handles[name] = (app, handle)
            self._remove_others(name, keep=app)
            return handle

    def _remove_others(self, name: str, *, keep: str | None) -> None:
        """Delete the applications of ``name`` but ``keep`` (older versions; leftovers of an earlier service)."""
        ours = re.compile(re.escape(f"{APP_PREFIX}{name}-v") + r"\d+-[0-9a-f]{8}")  # not those of "name-v2"
        for other in serve.status().applications:
            if other != keep and ours.fullmatch(other):
                serve.delete(other, _blocking=False)

    def forget(self, name: str) -> None:
        """The deployment was deleted: stop its replicas."""
        with self._lock:
            self._handles.pop(name, None)
            if self._connected:
                self._remove_others(name, keep=None)

    async def act(self, name: str, ckpt_dir: Path, obs: np.ndarray, *, deterministic: bool, values: bool,
                  probs: bool) -> ActResult:  # fmt: skip
        from ray.exceptions import RayError
        from ray.serve.exceptions import BackPressureError

        hit = self._handles.get(name)
        if hit is not None and hit[0] == app_name(name, ckpt_dir):
            handle = hit[1]
        else:
            handle = await asyncio.to_thread(self.handle, name, ckpt_dir)
        problem = ""
        for attempt in range(ATTEMPTS):
            response = handle.act.remote((obs, deterministic, values, probs))
            try:
                return await asyncio.wait_for(_result(response), timeout=self.settings.serve_timeout_s)
            except asyncio.TimeoutError:
                response.cancel()
                problem = f"no answer within {self.settings.serve_timeout_s:g} s (RAYAC_SERVE_TIMEOUT_S)"
            except (RayError, BackPressureError) as err:  # a replica died, or is being replaced
                problem = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            log.warning("deployment %s: Serve act attempt %d failed: %s", name, attempt + 1, problem)
            await asyncio.sleep(0.1 * (attempt + 1))
        raise Unavailable(f"deployment '{name}': its Serve replicas did not answer after {ATTEMPTS} tries "
                          f"({problem}); retry")  # fmt: skip


async def _result(response: Any) -> Any:
    return await response
