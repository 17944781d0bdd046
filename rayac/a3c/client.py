"""The K parameter-server shards seen from a worker or the driver: plain objects or Ray actors, called alike.

A push is K independent calls sent at once, one slice each; a pull takes every shard's current slice. Each shard
has its own version, so a worker holds K versions and tells each shard the one its slice of the gradient was
computed from. Replies and pulls write each shard's slice straight into a flat float32 tensor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from rayac.a3c.flat import FlatLayout, decode_into, encode, fp16_scale
from rayac.a3c.messages import GradientPush, NormStats, PullResult, PushResult
from rayac.normalizer import RunningNorm

CALL_TIMEOUT_S = 120.0
RESTORE_POLL_S = 0.05  # a restarted shard serves nothing until the driver restores it (its next poll)


def _is_ref(value: Any) -> bool:
    return type(value).__name__ == "ObjectRef"


class ShardClient:
    def __init__(
        self,
        shards: list[Any],
        layout: FlatLayout,
        transfer_dtype: str,
        *,
        restore: Callable[[], Any] | None = None,
    ):
        """``restore``: the driver's own client restores a restarted shard itself (nobody else would) while it
        waits for its slice."""
        self.shards = list(shards)
        self.restore = restore
        self.bounds = layout.shard_bounds(len(self.shards))
        self.dtype = transfer_dtype
        self.remote = hasattr(self.shards[0].pull, "remote")

    def _call(self, shard: Any, method: str, *args: Any) -> Any:
        fn = getattr(shard, method)
        return fn.remote(*args) if self.remote else fn(*args)

    def _gather(self, pending: list[Any]) -> list[Any]:
        if not self.remote:
            return pending
        import ray

        results = ray.get(pending, timeout=CALL_TIMEOUT_S)
        refs = [r.weights for r in results if _is_ref(r.weights)]  # slices a shard published for every puller
        if refs:
            fetched = iter(ray.get(refs, timeout=CALL_TIMEOUT_S))
            for r in results:
                if _is_ref(r.weights):
                    r.weights = next(fetched)
        return results

    def _complete(self, results: list[PullResult | PushResult]) -> list[PullResult | PushResult]:
        """A shard that replied without its slice restarted and waits for the driver: pull it until it serves."""
        deadline = time.monotonic() + CALL_TIMEOUT_S
        missing = [i for i, r in enumerate(results) if r.weights is None]
        while missing:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"parameter-server shards {missing} were not restored in {CALL_TIMEOUT_S:.0f}s"
                )
            if self.restore is not None:
                self.restore()
            else:
                time.sleep(RESTORE_POLL_S)
            for i, r in zip(
                missing, self._gather([self._call(self.shards[i], "pull") for i in missing]), strict=True
            ):
                results[i] = r
            missing = [i for i in missing if results[i].weights is None]
        return results

    def _load(
        self, results: list[PullResult | PushResult], out: torch.Tensor | None, norms: dict[str, RunningNorm]
    ) -> list[int]:
        """Write every slice into ``out`` and shard 0's normaliser statistics into ``norms``; returns the shards'
        versions of the slices now in ``out``."""
        results = self._complete(results)
        if out is not None:
            for (lo, hi), r in zip(self.bounds, results, strict=True):
                decode_into(r.weights, out[lo:hi])
        for name, moments in (results[0].norms or {}).items():
            if name in norms:
                norms[name].set(moments)
        return [r.version for r in results]

    def pull_into(self, out: torch.Tensor | None, norms: dict[str, RunningNorm] | None = None) -> list[int]:
        return self._load(self._gather([self._call(s, "pull") for s in self.shards]), out, norms or {})

    def submit_push(
        self, grad: torch.Tensor, versions: list[int], norms: NormStats | None = None
    ) -> list[Any]:
        """Send every shard its slice of ``grad`` (already clipped), computed from the shards' ``versions``; returns
        what ``wait_push`` takes (ObjectRefs under Ray, results in-process). No call depends on another."""
        # float16: one scale for the whole gradient, so K slices round as one server's message would
        scale = fp16_scale(grad) if self.dtype == "float16" and len(self.shards) > 1 else None
        # one argument per call: each costs Ray its own serialisation (replies carry the weights by default)
        return [
            self._call(shard, "push", GradientPush(version, encode(grad[lo:hi], self.dtype, copy=False, scale=scale),
                                                   norms if i == 0 else None))
            for i, (shard, (lo, hi), version) in enumerate(zip(self.shards, self.bounds, versions, strict=True))
        ]  # fmt: skip

    def wait_push(
        self, pending: list[Any], out: torch.Tensor, norms: dict[str, RunningNorm] | None = None
    ) -> tuple[list[int], list[PushResult], bool]:
        """(the shards' versions of the weights now in ``out``, every shard's reply, stop)."""
        results = self._gather(pending)
        replies = list(results)
        return self._load(results, out, norms or {}), replies, any(r.stop for r in replies)
