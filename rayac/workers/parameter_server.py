"""ParameterServer (A3C): the global policy and its optimiser. Workers pull weights and push gradients.

A plain class; as a Ray actor its methods run one at a time, so pushes are applied in arrival order
with no locks and none lost or doubled. Every push carries the version its gradient was computed
from; staleness = server version − that version. ``max_staleness`` drops gradients older than K.

The server checkpoints itself every ``algo.ps_checkpoint_interval`` updates (atomically, to
``<run_dir>/ps``); a restarted server (Ray re-runs ``__init__``) loads it, so the version is never
reset to zero and at most K updates are lost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayac.checkpoint import load_checkpoint, save_checkpoint
from rayac.config import Config
from rayac.envs import SpaceSpec
from rayac.policy import build_policy, weights_to_numpy
from rayac.workers.learner import apply_gradients, build_optimizer, resolve_device

log = logging.getLogger(__name__)


@dataclass
class PushResult:
    version: int  # the server's version after this push
    applied: bool  # False: dropped (too stale, or from before a server restart)
    stop: bool  # the driver asked every worker to stop
    weights: Any = None  # the new weights when asked for (a dict, or an ObjectRef shared with pullers)


@dataclass
class _Window:
    """What happened since the driver last asked."""

    pushes: int = 0
    dropped: int = 0
    staleness: list[int] = field(default_factory=list)
    env_steps: int = 0
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    train: dict[str, float] = field(default_factory=dict)  # sums of the workers' loss metrics
    started: float = field(default_factory=time.monotonic)


class ParameterServer:
    def __init__(self, cfg: Config, spec: SpaceSpec, *, publish: bool = False):
        """``publish=True`` (under Ray): each version's weights go to the object store once, as an ObjectRef."""
        torch.set_num_threads(cfg.resources.learner_threads)
        torch.manual_seed(cfg.env.seed)
        self.cfg = cfg
        self.spec = spec
        self.device = resolve_device(cfg.resources.device)
        self.policy = build_policy(spec, cfg.model, estimator=cfg.algo.estimator).to(self.device)
        self.optimizer = build_optimizer(self.policy, cfg.optim)
        self.version = 0
        self.publish = publish
        self._published: tuple[int, Any] | None = None
        self._stop = False
        self._window = _Window()
        self.total_pushes = 0
        self.total_dropped = 0
        self.restored_from: int | None = None
        self.ckpt_dir = Path(cfg.run.run_dir) / "ps" if cfg.run.run_dir else None
        if self.ckpt_dir is not None and (self.ckpt_dir / "state.json").is_file():
            ckpt = load_checkpoint(self.ckpt_dir)
            self.restore(ckpt.weights, ckpt.optimizer_state(), ckpt.state["version"])
            self.restored_from = self.version
            log.warning("parameter server restored from its checkpoint at version %d", self.version)

    # -- weights
    def _weights(self) -> Any:
        """For pull(): under Ray, one object-store copy per version, shared by every worker that pulls it."""
        if not self.publish:
            return weights_to_numpy(self.policy)
        if self._published is None or self._published[0] != self.version:
            import ray

            self._published = (self.version, ray.put(weights_to_numpy(self.policy)))
        return self._published[1]

    def _reply_weights(self) -> Any:
        """For a push's reply: the version just made goes to the one worker that pushed, so it travels inline in
        the reply (no object-store put + get); if another worker already pulled this version, share its copy."""
        if self._published is not None and self._published[0] == self.version:
            return self._published[1]
        return weights_to_numpy(self.policy)

    def pull(self) -> tuple[Any, int]:
        """(weights, version); under Ray the weights are an ObjectRef shared by every puller of this version."""
        return self._weights(), self.version

    # -- gradients
    def push(self, grads: list[np.ndarray], version: int, stats: dict[str, Any] | None = None, *,
             return_weights: bool = False) -> PushResult:  # fmt: skip
        """Apply one worker's gradient (unless too stale). ``stats`` carries the worker's env steps and episodes."""
        win = self._window
        if stats:
            win.env_steps += int(stats.get("num_steps", 0))
            win.episode_returns.extend(np.asarray(stats.get("episode_returns", ())).tolist())
            win.episode_lengths.extend(np.asarray(stats.get("episode_lengths", ())).tolist())
        staleness = self.version - version
        max_staleness = self.cfg.algo.max_staleness
        # version > self.version: computed on weights from before a server restart; never apply those
        if staleness < 0 or (max_staleness is not None and staleness > max_staleness):
            win.dropped += 1
            self.total_dropped += 1
            return PushResult(
                self.version, False, self._stop, self._reply_weights() if return_weights else None
            )
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = apply_gradients(self.policy, self.optimizer, grads, self.cfg.algo.max_grad_norm)
        self.version += 1
        self.total_pushes += 1
        win.pushes += 1
        win.staleness.append(staleness)
        for key, value in (stats or {}).items():
            if key.startswith("train/"):
                win.train[key] = win.train.get(key, 0.0) + float(value)
        win.train["train/grad_norm"] = win.train.get("train/grad_norm", 0.0) + grad_norm
        every = self.cfg.algo.ps_checkpoint_interval
        if every and self.ckpt_dir is not None and self.version % every == 0:
            self.save()
        return PushResult(self.version, True, self._stop, self._reply_weights() if return_weights else None)

    # -- driver side
    def get_stats(self) -> dict[str, Any]:
        """Counters since the previous call (then reset): what the driver turns into a metrics record."""
        win, self._window = self._window, _Window()
        dt = max(time.monotonic() - win.started, 1e-9)
        metrics = {k: v / win.pushes for k, v in win.train.items()} if win.pushes else {}
        metrics.update({
            "a3c/pushes": win.pushes,
            "a3c/pushes_per_s": win.pushes / dt,
            "a3c/dropped": win.dropped,
            "a3c/dropped_total": self.total_dropped,
            "a3c/staleness_mean": float(np.mean(win.staleness)) if win.staleness else 0.0,
            "a3c/staleness_max": int(max(win.staleness)) if win.staleness else 0,
        })  # fmt: skip
        return {
            "version": self.version,
            "env_steps": win.env_steps,
            "episode_returns": np.asarray(win.episode_returns, dtype=np.float64),
            "episode_lengths": np.asarray(win.episode_lengths, dtype=np.int64),
            "metrics": metrics,
            "restored_from": self.restored_from,
        }

    def request_stop(self) -> None:
        self._stop = True

    def get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], int]:
        weights = {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}
        return weights, _to_cpu(self.optimizer.state_dict()), self.version

    def restore(self, weights: dict[str, Any], optimizer_state: dict[str, Any] | None, version: int) -> None:
        self.policy.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.version = version
        self._published = None

    def save(self) -> None:
        weights, opt, version = self.get_state()
        save_checkpoint(self.ckpt_dir, weights=weights, optimizer_state=opt, cfg=self.cfg, spec=self.spec,
                        state={"version": version, "saved_at": time.time()})  # fmt: skip

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        import os

        return os.getpid()


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
