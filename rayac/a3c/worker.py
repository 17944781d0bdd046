"""A3C worker: a RolloutWorker that loops on its own — pull, sample, backprop, push — until told to stop.

One A3C update reads here in full: ``compute_gradients`` (rollout → targets → loss → backward into one flat
gradient buffer → clipped by its global norm) and ``run`` (the push/pull loop over the parameter-server shards).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import torch

from rayac.a3c.client import ShardClient
from rayac.a3c.flat import FlatLayout, bind_flat, clip_coefficient
from rayac.a3c.messages import LoopResult, NormStats, PushResult, WorkerReport
from rayac.advantages import make_batch
from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.losses import actor_critic_loss, to_tensors
from rayac.sampling.rollout import RolloutWorker


def _server_lost(err: Exception) -> bool:
    """A Ray error from a shard call (the shard died, restarts, or raised) or a shard that was not restored in
    time: the driver counts it and relaunches this loop. Any other exception is a bug here and propagates."""
    ray = sys.modules.get("ray")
    return isinstance(err, TimeoutError) or (ray is not None and isinstance(err, ray.exceptions.RayError))


class A3CWorker(RolloutWorker):
    def __init__(self, cfg: Config, spec: SpaceSpec, **kwargs: Any):
        super().__init__(cfg, spec, **kwargs)
        self.layout = FlatLayout.of(self.policy)
        # parameters and gradients become views of two flat buffers: a pull is one copy, a push one array
        self.flat_params, self.flat_grad = bind_flat(self.policy)
        self.versions: list[int] = []  # each shard's version of the weights in flat_params
        self._report = WorkerReport()  # since the driver last asked (``report``: another thread under Ray)
        self._report_lock = threading.Lock()

    def compute_gradients(
        self, num_steps: int | None = None
    ) -> tuple[list[int], NormStats | None, WorkerReport]:
        """Sample, then backprop the loss on the local policy into ``flat_grad``, clipped to
        ``algo.max_grad_norm`` by its global norm (the factor of the whole gradient: every shard's slice is scaled
        by the same number, here, off the servers' busy path).

        Returns (the shards' versions the gradient was computed from, the rollout's normaliser moments, what goes
        into this worker's report once the push has landed: its steps, episodes and losses)."""
        rollout = self.sample(num_steps)
        batch = to_tensors(make_batch([rollout], self.cfg.algo), torch.device("cpu"))
        self.policy.zero_grad(set_to_none=False)  # keeps .grad the views of flat_grad
        loss, metrics = actor_critic_loss(self.policy, batch, self.cfg.algo)
        loss.backward()
        grad_norm, clip_coef = clip_coefficient(self.flat_grad, self.cfg.algo.max_grad_norm)
        if clip_coef != 1.0:
            self.flat_grad.mul_(clip_coef)  # what clip_grad_norm_ does: the same float32 multiply
        metrics["train/grad_norm"] = grad_norm
        norms = {"obs_norm": rollout.obs_moments, "return_norm": rollout.return_moments}
        part = WorkerReport(rollout.env_steps, 1, rollout.episode_returns.tolist(), rollout.episode_lengths.tolist(),
                            train={key: float(value) for key, value in metrics.items()})  # fmt: skip
        return list(self.versions), {name: m for name, m in norms.items() if m is not None} or None, part

    def run(self, shards: list[Any], *, max_pushes: int | None = None) -> LoopResult:
        """pull → ``rollout_steps`` steps → targets → local backward → push, the fresh weights coming back in the
        push's replies. With ``algo.push_pipelining`` the next rollout is sampled (and backpropagated, on the
        weights it was sampled with) while the previous push is in flight. Ends when the server says stop, after
        ``max_pushes``, or when a shard is lost (``server_error``)."""
        client = ShardClient(shards, self.layout, self.cfg.algo.ps_transfer_dtype)
        pipelining = self.cfg.algo.push_pipelining and client.remote
        result = LoopResult(self.worker_index, 0)
        pending: tuple[list[Any], WorkerReport] | None = None  # a push in flight, and what it reports
        try:
            with torch.no_grad():
                self._set_versions(client.pull_into(self.flat_params, self.policy.normalizers()))
            while max_pushes is None or result.pushes < max_pushes:
                versions, norms, part = self.compute_gradients()
                if pending is not None and self._land(client, pending, result):
                    pending = None
                    break
                pending = (client.submit_push(self.flat_grad, versions, norms), part)
                result.pushes += 1
                if not pipelining:
                    stop = self._land(client, pending, result)
                    pending = None
                    if stop:
                        break
            if pending is not None:  # the last push still counts
                self._land(client, pending, result)
        except Exception as err:
            if not _server_lost(err):
                raise
            result.server_error = f"{type(err).__name__}: {err}"[:2000]
        return result

    def _set_versions(self, versions: list[int]) -> None:
        self.versions = versions
        self.version = max(versions)  # what RolloutWorker stamps on its rollouts

    def _land(self, client: ShardClient, pending: tuple[list[Any], WorkerReport], result: LoopResult) -> bool:
        """Wait for a push's replies, load the weights they carry, report it; True when the driver asked to stop."""
        with torch.no_grad():
            versions, replies, stop = client.wait_push(
                pending[0], self.flat_params, self.policy.normalizers()
            )
        self._set_versions(versions)
        self._count(replies, pending[1])
        return stop

    def _count(self, replies: list[PushResult], part: WorkerReport) -> None:
        """A landed push into the report: its rollout counts now (shard 0 has merged its normaliser moments)."""
        with self._report_lock:
            report = self._report
            report.env_steps += part.env_steps
            report.rollouts += part.rollouts
            report.episode_returns.extend(part.episode_returns)
            report.episode_lengths.extend(part.episode_lengths)
            for key, value in part.train.items():
                report.train[key] = report.train.get(key, 0.0) + value
            report.pushes += 1
            report.dropped += sum(not r.applied for r in replies)
            report.staleness.extend(r.staleness for r in replies if r.applied)

    def report(self) -> WorkerReport:
        """What this worker did since the previous call (the driver's, once per train step)."""
        with self._report_lock:
            report, self._report = self._report, WorkerReport()
        return report

    def pid(self) -> int:
        return os.getpid()
