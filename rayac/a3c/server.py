"""ParameterServer (A3C): one shard of the global policy's flat parameters and of its optimiser state.

With ``algo.ps_shards = K`` there are K of these; shard i owns the slice ``shard_bounds(total, K)[i]``.
Adam and RMSprop are element-wise, so K slices stepped apart give bit for bit what one server gives; the
worker clips its whole gradient by its global norm before slicing it.

One push = one ``Ticket`` from the leader (shard 0), which decides apply-or-drop once (staleness = versions
handed out − the gradient's version, as with one server), then the slice on every shard. Every shard applies
tickets in their order, so versions stay in step: a shard that receives ticket s waits for s − 1. With K = 1
``push`` does both in one call. A plain class; under Ray a threaded actor (K > 1, so a push can wait for its
turn), every method under one lock.

Every shard checkpoints its slice at the same versions (its start, every ``ps_checkpoint_interval`` updates,
and when the leader marks a ticket because ``ps_checkpoint_interval_s`` passed). A restarted shard (Ray re-runs
``__init__``) comes back out of sync with a new ``start_id``; it drops pushes until the driver rolls every shard
back to the last version they all saved (``rollback``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rayac.a3c.flat import (
    FlatLayout,
    Payload,
    decode_into,
    encode,
    load_segment_state,
    ordered_parameters,
    segment_state,
    shared_tensor,
)
from rayac.a3c.messages import (
    GradientPush,
    NormStats,
    PullResult,
    PushResult,
    ShardState,
    ShardStats,
    Ticket,
)
from rayac.a3c.store import ShardMemory
from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.learning.learner import build_optimizer, resolve_device
from rayac.optimizers import FusedAdamPlan
from rayac.policy import build_policy

log = logging.getLogger(__name__)

# a pushed float32 slice up to this size is copied into the shard's gradient buffer (cheaper than tensor views)
COPY_BELOW_BYTES = 1 << 20
ORDER_TIMEOUT_S = 15.0  # a ticket whose predecessor never arrives (its worker died mid-push): out of step


@dataclass
class _Window:
    """What happened since the driver last asked (kept by the leader, which sees every push)."""

    pushes: int = 0
    dropped: int = 0
    staleness: list[int] = field(default_factory=list)
    env_steps: int = 0
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    train: dict[str, float] = field(default_factory=dict)  # sums of the workers' loss metrics
    started: float = field(default_factory=time.monotonic)


class _Segments:
    """What ``build_optimizer`` reads from a policy: this shard's piece of the actor group, then the critic's."""

    def __init__(self, actor: list[nn.Parameter], critic: list[nn.Parameter]):
        self.actor, self.critic = actor, critic

    def actor_parameters(self) -> list[nn.Parameter]:
        return self.actor

    def critic_parameters(self) -> list[nn.Parameter]:
        return self.critic


def _size(grad: Any) -> int | None:
    """How many values a pushed slice holds (None: not a payload)."""
    data = grad if isinstance(grad, np.ndarray) else getattr(grad, "data", None)
    return data.size if isinstance(data, np.ndarray) and data.ndim == 1 else None


def _reconstructed() -> bool:
    """True when Ray is re-running this actor's ``__init__`` after its process died."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    try:
        with (
            warnings.catch_warnings()
        ):  # Ray flags the property's internals as deprecated; it is the documented API
            warnings.simplefilter("ignore", DeprecationWarning)
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not inside an actor
        return False


