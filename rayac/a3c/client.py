"""The K parameter-server shards seen from a worker or the driver: plain objects or Ray actors, called alike.

A push is K calls sent at once: the leader's (shard 0) decides the ticket and applies its slice, and the other
shards' slices take that ticket as an argument (under Ray they wait for it inside Ray, not in this process); with
one shard, a single ``push`` call. Replies and pulls write each shard's slice
straight into a flat float32 tensor.
"""

from __future__ import annotations

from typing import Any

import torch

from rayac.a3c.flat import FlatLayout, decode_into, encode, fp16_scale
from rayac.a3c.messages import GradientPush, PullResult, PushResult, WorkerStats
from rayac.normalizer import RunningNorm

CALL_TIMEOUT_S = 120.0


def _is_ref(value: Any) -> bool:
    return type(value).__name__ == "ObjectRef"


class ShardClient:
    def __init__(self, shards: list[Any], layout: FlatLayout, transfer_dtype: str):
        self.shards = list(shards)
        self.bounds = layout.shard_bounds(len(self.shards))
        self.dtype = transfer_dtype
        self.remote = hasattr(self.shards[0].pull, "remote")

    def _call(self, shard: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(shard, method)
        return fn.remote(*args, **kwargs) if self.remote else fn(*args, **kwargs)

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

    def _load(
        self, results: list[PullResult | PushResult], out: torch.Tensor | None, norms: dict[str, RunningNorm]
    ) -> int:
        """Write every slice into ``out`` and the leader's normaliser statistics into ``norms``; the weight set's
        version is the oldest slice's (all equal once the in-flight pushes land)."""
        if out is not None:
            for (lo, hi), r in zip(self.bounds, results, strict=True):
                decode_into(r.weights, out[lo:hi])
        for name, moments in (results[0].norms or {}).items():
            if name in norms:
                norms[name].set(moments)
        return min(r.version for r in results)

    def pull_into(self, out: torch.Tensor | None, norms: dict[str, RunningNorm] | None = None) -> int:
        return self._load(self._gather([self._call(s, "pull") for s in self.shards]), out, norms or {})

    def submit_push(self, grad: torch.Tensor, version: int, stats: WorkerStats) -> list[Any]:
        """Send one push of ``grad`` (already clipped); returns what ``wait_push`` takes (ObjectRefs under Ray,
        results in-process)."""
        if len(self.shards) == 1:
            payload = encode(grad, self.dtype, copy=False)  # serialised by .remote() right away
            # no keyword arguments: each costs Ray its own serialisation (replies carry the weights by default)
            return [self._call(self.shards[0], "push", GradientPush(version, payload, stats))]
        (lo, hi), lead = self.bounds[0], self.shards[0]
        # float16: one scale for the whole gradient, so K slices round as one server's message would
        scale = fp16_scale(grad) if self.dtype == "float16" else None
        msg = GradientPush(version, encode(grad[lo:hi], self.dtype, copy=False, scale=scale), stats)
        if self.remote:  # the ticket, a second return value, goes to the other shards as an ObjectRef
            ticket, first = lead.lead_push.options(num_returns=2).remote(msg)
        else:
            ticket, first = lead.lead_push(msg)
        return [first] + [
            self._call(shard, "push_slice", encode(grad[lo:hi], self.dtype, copy=False, scale=scale), ticket)
            for shard, (lo, hi) in zip(self.shards[1:], self.bounds[1:], strict=True)
        ]

    def wait_push(
        self, pending: list[Any], out: torch.Tensor, norms: dict[str, RunningNorm] | None = None
    ) -> tuple[int, bool, bool]:
        """(version of the weights now in ``out``, applied, stop)."""
        results = self._gather(pending)
        return self._load(results, out, norms or {}), results[0].applied, any(r.stop for r in results)
