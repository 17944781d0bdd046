"""The messages between A3C workers, parameter-server shards and the driver: typed, never dicts with magic keys.

Every weight vector and gradient is a ``flat.Payload`` (one contiguous array) or, under Ray, an ObjectRef of
one that a shard published once for every puller of that version.

Shards only optimise: a push carries a gradient slice (and, to shard 0, the rollout's normaliser moments). What a
worker saw (episodes, losses, pushes, the staleness the shards measured) goes to the driver in a ``WorkerReport``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayac.normalizer import Moments

# The policy's normaliser statistics by buffer prefix ("obs_norm", "return_norm"). They are not parameters (no
# gradient, not in the flat vector): shard 0 merges what every push to it measured and hands the totals out with
# its replies, as A2C's learner does with its workers' rollouts.
NormStats = dict[str, Moments]


@dataclass
class GradientPush:
    """One shard's slice of one push, in one argument (every argument of a Ray call costs its own serialisation)."""

    version: int  # this shard's version of the weights the gradient was computed from
    grad: Any = None  # Payload of this shard's slice of the gradient (clipped by the worker as a whole)
    norms: NormStats | None = None  # shard 0 only: the rollout's observation / return moments


@dataclass
class PushResult:
    version: int  # this shard's version after the push
    applied: bool  # False: dropped (too stale, or computed on weights this shard no longer has)
    staleness: int  # this shard's version when the slice arrived − ``GradientPush.version``
    stop: bool  # the driver asked every worker to stop
    weights: Any = None  # this shard's slice at ``version``; None: it is restoring, pull it again
    norms: NormStats | None = None  # shard 0's: the normaliser statistics the next rollout uses


@dataclass
class PullResult:
    version: int
    weights: Any  # this shard's slice (Payload or ObjectRef); None: it restarted and awaits its slice
    norms: NormStats | None = None  # shard 0's normaliser statistics


@dataclass
class WorkerReport:
    """What one worker did since the driver last asked: its env steps, finished episodes, pushes and losses."""

    env_steps: int = 0
    rollouts: int = 0  # gradients computed (the train/* sums are over these)
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    pushes: int = 0
    dropped: int = 0  # slices a shard dropped (K per push at most)
    staleness: list[int] = field(default_factory=list)  # of every applied slice, as its shard measured it
    train: dict[str, float] = field(default_factory=dict)  # sums of the train/* metrics of its pushes


@dataclass
class LoopResult:
    """How an A3C worker's loop ended: told to stop / max_pushes (``server_error`` None), or it lost a shard."""

    worker_index: int
    pushes: int
    server_error: str | None = None


@dataclass
class ShardStatus:
    shard: int
    version: int
    restored: bool  # False: Ray restarted it and it waits for the driver to hand its slice back


@dataclass
class OptimizerSlice:
    """The optimiser state over a range of the flat parameter vector. Every per-element tensor (Adam's exp_avg
    and exp_avg_sq, RMSprop's square_avg, ...) is one flat float32 array over the range; the scalar ones
    (``step``) are the same for every parameter and kept once. Empty before the first step."""

    moments: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.moments

    def slice(self, lo: int, hi: int) -> OptimizerSlice:
        """The state over [lo, hi) of this one's range (a view, no copy)."""
        return OptimizerSlice({k: v[lo:hi] for k, v in self.moments.items()}, dict(self.scalars))

    @classmethod
    def join(cls, parts: list[OptimizerSlice]) -> OptimizerSlice:
        """Consecutive slices as one; empty if any of them is (a shard that has not stepped yet)."""
        if not parts or any(p.empty for p in parts):
            return cls()
        keys = parts[0].moments.keys()
        return cls({k: np.concatenate([p.moments[k] for p in parts]) for k in keys}, dict(parts[0].scalars))


@dataclass
class ShardState:
    """A shard's slice [lo, hi) of the flat parameters and of the optimiser state, at ``version``."""

    lo: int
    hi: int
    version: int
    params: np.ndarray
    optimizer: OptimizerSlice
    norms: NormStats | None = None  # shard 0's normaliser statistics at ``version``
