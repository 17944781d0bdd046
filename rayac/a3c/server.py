"""ParameterServer (A3C): one shard of the global policy's flat parameters and of its optimiser state.

With ``algo.ps_shards = K`` there are K of these; shard i owns the slice ``shard_bounds(total, K)[i]``. The shards
are independent, as the A3C paper's lock-free updates are: a worker sends its K slices at once, and each shard
applies its slice when it arrives, counts its own version, and measures and bounds its own staleness (its version
− the version of its slice the gradient was computed from; ``algo.max_staleness``). Nothing waits for another
shard. Adam and RMSprop are element-wise and the worker clips its whole gradient before slicing it, so with
sequential pushes K shards give one server's arithmetic bit for bit; under Ray, pushes may arrive at two shards
in different orders.

A plain class; under Ray an actor that runs one call at a time. It checkpoints its slice (in memory, until the
driver takes it to disk) at its start, every ``ps_checkpoint_interval`` of its own versions and every
``ps_checkpoint_interval_s``. A shard Ray restarted (``__init__`` again) serves nothing until the driver hands it
its last checkpoint (``restore``); the other shards go on meanwhile.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
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
    ShardStatus,
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
        self.restored = not (_reconstructed() if restarted is None else restarted)
        self.version = 0  # pushes applied on this shard
        self._stop = False
        self._last_save = time.monotonic()
        self._cache: tuple[int, Any] | None = None  # (version, this slice encoded or its ObjectRef)
        if not self.restored:
            log.warning("parameter-server shard %d/%d restarted; it serves nothing until the driver restores its "
                        "slice", shard, num_shards)  # fmt: skip

    # ------------------------------------------------------------------ weights
    def _encoded(self, *, put: bool) -> Any:
        """This slice at this version, encoded once (and, for pulls under Ray, put in the object store once)."""
        if self._cache is None or self._cache[0] != self.version:
            # A shard is an actor that runs one call at a time (and in-process the client copies a reply at once):
            # its reply is serialised before the next push changes the slice, so it can be a view of it (a 6.7 MB
            # copy less per push for the Nature CNN).
            if self._flat_np is not None and self.cfg.algo.ps_transfer_dtype == "float32":
                encoded = Payload(self._flat_np)
            else:
                encoded = encode(self.flat, self.cfg.algo.ps_transfer_dtype, copy=False)
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
        if not self.restored:
            return PullResult(self.version, None)
        return PullResult(self.version, self._encoded(put=self.publish), self._norm_stats())

    # ------------------------------------------------------------------ pushes
    def push(self, msg: GradientPush, *, return_weights: bool = True) -> PushResult:
        """Apply this shard's slice of a push now, unless it is too stale (``algo.max_staleness``) or was computed
        on weights this shard no longer has (negative staleness: from before it came back from a checkpoint)."""
        if not self.restored:  # the worker pulls again once the driver has restored this shard
            return PushResult(self.version, False, 0, self._stop)
        if not self._fits(msg.grad):  # refused: nothing changes
            raise ValueError(f"shard {self.shard}: a gradient slice of {_size(msg.grad)} values for "
                             f"[{self.lo}, {self.hi})")  # fmt: skip
        for name, moments in (msg.norms or {}).items():  # what the rollout saw counts, applied or not
            if name in self.norms:
                self.norms[name].merge([moments])
        staleness = self.version - msg.version
        max_staleness = self.cfg.algo.max_staleness
        applied = staleness >= 0 and (max_staleness is None or staleness <= max_staleness)
        if applied:
            self._step(msg.grad)
            self.version += 1
            if self._checkpoint_due():
                self.save()
        weights = self._encoded(put=False) if return_weights else None
        return PushResult(self.version, applied, staleness, self._stop, weights, self._norm_stats())

    def _checkpoint_due(self) -> bool:
        if not self.store.enabled:
            return False
        every, every_s = self.cfg.algo.ps_checkpoint_interval, self.cfg.algo.ps_checkpoint_interval_s
        return bool(every and self.version % every == 0) or (
            every_s is not None and time.monotonic() - self._last_save >= every_s
        )

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

    # ------------------------------------------------------------------ driver side
    def status(self) -> ShardStatus:
        return ShardStatus(self.shard, self.version, self.restored)

    def request_stop(self) -> None:
        self._stop = True

    def _state(self) -> ShardState:
        return ShardState(self.lo, self.hi, self.version, self.flat.cpu().numpy().copy(),
                          segment_state(self.optimizer, self.params), self._norm_stats())  # fmt: skip

    def get_state(self) -> ShardState | None:
        """This slice and its optimiser state, at this shard's version (None: restarted and not yet restored)."""
        return self._state() if self.restored else None

    def _load(self, state: ShardState) -> None:
        if (state.lo, state.hi) != (self.lo, self.hi):
            raise ValueError(f"shard {self.shard} owns [{self.lo}, {self.hi}), got [{state.lo}, {state.hi})")
        self.flat.copy_(
            shared_tensor(np.asarray(state.params, dtype=np.float32))
        )  # Ray hands it over read-only
        load_segment_state(self.optimizer, self.params, state.optimizer)
        self._plan = None  # it holds the replaced state's tensors
        for name, moments in (state.norms or {}).items():
            if name in self.norms:
                self.norms[name].set(moments)
        self.version = state.version
        self._cache = None

    def start(self, state: ShardState | None = None) -> None:
        """A new history (a fresh run, or a --resume from the driver's checkpoint ``state``): forget older shard
        checkpoints and save this version, so a restart at any later time has one to come back to."""
        self.restore(state)

    def restore(self, state: ShardState | None, version: int | None = None) -> None:
        """Come back to the checkpoint ``state`` (the driver's copy of this shard's last one), or, with none,
        keep the initial slice and go on counting from ``version``. Then serve again."""
        if state is not None:
            self._load(state)
        elif version is not None:
            self.version = version
            self._cache = None
        self.restored = True
        self.store.clear()
        self.save()

    def checkpoints_since(self, version: int) -> list[ShardState]:
        """The checkpoints newer than ``version``, for the driver to write to the run directory."""
        return self.store.since(version)

    def saved_versions(self) -> list[int]:
        return self.store.versions()

    def save(self) -> None:
        self._last_save = time.monotonic()
        self.store.save(self._state())

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        import os

        return os.getpid()
