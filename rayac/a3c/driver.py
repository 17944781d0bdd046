"""A3C: asynchronous advantage actor-critic with a (sharded) parameter server.

The workers loop on their own (pull → steps → backprop → push), in a ``WorkerGroup``: it restarts a worker
whose process died and starts its loop again, which rejoins with a fresh pull. The driver only watches: each
``train_step`` waits a short poll interval, counts the loops that ended, collects every shard's counters (calls
to the shards go through a group too, which waits out a shard's restart), and resyncs the shards when one was restarted:
every shard rolls back to the last version all of them saved, in a new epoch, and the restart is counted
(``a3c/ps_restarts``) and logged whether or not a checkpoint existed. With ``num_workers=0`` one worker and the
shards live in this process and each step is exactly one pull → push.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayac.a3c.client import ShardClient
from rayac.a3c.flat import (
    FlatLayout,
    from_checkpoint,
    join_states,
    resolve_ps_shards,
    slice_state,
    to_checkpoint,
)
from rayac.a3c.messages import LoopResult, ShardState, ShardStats
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

CALL_TIMEOUT_S = 120.0  # a shard's give_up
MAX_FAILURES_WITHOUT_PROGRESS = 20  # a loop that keeps failing with no push in between is a bug, not bad luck
# After a worker died, a shard whose slices have waited this long with no progress waits for the dead worker's
# slice: it goes out of step at once (and every shard rolls back) instead of after the shards' ORDER_TIMEOUT_S.
STALL_AFTER_WORKER_DEATH_S = 1.0
WORKER_DEATH_WINDOW_S = 30.0


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
        self.pushes_total = self.dropped_total = 0  # the leader's windows, summed: restarts lose none
        self.epoch = 0
        self._failures = 0
        self._failed_this_step = False
        self._last_version = 0
        self._worker_died_at: float | None = None
        self._start_ids: list[str | None] = [None] * self.num_shards
        self._loops_started = False
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
        # max_concurrency=2: run() occupies one thread for the whole training; control calls (pid) use the other
        self.group = WorkerGroup(cfg, spec, seed_offset=seed_offset, what="A3C workers", worker_cls=A3CWorker,
                                 actor_options={"max_concurrency": 2})  # fmt: skip
        self.local_worker = self.group.local_worker  # num_workers=0: the one worker, in this process
        run_dir = cfg.run.run_dir
        self.ps_stores = [ShardStore(Path(run_dir) / "ps" if run_dir else None, i, self.num_shards)
                          for i in range(self.num_shards)]  # fmt: skip
        self._start_shards(lambda i: (self.epoch,))  # the version-0 checkpoint every later restart can reach
        self._check_starts(self._each("get_stats"), count=False)

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

    # ------------------------------------------------------------------ calls to every shard
    def _each(self, method: str, args: Any = lambda i: (), kwargs: Any = lambda i: {}) -> list[Any]:
        """Call ``method`` on every shard at once; under Ray, the shard group makes a call again on a shard that
        restarted (the shard restart itself is counted by ``_check_starts``)."""
        if not self.remote:
            return [getattr(s, method)(*args(i), **kwargs(i)) for i, s in enumerate(self.shards)]
        return self.shard_group.foreach(method, args, kwargs)

    def _check_starts(
        self, stats: list[ShardStats], *, count: bool = True, known_version: int = 0
    ) -> dict[str, float]:
        """Count every shard whose process restarted (a new start id) and resync all shards if needed."""
        metrics: dict[str, float] = {}
        restarted = []
        for s in stats:
            if self._start_ids[s.shard] is not None and self._start_ids[s.shard] != s.start_id:
                restarted.append(s.shard)
            self._start_ids[s.shard] = s.start_id
        if count:
            self.ps_restarts += len(restarted)
        if restarted or not all(s.in_sync for s in stats) or len({s.epoch for s in stats}) > 1:
            metrics.update(self._resync(stats, restarted, known_version))
        return metrics

    def _resync(self, stats: list[ShardStats], restarted: list[int], known_version: int) -> dict[str, float]:
        """Every shard back to the last version all of them saved, in a new epoch (pushes of the old one in
        flight are dropped). Without a common checkpoint (no run directory) the restarted shard keeps the fresh
        weights it came back with, and this is logged as an error."""
        before = max(known_version, *(s.version for s in stats))  # the newest version the run had reached
        in_memory = [set(v) for v in self._each("saved_versions")]
        saved = [mem | set(store.versions()) for mem, store in zip(in_memory, self.ps_stores, strict=True)]
        common = set.intersection(*saved) if saved else set()
        self.epoch += 1
        if common:
            version = max(common)
            # a shard that no longer has it in memory (it restarted) gets it from the driver's files
            states = [None if version in mem else store.load(version)
                      for mem, store in zip(in_memory, self.ps_stores, strict=True)]  # fmt: skip
            self._each("rollback", lambda i: (version, self.epoch),
                       lambda i: {"from_checkpoint": True, "state": states[i]})  # fmt: skip
            for store in self.ps_stores:
                store.drop_after(version)
            log.warning("parameter-server shard(s) %s restarted; every shard rolled back from version %d to its "
                        "checkpoint at %d (%d updates lost)", restarted or "out of step", before, version,
                        before - version)  # fmt: skip
        else:
            version = before
            self._each("rollback", lambda i: (version, self.epoch), lambda i: {"from_checkpoint": False})
            log.error("parameter-server shard(s) %s restarted with NO checkpoint to come back to (run.run_dir "
                      "unset?): their slices restart from fresh weights at version %d", restarted, version)  # fmt: skip
        self._last_version = version
        return {"a3c/ps_restored_version": version, "a3c/ps_rollback_updates": before - version}

    def _unstick(self, stats: list[ShardStats]) -> None:
        """Soon after a worker died, a shard stalled on a slice that worker never sent goes out of step now; the
        resync in this same step then rolls every shard back (K > 1 only: one shard applies each push whole)."""
        died = self._worker_died_at
        if self.num_shards == 1 or died is None or time.monotonic() - died > WORKER_DEATH_WINDOW_S:
            return
        for s in stats:
            if s.in_sync and s.stalled_s >= STALL_AFTER_WORKER_DEATH_S:
                shard = self.shards[s.shard]
                if self.remote:
                    import ray

                    gave_up = ray.get(
                        shard.give_up.remote(STALL_AFTER_WORKER_DEATH_S), timeout=CALL_TIMEOUT_S
                    )
                else:
                    gave_up = shard.give_up(STALL_AFTER_WORKER_DEATH_S)
                s.in_sync = s.in_sync and not gave_up

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
                self._worker_died_at = time.monotonic()
                log.warning("A3C worker %d died; it restarts and rejoins with a fresh pull", end.index)
                self._count_failure("worker died")
            elif end.error is not None:  # the loop raised: a bug in the worker
                log.warning("A3C worker %d loop ended with %s; started again", end.index, type(end.error).__name__)  # fmt: skip
                self._count_failure(repr(end.error))
            elif result is not None and result.server_error is not None:
                # a shard died or raised under this loop; the worker is fine
                log.info("A3C worker %d lost the parameter server (%s); rejoining", end.index, result.server_error)  # fmt: skip
                self._count_failure(result.server_error)

    # ------------------------------------------------------------------ Algorithm
    @property
    def version(self) -> int:
        return self._last_version

    def train_step(self) -> StepResult:
        self._failed_this_step = False
        if not self.remote:
            result = self.local_worker.run(self.shards, max_pushes=1)
            if result.server_error is not None or result.pushes != 1:
                raise RuntimeError(f"in-process A3C step failed: {result}")
        else:
            self._watch_loops()
        stats = self._each("get_stats")
        self._unstick(stats)
        lead = stats[0]
        known = (
            self._last_version
        )  # before a restarted leader's version (the one it came back with) replaces it
        metrics = dict(lead.metrics)
        if (
            lead.metrics["a3c/pushes"] and not self._failed_this_step
        ):  # a shard that keeps raising is not progress
            self._failures = 0
        self._last_version = lead.version
        metrics.update(self._check_starts(stats, known_version=known))
        self._persist_checkpoints()
        self.pushes_total += int(lead.metrics["a3c/pushes"])
        self.dropped_total += int(lead.metrics["a3c/dropped"])
        metrics.update(self.counters())
        metrics["a3c/ps_shards"] = self.num_shards
        return StepResult(num_steps=lead.env_steps, episode_returns=lead.episode_returns,
                          episode_lengths=lead.episode_lengths, metrics=metrics)  # fmt: skip

    def _flat_weights(self) -> np.ndarray:
        out = torch.zeros(self.layout.total)
        client = ShardClient(self.shards, self.layout, self.cfg.algo.ps_transfer_dtype)
        self._last_version = client.pull_into(out, self.template.normalizers())
        return out.numpy()

    def _state_dict(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Parameters from the flat vector; buffers (the normalisers, as last pulled) from the template policy."""
        weights = {k: v.detach().numpy() for k, v in self.template.state_dict().items()}
        weights.update(self.layout.to_state_dict(flat))
        return weights

    def get_weights(self) -> dict[str, np.ndarray]:
        """Weights pulled from the shards (greedy evaluation runs on these)."""
        return self._state_dict(self._flat_weights())

    def _gather_states(self) -> list[ShardState]:
        """Every shard's slice at one version: the leader hands out no tickets until all have landed."""
        if self.num_shards == 1:
            return self._each("get_state")
        version = self._each("pause")[0]
        try:
            return self._each("get_state", lambda i: (version,))
        finally:
            self._each("unpause")

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
        """The driver's checkpoint holds every slice: full weights and the optimiser state as flat arrays."""
        states = self._gather_states()
        for name, moments in (states[0].norms or {}).items():  # the leader's statistics at the same version
            self.template.normalizers()[name].set(moments)
        flat = np.concatenate([s.params for s in states])
        weights = {k: torch.as_tensor(np.array(v)) for k, v in self._state_dict(flat).items()}
        optimizer = to_checkpoint(join_states([s.optimizer for s in states]))
        return weights, optimizer, states[0].version

    def restore(self, weights: dict[str, Any], optimizer_state: dict[str, Any] | None, version: int) -> None:
        """Resume (any shard count): each shard takes its slice and starts a new history at ``version``; a
        resume is not a parameter-server restart."""
        flat = self.layout.from_state_dict({k: np.asarray(v) for k, v in weights.items()})
        opt = from_checkpoint(optimizer_state, self.layout)
        norms = {name: Moments(np.asarray(weights[f"{name}.mean"], dtype=np.float64),
                               np.asarray(weights[f"{name}.var"], dtype=np.float64), float(weights[f"{name}.count"]))
                 for name in self.template.normalizers()}  # fmt: skip
        states = [
            ShardState(lo, hi, version, flat[lo:hi], slice_state(opt, lo, hi), norms if i == 0 else None)
            for i, (lo, hi) in enumerate(self.bounds)
        ]
        self._start_shards(lambda i: (self.epoch, states[i]))
        self._last_version = version

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
            ray.get(self.shards[0].request_stop.remote(), timeout=10)
            self.group.wait_loops(timeout=10)
        except Exception as err:  # stopping must not fail the run; the actors are killed below regardless
            log.warning("clean A3C stop failed (%s); killing the actors", err)
        self.group.stop()
        self.shard_group.stop()