class ParameterServer:
    def __init__(self, cfg: Config, spec: SpaceSpec, *, shard: int = 0, num_shards: int = 1,
                 publish: bool = False, restarted: bool | None = None):  # fmt: skip
        """``publish=True`` (under Ray): each version's slice goes to the object store once, as an ObjectRef.
        ``restarted``: None asks Ray whether this is a restart of a dead actor."""
        torch.set_num_threads(cfg.resources.learner_threads)
        torch.manual_seed(cfg.env.seed)  # every shard builds the same initial network and keeps its slice
        self.cfg, self.spec = cfg, spec
        self.shard, self.num_shards = shard, num_shards
        self.device = resolve_device(cfg.resources.device)
        policy = build_policy(
            spec, cfg.model, estimator=cfg.algo.estimator, scale_rewards=cfg.algo.scale_rewards
        )
        # the leader merges the normaliser statistics every push measured (the others keep none)
        self.norms = policy.normalizers() if shard == 0 else {}
        self.layout = FlatLayout.of(policy)
        self.lo, self.hi = self.layout.shard_bounds(num_shards)[shard]
        full = torch.cat([p.detach().reshape(-1) for p in ordered_parameters(policy)])
        self.flat = full[self.lo : self.hi].clone().to(self.device)
        self.grad = torch.zeros_like(self.flat)
        groups: list[list[nn.Parameter]] = []
        self._ranges: list[tuple[nn.Parameter, int, int]] = []  # each Parameter's range of the slice
        for g_lo, g_hi in self.layout.group_ranges():
            a, b = max(g_lo, self.lo) - self.lo, min(g_hi, self.hi) - self.lo
            segment = []
            if a < b:  # a Parameter aliasing the flat slice: the optimiser steps the slice in place
                p = nn.Parameter(self.flat[a:b])
                p.grad = self.grad[a:b]
                segment.append(p)
                self._ranges.append((p, a, b))
            groups.append(segment)
        self.params = groups[0] + groups[1]
        # the slice as a numpy array sharing its memory: a float32 reply without torch calls
        self._flat_np = self.flat.numpy() if self.device.type == "cpu" else None
        self._grad_np = self.grad.numpy() if self.device.type == "cpu" else None
        self._grads = [p.grad for p, _, _ in self._ranges]  # views of self.grad, in the optimiser's order
        self._plan: FusedAdamPlan | None = None  # made after the first step (torch creates the state then)
        self.optimizer = build_optimizer(_Segments(*groups), cfg.optim)  # type: ignore[arg-type]
        if isinstance(self.optimizer, torch.optim.Adam):
            # fused: one pass over the slice, ~3.7x faster than foreach for a 1.7M-parameter slice on one thread
            # (bench_a3c.py); element-wise like foreach, so K shards still equal one server bit for bit
            for group in self.optimizer.param_groups:
                group["foreach"], group["fused"] = False, True
        # checkpoints stay in memory until the driver takes them (checkpoints_since): it alone writes files
        self.store = ShardMemory(enabled=cfg.run.run_dir is not None)
        self.publish = publish
        self.start_id = uuid.uuid4().hex
        self.restarted = _reconstructed() if restarted is None else restarted
        self.in_sync = not self.restarted
        self.epoch = 0
        self.version = 0  # pushes applied on this shard
        self.assigned = 0  # leader: pushes it decided to apply (== version once in-flight slices land)
        self._cond = threading.Condition(threading.RLock())
        self._paused = False
        self._stop = False
        self._window = _Window()
        self._last_save = time.monotonic()
        self._cache: tuple[int, Any] | None = None  # (version, this slice encoded or its ObjectRef)
        self._waiters = 0  # slices waiting for an earlier push's slice to land here
        self._advanced_at = time.monotonic()  # when this shard's version last moved
        if self.restarted:
            log.warning("parameter-server shard %d/%d restarted; dropping pushes until the driver resyncs it",
                        shard, num_shards)  # fmt: skip

    # ------------------------------------------------------------------ weights
    def _encoded(self, *, put: bool) -> Any:
        """This slice at this version, encoded once (and, for pulls under Ray, put in the object store once)."""
        if self._cache is None or self._cache[0] != self.version:
            # One shard is an actor that runs one call at a time (and in-process the client copies a reply at
            # once): its reply is serialised before the next push changes the slice, so it can be a view of it
            # (a 6.7 MB copy less per push for the Nature CNN). Threaded shards (K > 1) reply with a copy.
            copy = self.num_shards > 1
            if self._flat_np is not None and self.cfg.algo.ps_transfer_dtype == "float32":
                encoded = Payload(self._flat_np.copy() if copy else self._flat_np)
            else:
                encoded = encode(self.flat, self.cfg.algo.ps_transfer_dtype, copy=copy)
            self._cache = (self.version, encoded)
        value = self._cache[1]
        if put and isinstance(value, Payload):
            import ray

            value = ray.put(value)
            self._cache = (self.version, value)
        return value

    def _norm_stats(self) -> NormStats | None:
        return {name: norm.moments() for name, norm in self.norms.items()} or None

    def pull(self) -> PullResult:
        with self._cond:
            return PullResult(self.version, self._encoded(put=self.publish), self._norm_stats())

    # ------------------------------------------------------------------ pushes
    def ticket(self, msg: GradientPush) -> Ticket:
        """Leader only: decide once whether a push computed from ``msg.version`` is applied, and as which version."""
        version, stats = msg.version, msg.stats
        with self._cond:
            if self._paused:  # the driver is gathering a consistent checkpoint; it unpauses in a finally
                self._cond.wait_for(lambda: not self._paused, timeout=ORDER_TIMEOUT_S)
            win = self._window
            if (
                stats is not None and stats.norms
            ):  # what the rollout saw counts, whether or not the push is applied
                for name, moments in stats.norms.items():
                    self.norms[name].merge([moments])
            if stats is not None:
                win.env_steps += int(stats.num_steps)
                win.episode_returns.extend(stats.episode_returns)
                win.episode_lengths.extend(stats.episode_lengths)
            staleness = self.assigned - version
            max_staleness = self.cfg.algo.max_staleness
            # staleness < 0: computed on weights from before a rollback; never apply those
            if not self.in_sync or staleness < 0 or (max_staleness is not None and staleness > max_staleness):
                win.dropped += 1
                return Ticket(False, self.assigned, self.epoch, False, self._stop)
            self.assigned += 1
            win.pushes += 1
            win.staleness.append(staleness)
            for key, value in (stats.train if stats is not None else {}).items():
                win.train[key] = win.train.get(key, 0.0) + float(value)
            return Ticket(True, self.assigned, self.epoch, self._checkpoint_due(), self._stop)

    def _checkpoint_due(self) -> bool:
        if not self.store.enabled:
            return False
        every, every_s = self.cfg.algo.ps_checkpoint_interval, self.cfg.algo.ps_checkpoint_interval_s
        now = time.monotonic()
        if (every and self.assigned % every == 0) or (
            every_s is not None and now - self._last_save >= every_s
        ):
            self._last_save = now
            return True
        return False

    def push_slice(
        self, grad: Payload | np.ndarray, ticket: Ticket, *, return_weights: bool = True
    ) -> PushResult:
        """Apply this shard's slice of a push as the leader's ticket says, after every earlier ticket."""
        with self._cond:
            if ticket.applied and ticket.epoch == self.epoch and self.in_sync and not self._fits(grad):
                self.in_sync = False  # a ticket it cannot apply: the driver rolls every shard back
                self._cond.notify_all()
                raise ValueError(f"shard {self.shard}: push {ticket.seq} carries a gradient slice of "
                                 f"{_size(grad)} values for [{self.lo}, {self.hi}); out of step until resynced")  # fmt: skip
            if ticket.applied and ticket.epoch == self.epoch and self.in_sync:
                self._waiters += 1
                try:
                    turn = self._cond.wait_for(
                        lambda: (
                            self.version >= ticket.seq - 1 or ticket.epoch != self.epoch or not self.in_sync
                        ),
                        timeout=ORDER_TIMEOUT_S,
                    )
                finally:
                    self._waiters -= 1
                if not turn:
                    self.in_sync = False  # the driver sees it in get_stats and rolls every shard back
                    self._cond.notify_all()  # later tickets waiting here give up now, not one timeout each
                    raise RuntimeError(f"shard {self.shard}: push {ticket.seq} waited {ORDER_TIMEOUT_S:.0f}s for "
                                       f"push {self.version + 1}, which never came; out of step until resynced")  # fmt: skip
                if ticket.epoch == self.epoch and self.in_sync:
                    if self.version != ticket.seq - 1:
                        raise RuntimeError(
                            f"shard {self.shard}: ticket {ticket.seq} at version {self.version}"
                        )
                    try:
                        self._step(grad)
                    except Exception:
                        # half a step may have happened: the driver rolls every shard back
                        self.in_sync = False
                        self._cond.notify_all()
                        raise
                    self.version = ticket.seq
                    self._advanced_at = time.monotonic()
                    self._cond.notify_all()
                    if ticket.checkpoint:
                        self.save()
                    weights = self._encoded(put=False) if return_weights else None
                    return PushResult(self.version, True, ticket.stop, weights, self._norm_stats())
            weights = self._encoded(put=False) if return_weights else None
            return PushResult(self.version, False, ticket.stop, weights, self._norm_stats())

    def _fits(self, grad: Any) -> bool:
        return _size(grad) == self.hi - self.lo

    def _step(self, grad: Payload | np.ndarray) -> None:
        """One optimiser step on this slice with the pushed gradient (already clipped by the worker).

        Fused Adam (once its state exists) runs from a prepared plan, and a float32 slice on the CPU over
        ``COPY_BELOW_BYTES`` (the Nature CNN's) is read where the message put it, saving a pass over megabytes;
        a smaller one is copied into ``self.grad`` with one numpy call (cheaper than making tensor views of it).
        Anything else is decoded into ``self.grad`` first; without a plan the optimiser's own ``step()`` runs."""
        data = grad.data if isinstance(grad, Payload) and grad.dtype == "float32" else grad
        if not (isinstance(data, np.ndarray) and data.dtype == np.float32):
            data = None  # 16-bit, or a bare array of another dtype: decode_into converts it
        if self._plan is None:
            self._plan = FusedAdamPlan.of(
                self.optimizer
            )  # None: not fused Adam, or no state before a first step
        if data is not None and self._grad_np is not None:  # float32, on the CPU
            if self._plan is not None and data.nbytes > COPY_BELOW_BYTES:
                pushed = shared_tensor(data)
                self._plan.step([pushed[a:b] for _, a, b in self._ranges])
                return
            np.copyto(self._grad_np, data)
        else:
            decode_into(grad, self.grad)
        if self._plan is not None:
            self._plan.step(self._grads)
        else:
            self.optimizer.step()

    def lead_push(self, msg: GradientPush, *, return_weights: bool = True) -> tuple[Ticket, PushResult]:
        """The leader (shard 0): decide the push's ticket and apply its own slice (``msg.grad``) in one call.

        Under Ray the ticket is a second return value that the other shards' ``push_slice`` calls take as an
        argument, so a push is K calls, not a ticket call plus K slices. Deciding and applying under one lock
        also keeps the leader's version equal to the last ticket it gave."""
        if not self._fits(msg.grad):  # refused before any ticket: nothing changes
            raise ValueError(f"shard {self.shard}: a gradient slice of {_size(msg.grad)} values for "
                             f"[{self.lo}, {self.hi})")  # fmt: skip
        with self._cond:
            ticket = self.ticket(msg)
            return ticket, self.push_slice(msg.grad, ticket, return_weights=return_weights)

    def push(self, msg: GradientPush, *, return_weights: bool = True) -> PushResult:
        """One shard (K = 1): decide and apply in one call."""
        return self.lead_push(msg, return_weights=return_weights)[1]

    # ------------------------------------------------------------------ driver side
    def get_stats(self) -> ShardStats:
        """Counters since the previous call (then reset): what the driver turns into a metrics record."""
        with self._cond:
            win, self._window = self._window, _Window()
            dt = max(time.monotonic() - win.started, 1e-9)
            metrics = {k: v / win.pushes for k, v in win.train.items()} if win.pushes else {}
            metrics.update({
                "a3c/pushes": win.pushes,
                "a3c/pushes_per_s": win.pushes / dt,
                "a3c/dropped": win.dropped,
                "a3c/staleness_mean": float(np.mean(win.staleness)) if win.staleness else 0.0,
                "a3c/staleness_max": int(max(win.staleness)) if win.staleness else 0,
            })  # fmt: skip
            return ShardStats(
                shard=self.shard, start_id=self.start_id, version=self.assigned if self.shard == 0 else self.version,
                epoch=self.epoch, in_sync=self.in_sync, stalled_s=self._stalled_s(), env_steps=win.env_steps,
                episode_returns=np.asarray(win.episode_returns, dtype=np.float64),
                episode_lengths=np.asarray(win.episode_lengths, dtype=np.int64), metrics=metrics,
            )  # fmt: skip

    def _stalled_s(self) -> float:
        return time.monotonic() - self._advanced_at if self._waiters else 0.0

    def give_up(self, stalled_s: float) -> bool:
        """Driver, after a worker died: if slices have waited here ``stalled_s`` with no progress, the one they wait
        for was that worker's and will never come. Go out of step now (the waiters return unapplied and the driver
        rolls every shard back) instead of after ``ORDER_TIMEOUT_S``. True if it did."""
        with self._cond:
            if not self.in_sync or self._stalled_s() < stalled_s:
                return False
            log.warning("shard %d: slices waited %.1fs for push %d after a worker died; out of step until resynced",
                        self.shard, self._stalled_s(), self.version + 1)  # fmt: skip
            self.in_sync = False
            self._cond.notify_all()
            return True

    def request_stop(self) -> None:
        with self._cond:
            self._stop = True

    def pause(self) -> int:
        """Leader: hand out no tickets until ``unpause``; returns the last version handed out."""
        with self._cond:
            self._paused = True
            return self.assigned

    def unpause(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def _state(self) -> ShardState:
        return ShardState(self.lo, self.hi, self.version, self.flat.cpu().numpy().copy(),
                          segment_state(self.optimizer, self.params), self._norm_stats())  # fmt: skip

    def get_state(self, wait_version: int | None = None) -> ShardState:
        """This slice and its optimiser state; ``wait_version``: once every ticket up to it has landed here."""
        with self._cond:
            if wait_version is not None and not self._cond.wait_for(
                lambda: self.version >= wait_version, timeout=ORDER_TIMEOUT_S
            ):
                raise RuntimeError(f"shard {self.shard} stayed at version {self.version} < {wait_version}")
            return self._state()

    def _load(self, state: ShardState) -> None:
        if (state.lo, state.hi) != (self.lo, self.hi):
            raise ValueError(f"shard {self.shard} owns [{self.lo}, {self.hi}), got [{state.lo}, {state.hi})")
        self.flat.copy_(torch.as_tensor(np.asarray(state.params, dtype=np.float32)))
        load_segment_state(self.optimizer, self.params, state.optimizer)
        self._plan = None  # it holds the replaced state's tensors
        for name, moments in (state.norms or {}).items():
            if name in self.norms:
                self.norms[name].set(moments)
        self.version = self.assigned = state.version
        self._advanced_at = time.monotonic()
        self._cache = None

    def start(self, epoch: int, state: ShardState | None = None) -> None:
        """A new history (a fresh run, or a --resume from the driver's checkpoint ``state``): forget older shard
        checkpoints and save this version, so a restart at any later time has one to come back to."""
        with self._cond:
            if state is not None:
                self._load(state)
            self.epoch, self.in_sync = epoch, True
            self.store.clear()
            self.save()
            self._last_save = time.monotonic()
            self._cond.notify_all()

    def saved_versions(self) -> list[int]:
        return self.store.versions()

    def checkpoints_since(self, version: int) -> list[ShardState]:
        """The checkpoints newer than ``version``, for the driver to write to the run directory."""
        with self._cond:
            return self.store.since(version)

    def rollback(
        self, version: int, epoch: int, *, from_checkpoint: bool, state: ShardState | None = None
    ) -> None:
        """Come back to ``version`` (from the checkpoint ``state`` the driver kept, or this shard's own, if
        ``from_checkpoint``) in a new epoch; pushes of the old epoch still in flight are dropped, and later
        checkpoints (another timeline) deleted."""
        with self._cond:
            if from_checkpoint:
                self._load(state if state is not None else self.store.load(version))
                self.store.drop_after(version)
            else:
                self.version = self.assigned = version
                self._cache = None
            self.epoch, self.in_sync = epoch, True
            self._paused = False
            self._cond.notify_all()

    def save(self) -> None:
        with self._cond:
            self.store.save(self._state())

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        import os

        return os.getpid()
