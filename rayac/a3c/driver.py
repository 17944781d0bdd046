"""A3C: asynchronous advantage actor-critic with independent parameter-server shards.

The workers loop on their own (pull → steps → backprop → push), in a ``WorkerGroup``: it restarts a worker
whose process died and starts its loop again, which rejoins with a fresh pull. The driver only watches: each
``train_step`` waits a short poll interval, counts the loops that ended, collects every worker's report (episodes,
losses, pushes, the staleness the shards measured), and asks every shard its status: a shard that Ray restarted
gets its own last checkpoint back (``a3c/ps_restarts``, ``a3c/ps_rollback_updates``) while the others go on.
Only the driver writes a run's files: it takes the shards' new checkpoints every step. With ``num_workers=0`` one
worker and the shards live in this process and each step is exactly one pull → push.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayac.a3c.client import ShardClient
from rayac.a3c.flat import FlatLayout, from_checkpoint, resolve_ps_shards, to_checkpoint
from rayac.a3c.messages import LoopResult, OptimizerSlice, ShardState, ShardStatus, WorkerReport
from rayac.a3c.server import ParameterServer
from rayac.a3c.store import ShardStore
from rayac.a3c.worker import A3CWorker
from rayac.algorithms.base import StepResult
from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.normalizer import Moments
from rayac.policy import build_policy
from rayac.sampling.group import WorkerGroup

log = logging.getLogger(__name__)

MAX_FAILURES_WITHOUT_PROGRESS = 20  # a loop that keeps failing with no push in between is a bug, not bad luck
REPORT_WAIT_S = 10.0  # the workers' reports: quick calls, unless a worker is restarting


class A3C:
    def __init__(self, cfg: Config, spec: SpaceSpec, *, seed_offset: int = 0, poll_interval_s: float = 0.1):
        self.cfg, self.spec = cfg, spec
        self.remote = cfg.resources.num_workers > 0
        self.poll_interval_s = poll_interval_s
        self.template = build_policy(
            spec, cfg.model, estimator=cfg.algo.estimator, scale_rewards=cfg.algo.scale_rewards
        )
        self.layout = FlatLayout.of(self.template)
        self.num_shards = resolve_ps_shards(cfg.algo.ps_shards, num_params=self.layout.total,
                                            num_workers=cfg.resources.num_workers)  # fmt: skip
        self.bounds = self.layout.shard_bounds(self.num_shards)
        self.ps_restarts = 0
        self.pushes_total = self.dropped_total = 0  # the workers' reports, summed
        self._failures = 0
        self._failed_this_step = False
        self._versions = [0] * self.num_shards  # every shard's version when last seen
        self._loops_started = False
        self._reported_at = time.monotonic()
        self._report_calls: dict[Any, int] = {}  # report calls out, by worker
        self._shard_events: dict[str, float] = {}  # restores since the last train step's metrics
        if not self.remote:
            self.shards: list[Any] = [ParameterServer(cfg, spec, shard=i, num_shards=self.num_shards)
                                      for i in range(self.num_shards)]  # fmt: skip
        else:
            from rayac.remote import init_ray, make_parameter_servers, wait_for_actors

            res = cfg.resources
            init_ray(num_cpus=int(np.ceil(res.num_workers * res.worker_cpus + res.learner_cpus)))
            self.shards = make_parameter_servers(cfg, spec, num_shards=self.num_shards)
            # placed first: a SPREAD worker must not take the CPU of the parameter server's node
            wait_for_actors(self.shards, what="A3C parameter server", cfg=cfg)
            self.shard_group = WorkerGroup(cfg, spec, what="A3C parameter-server shards", actors=self.shards)
        # max_concurrency=2: run() occupies one thread for the whole training; report() and pid() use the other
        self.group = WorkerGroup(cfg, spec, seed_offset=seed_offset, what="A3C workers", worker_cls=A3CWorker,
                                 actor_options={"max_concurrency": 2})  # fmt: skip
        self.local_worker = self.group.local_worker  # num_workers=0: the one worker, in this process
        run_dir = cfg.run.run_dir
        self.ps_stores = [ShardStore(Path(run_dir) / "ps" if run_dir else None, i, self.num_shards)
                          for i in range(self.num_shards)]  # fmt: skip
        self._start_shards(lambda i: ())  # the version-0 checkpoint a later restart can come back to

    def _start_shards(self, args: Any) -> None:
        """A new history on every shard (a fresh run, or a --resume): older shard checkpoints are forgotten."""
        for store in self.ps_stores:
            store.clear()
        self._each("start", args)
        self._persist_checkpoints()

    def _persist_checkpoints(self) -> None:
        """Take the shards' new checkpoints and write them here: a shard on another node writes nothing, and a
        shard that restarts (remembering nothing) is handed its slice back from these files."""
        if not self.ps_stores[0].enabled:
            return
        newest = [max(store.versions(), default=-1) for store in self.ps_stores]
        for store, states in zip(
            self.ps_stores, self._each("checkpoints_since", lambda i: (newest[i],)), strict=True
        ):
            for state in states:
                store.save(state)

    # ------------------------------------------------------------------ calls to the shards
    def _each(self, method: str, args: Any = lambda i: ()) -> list[Any]:
        """Call ``method`` on every shard at once; under Ray, the shard group makes a call again on a shard that
        restarted."""
        if not self.remote:
            return [getattr(s, method)(*args(i)) for i, s in enumerate(self.shards)]
        return self.shard_group.foreach(method, args)

    def _call(self, i: int, method: str, *args: Any) -> Any:
        if not self.remote:
            return getattr(self.shards[i], method)(*args)
        group = self.shard_group
        return group.fetch(
            i, group.call_async(i, method, *args), again=lambda: group.call_async(i, method, *args)
        )[0]

    def _watch_shards(self) -> None:
        """Every shard's version; a shard that Ray restarted comes back from its own newest checkpoint (or, with
        none, keeps its initial slice: logged as an error), and only it loses the updates since (reported with the
        next train step's metrics)."""
        metrics = self._shard_events
        statuses: list[ShardStatus] = self._each("status")
        for s in statuses:
            if s.restored:
                self._versions[s.shard] = s.version
                continue
            self.ps_restarts += 1
            before, store = self._versions[s.shard], self.ps_stores[s.shard]
            saved = store.versions()
            if saved:
                state = store.load(saved[-1])
                self._call(s.shard, "restore", state)
                log.warning("parameter-server shard %d restarted; it came back from version %d to its checkpoint at "
                            "%d (%d updates lost); the other shards went on", s.shard, before, state.version,
                            before - state.version)  # fmt: skip
                version = state.version
            else:
                self._call(s.shard, "restore", None, before)
                log.error("parameter-server shard %d restarted with NO checkpoint to come back to (run.run_dir "
                          "unset?): its slice restarts from the initial weights at version %d", s.shard, before)  # fmt: skip
                version = before
            self._versions[s.shard] = version
            lost = max(before - version, 0)
            metrics["a3c/ps_restored_version"] = version
            metrics["a3c/ps_rollback_updates"] = metrics.get("a3c/ps_rollback_updates", 0) + lost

    # ------------------------------------------------------------------ worker loops (Ray)
    def _count_failure(self, what: str) -> None:
        self._failures += 1
        self._failed_this_step = True
        if self._failures > MAX_FAILURES_WITHOUT_PROGRESS:
            raise RuntimeError(f"A3C worker loops keep failing with no push in between; last: {what}")

    def _watch_loops(self) -> None:
        """Wait up to one poll interval for loops that ended (its worker died, or it lost a shard) and count
        them; the group has started each one again (a dead worker's on its restarted actor, counted there)."""
        if not self._loops_started:
            self.group.start_loops("run", self.shards)
            self._loops_started = True
        for end in self.group.poll_loops(self.poll_interval_s):
            result: LoopResult | None = end.result
            if end.died:
                log.warning("A3C worker %d died; it restarts and rejoins with a fresh pull", end.index)
                self._count_failure("worker died")
            elif end.error is not None:  # the loop raised: a bug in the worker
                log.warning("A3C worker %d loop ended with %s; started again", end.index, type(end.error).__name__)  # fmt: skip
                self._count_failure(repr(end.error))
            elif result is not None and result.server_error is not None:
                # a shard died or raised under this loop; the worker is fine
                log.info("A3C worker %d lost the parameter server (%s); rejoining", end.index, result.server_error)  # fmt: skip
                self._count_failure(result.server_error)

    def _reports(self) -> list[WorkerReport]:
        """Every worker's report since the last one. A report call still out (its worker is restarting) stays out
        until it lands at a later step; a dead worker's report died with it (its loop's end is counted)."""
        import ray
        from ray.exceptions import RayActorError

        for i in range(self.group.num_remote):
            if i not in self._report_calls.values():
                self._report_calls[self.group.call_async(i, "report")] = i
        refs = list(self._report_calls)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=REPORT_WAIT_S)
        reports = []
        for ref in done:
            index = self._report_calls.pop(ref)
            try:
                reports.append(ray.get(ref, timeout=REPORT_WAIT_S))
            except RayActorError:
                log.info("A3C worker %d died before it reported", index)
        return reports

    # ------------------------------------------------------------------ Algorithm
    @property
    def version(self) -> int:
        """The newest shard's version (with one shard, its version: the pushes applied)."""
        return max(self._versions)

    def train_step(self) -> StepResult:
        self._failed_this_step = False
        if not self.remote:
            self._watch_shards()  # a restarted shard is restored before this process pulls from it
            result = self.local_worker.run(self.shards, max_pushes=1)
            if result.server_error is not None or result.pushes != 1:
                raise RuntimeError(f"in-process A3C step failed: {result}")
            self._versions = [s.version for s in self.shards]
            reports = [self.local_worker.report()]
        else:
            self._watch_loops()
            reports = self._reports()  # before the shards' versions: those count every push reported
            self._watch_shards()
        metrics = _report_metrics(reports)
        now, since = time.monotonic(), self._reported_at
        self._reported_at = now
        metrics["a3c/pushes_per_s"] = metrics["a3c/pushes"] / max(now - since, 1e-9)
        if metrics["a3c/pushes"] and not self._failed_this_step:  # a shard that keeps raising is not progress
            self._failures = 0
        metrics.update(self._shard_events)
        self._shard_events = {}
        self._persist_checkpoints()
        self.pushes_total += int(metrics["a3c/pushes"])
        self.dropped_total += int(metrics["a3c/dropped"])
        metrics.update(self.counters())
        metrics["a3c/ps_shards"] = self.num_shards
        metrics.update({f"a3c/shard{i}_version": v for i, v in enumerate(self._versions)})
        return StepResult(
            num_steps=sum(r.env_steps for r in reports),
            episode_returns=np.asarray([x for r in reports for x in r.episode_returns], dtype=np.float64),
            episode_lengths=np.asarray([x for r in reports for x in r.episode_lengths], dtype=np.int64),
            metrics=metrics,
        )

    def _flat_weights(self) -> np.ndarray:
        out = torch.zeros(self.layout.total)
        client = ShardClient(
            self.shards, self.layout, self.cfg.algo.ps_transfer_dtype, restore=self._watch_shards
        )
        self._versions = client.pull_into(out, self.template.normalizers())
        return out.numpy()

    def _state_dict(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Parameters from the flat vector; buffers (the normalisers, as last pulled) from the template policy."""
        weights = {k: v.detach().numpy() for k, v in self.template.state_dict().items()}
        weights.update(self.layout.to_state_dict(flat))
        return weights

    def get_weights(self) -> dict[str, np.ndarray]:
        """Weights pulled from the shards (greedy evaluation runs on these)."""
        return self._state_dict(self._flat_weights())

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
        """The driver's checkpoint holds every slice (each at its own shard's version): full weights and the
        optimiser state as flat arrays; its version is the newest shard's."""
        states: list[ShardState | None] = self._each("get_state")
        while any(s is None for s in states):  # a shard restarted since the last step: restore it first
            self._watch_shards()
            states = self._each("get_state")
        for name, moments in (states[0].norms or {}).items():  # shard 0's statistics
            self.template.normalizers()[name].set(moments)
        flat = np.concatenate([s.params for s in states])
        weights = {k: torch.as_tensor(np.array(v)) for k, v in self._state_dict(flat).items()}
        optimizer = to_checkpoint(OptimizerSlice.join([s.optimizer for s in states]))
        return weights, optimizer, max(s.version for s in states)

    def restore(self, weights: dict[str, Any], optimizer_state: dict[str, Any] | None, version: int) -> None:
        """Resume (any shard count): each shard takes its slice and starts a new history at ``version``; a
        resume is not a parameter-server restart."""
        flat = self.layout.from_state_dict({k: np.asarray(v) for k, v in weights.items()})
        opt = from_checkpoint(optimizer_state, self.layout)
        norms = {name: Moments(np.asarray(weights[f"{name}.mean"], dtype=np.float64),
                               np.asarray(weights[f"{name}.var"], dtype=np.float64), float(weights[f"{name}.count"]))
                 for name in self.template.normalizers()}  # fmt: skip
        states = [
            ShardState(lo, hi, version, flat[lo:hi], opt.slice(lo, hi), norms if i == 0 else None)
            for i, (lo, hi) in enumerate(self.bounds)
        ]
        self._start_shards(lambda i: (states[i],))
        self._versions = [version] * self.num_shards

    def counters(self) -> dict[str, int]:
        """Counts over the whole run (saved in checkpoints: a resumed run goes on counting)."""
        out = {"a3c/pushes_total": self.pushes_total, "a3c/dropped_total": self.dropped_total,
               "a3c/ps_restarts": self.ps_restarts}  # fmt: skip
        return out | {"workers/restarts": self.group.restarts} if self.remote else out

    def restore_counters(self, saved: dict[str, int]) -> None:
        self.pushes_total = int(saved.get("a3c/pushes_total", 0))
        self.dropped_total = int(saved.get("a3c/dropped_total", 0))
        self.ps_restarts = int(saved.get("a3c/ps_restarts", 0))
        self.group.restarts = int(saved.get("workers/restarts", 0))

    def sampler_state(self) -> list[bytes | None]:
        """Not saved: A3C workers sample and push on their own clocks, so no single point in their history
        matches the checkpointed weights. A resumed A3C run starts fresh episodes on new seeds."""
        return []

    def restore_sampler(self, states: list[bytes | None]) -> bool:
        return False

    def ps_pids(self) -> list[int]:
        return self._each("pid")

    def ps_pid(self) -> int:
        return self.ps_pids()[0]

    def worker_pids(self) -> list[int]:
        return self.group.pids()

    def worker_nodes(self) -> list[str]:
        """Each worker's node; a worker that is restarting (e.g. after losing its node) is waited for."""
        return self.group.foreach("node_id")

    def ps_node(self) -> str:
        return self._each("node_id")[0]

    def stop(self) -> None:
        if not self.remote:
            self.group.stop()
            return
        import ray

        try:
            ray.get([s.request_stop.remote() for s in self.shards], timeout=10)
            self.group.wait_loops(timeout=10)
        except Exception as err:  # stopping must not fail the run; the actors are killed below regardless
            log.warning("clean A3C stop failed (%s); killing the actors", err)
        self.group.stop()
        self.shard_group.stop()


def _report_metrics(reports: list[WorkerReport]) -> dict[str, float]:
    """The workers' reports of one train step as metrics: pushes, dropped slices, staleness, mean losses."""
    rollouts = sum(r.rollouts for r in reports)
    staleness = [x for r in reports for x in r.staleness]
    metrics: dict[str, float] = {}
    for r in reports:
        for key, value in r.train.items():
            metrics[key] = metrics.get(key, 0.0) + value / rollouts
    metrics.update({
        "a3c/pushes": sum(r.pushes for r in reports),
        "a3c/dropped": sum(r.dropped for r in reports),
        "a3c/staleness_mean": float(np.mean(staleness)) if staleness else 0.0,
        "a3c/staleness_max": int(max(staleness)) if staleness else 0,
    })  # fmt: skip
    return metrics
