"""The messages between A3C workers, parameter-server shards and the driver: typed, never dicts with magic keys.

Every weight vector and gradient is a ``flat.Payload`` (one contiguous array) or, under Ray, an ObjectRef of
one that a shard published once for every puller of that version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayac.normalizer import Moments

# The policy's normaliser statistics by buffer prefix ("obs_norm", "return_norm"). They are not parameters (no
# gradient, not in the flat vector): the leader shard merges what every push measured and hands the totals out
# with its replies, as A2C's learner does with its workers' rollouts.
NormStats = dict[str, Moments]


@dataclass
class WorkerStats:
    """What one push reports besides its gradient: env steps, finished episodes, the loss terms."""

    num_steps: int
    episode_returns: list[float]  # plain lists: a push pickles faster without two (mostly empty) arrays
    episode_lengths: list[int]
    train: dict[str, float] = field(default_factory=dict)  # train/* metrics of this update
    norms: NormStats | None = None  # the rollout's observation / return moments (model.normalize_obs etc.)


@dataclass
class GradientPush:
    """One push, in one argument (every argument of a Ray call costs its own serialisation)."""

    version: int  # the weights' version the gradient was computed from
    grad: Any = None  # Payload of the gradient (clipped by the worker) or of the leader's slice of it
    stats: WorkerStats | None = None


@dataclass
class Ticket:
    """The leader shard's one decision on a push, which every shard follows: applied everywhere or nowhere."""

    applied: bool
    seq: int  # applied: the version this push makes on every shard; dropped: the leader's version
    epoch: int  # bumped by every resync after a restart; a shard ignores tickets of another epoch
    checkpoint: bool  # every shard checkpoints right after applying this push (the same version everywhere)
    stop: bool


@dataclass
class PushResult:
    version: int  # this shard's version after the push
    applied: bool  # False: dropped (too stale, from before a restart, or during a resync)
    stop: bool  # the driver asked every worker to stop
    weights: Any = None  # this shard's slice at ``version`` when asked for (Payload, or an ObjectRef of one)
    norms: NormStats | None = None  # the leader's: the normaliser statistics the next rollout uses


@dataclass
class PullResult:
    version: int
    weights: Any  # this shard's slice (Payload, or an ObjectRef of one)
    norms: NormStats | None = None  # the leader's normaliser statistics


@dataclass
class LoopResult:
    """How an A3C worker's loop ended: told to stop / max_pushes (``server_error`` None), or it lost a shard."""

    worker_index: int
    pushes: int
    applied: int
    server_error: str | None = None


@dataclass
class ShardStats:
    """One shard's counters since the driver last asked (the leader's carry the pushes and episodes)."""

    shard: int
    start_id: str  # new on every process start: a changed id is a restart
    version: int
    epoch: int
    in_sync: bool  # False: restarted or out of step; it drops pushes until the driver resyncs every shard
    stalled_s: float = 0.0  # how long a slice has been waiting here for an earlier push's, with no progress
    env_steps: int = 0
    episode_returns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    episode_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ShardState:
    """A shard's slice [lo, hi) of the flat parameters and of the optimiser state, at ``version``."""

    lo: int
    hi: int
    version: int
    params: np.ndarray
    optimizer: dict[str, Any]  # flat.segment_state(): {"flat": {key: array}, "scalars": {key: float}}
    norms: NormStats | None = None  # the leader's normaliser statistics at ``version``
