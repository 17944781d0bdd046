"""A3C worker: a RolloutWorker that loops on its own — pull, sample, backprop, push — until told to stop."""

from __future__ import annotations

import os
from typing import Any

from rayac.workers.rollout import RolloutWorker


def _call(target: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a method on a plain object or on a Ray actor handle, alike."""
    fn = getattr(target, method)
    if hasattr(fn, "remote"):
        import ray

        return ray.get(fn.remote(*args, **kwargs))
    return fn(*args, **kwargs)


def _resolve(weights: Any) -> Any:
    """Weights arrive as a dict (in-process) or as an ObjectRef published once by the server (Ray)."""
    if type(weights).__name__ == "ObjectRef":
        import ray

        return ray.get(weights)
    return weights


class A3CWorker(RolloutWorker):
    def run(self, ps: Any, *, max_pushes: int | None = None) -> dict[str, int]:
        """pull → ``rollout_steps`` steps → targets → local backward → push, with the fresh weights coming back
        in the push's reply. Ends when the server says stop, or after ``max_pushes``."""
        pushes = applied = 0
        summary: dict[str, Any] = {"worker_index": self.worker_index}
        try:
            weights, version = _call(ps, "pull")
            self.set_weights(_resolve(weights), version)
        except (
            Exception
        ) as err:  # the server is down (restarting): tell the driver, which relaunches this loop
            return {**summary, "pushes": 0, "applied": 0, "ps_error": repr(err)}
        while max_pushes is None or pushes < max_pushes:
            grads, version, stats = self.compute_gradients()
            try:
                result = _call(ps, "push", grads, version, stats, return_weights=True)
                self.set_weights(_resolve(result.weights), result.version)
            except Exception as err:
                return {**summary, "pushes": pushes, "applied": applied, "ps_error": repr(err)}
            pushes += 1
            applied += result.applied
            if result.stop:
                break
        return {**summary, "pushes": pushes, "applied": applied}

    def pid(self) -> int:
        return os.getpid()
