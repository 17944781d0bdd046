"""Trained policies for inference: found in job run dirs, loaded without pickle, cached (LRU), micro-batched.

Concurrent act requests for the same policy wait one event-loop turn (plus ``batch_wait_ms``) and then
share a single forward pass: under load, N requests cost one forward instead of N.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from rayac.checkpoint import InferencePolicy, bytes_dtype, latest_checkpoint, load_policy
from rayac.config import ConfigError
from rayac.envs import SpaceSpec

from .errors import NotFound, Unavailable
from .jobs import JobService

log = logging.getLogger(__name__)
T = TypeVar("T")
RESOLVE_TTL_S = 1.0  # how long "which checkpoint is latest" is trusted before looking at the disk again
ROTATION_RETRIES = 8  # a checkpoint pruned between finding and reading it is looked for again this many times


@dataclass
class ActResult:
    actions: np.ndarray
    values: np.ndarray | None
    probs: np.ndarray | None

    def to_json(self) -> dict[str, Any]:
        """The ActResponse body, built directly (no response-model validation on the hot path)."""
        out: dict[str, Any] = {"actions": self.actions.tolist()}
        if self.values is not None:
            out["values"] = self.values.tolist()
        if self.probs is not None:
            out["probs"] = self.probs.tolist()
        return out


class MicroBatcher:
    """Collects act requests for one policy and runs them as one forward pass."""

    def __init__(self, policy: InferencePolicy, *, wait_s: float, max_batch: int):
        self.policy = policy
        self.wait_s = wait_s
        self.max_batch = max_batch
        self.pending: list[tuple[np.ndarray, bool, bool, bool, asyncio.Future]] = []
        self.flush_scheduled = False

    async def act(self, obs: np.ndarray, *, deterministic: bool, values: bool, probs: bool) -> ActResult:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((obs, deterministic, values, probs, fut))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().create_task(self._flush_soon())
        return await fut

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.wait_s)  # 0: one loop turn, so every request already read joins this batch
        self.flush_scheduled = False
        pending, self.pending = self.pending, []
        while pending:
            chunk, size = [], 0
            while pending and (not chunk or size + len(pending[0][0]) <= self.max_batch):
                chunk.append(pending.pop(0))
                size += len(chunk[-1][0])
            self._run(chunk)

    def _run(self, chunk: list) -> None:
        try:
            results = forward_batch(self.policy, [c[:4] for c in chunk])
        except Exception as err:  # hand the failure to every waiting request
            for c in chunk:
                if not c[4].done():
                    c[4].set_exception(err)
            return
        for c, result in zip(chunk, results, strict=True):
            if not c[4].done():
                c[4].set_result(result)


@torch.inference_mode()
def forward_batch(
    policy: InferencePolicy, requests: list[tuple[np.ndarray, bool, bool, bool]]
) -> list[ActResult]:
    """One forward pass for several act requests, each ``(observations, deterministic, values, probs)`` — the
    in-process micro-batcher and the Ray Serve replicas both answer with this."""
    obs = torch.as_tensor(np.concatenate([r[0] for r in requests]))
    net = policy.policy
    greedy = net.actions(obs, deterministic=True)
    sampled = net.actions(obs, deterministic=False) if not all(r[1] for r in requests) else greedy
    values = net.value(obs).numpy() if any(r[2] for r in requests) else None
    probs = net.action_probs(obs).numpy() if any(r[3] for r in requests) else None
    greedy = policy.spec.clip_actions(greedy.numpy())
    sampled = policy.spec.clip_actions(sampled.numpy())
    results, start = [], 0
    for o, deterministic, want_v, want_p in requests:
        end = start + len(o)
        acts = greedy[start:end] if deterministic else sampled[start:end]
        results.append(
            ActResult(acts, values[start:end] if want_v else None, probs[start:end] if want_p else None)
        )
        start = end
    return results


def find_latest_checkpoint(run_dir: Path) -> Path | None:
    """The latest checkpoint. A directory listing is not atomic: one taken while a job renames its new checkpoint
    in and its old one away can see neither, so an empty answer is looked at again."""
    for _ in range(ROTATION_RETRIES):
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            return ckpt
    return None


class PolicyService:
    def __init__(self, settings: Any, jobs: JobService):
        self.settings = settings
        self.jobs = jobs
        self.cache: collections.OrderedDict[str, tuple[Path, MicroBatcher]] = collections.OrderedDict()
        self._resolved: dict[str, tuple[float, Path]] = {}
        self._loading: dict[str, asyncio.Lock] = {}

    def _checkpoint_of(self, policy_id: str, *, fresh: bool = False) -> Path:
        hit = self._resolved.get(policy_id)
        if not fresh and hit is not None and time.monotonic() - hit[0] < RESOLVE_TTL_S:
            return hit[1]
        rec = self.jobs.store.get(policy_id)  # NotFound for an unknown id
        ckpt = find_latest_checkpoint(Path(rec.run_dir))
        if ckpt is None:
            raise NotFound(f"job '{policy_id}' has no checkpoint yet")
        self._resolved[policy_id] = (time.monotonic(), ckpt)
        return ckpt

    def read(self, policy_id: str, read: Callable[[Path], T]) -> tuple[Path, T]:
        """``read(latest checkpoint)``. A running job prunes old checkpoints: one that vanished between finding
        and reading it (a cached path included) is found again, never an error."""
        for attempt in range(ROTATION_RETRIES):
            ckpt = self._checkpoint_of(policy_id, fresh=attempt > 0)
            try:
                return ckpt, read(ckpt)
            except (FileNotFoundError, NotADirectoryError):
                self._resolved.pop(policy_id, None)
        raise Unavailable(f"the checkpoints of job '{policy_id}' were replaced {ROTATION_RETRIES} times while being "
                          "read; try again")  # fmt: skip

    async def batcher(self, policy_id: str) -> MicroBatcher:
        """The cached batcher of a policy. Finding and loading its checkpoint (SQLite, disk, safetensors) runs in a
        thread, never on the event loop, and one load per policy at a time: concurrent misses wait for it."""
        for attempt in range(ROTATION_RETRIES):
            try:
                return await self._batcher(policy_id, fresh=attempt > 0)
            except (FileNotFoundError, NotADirectoryError):
                self._resolved.pop(policy_id, None)  # pruned after it was found: find the latest again
        loaded = self.cache.get(policy_id)
        if loaded is not None:  # checkpoints rotate faster than one loads: the one in memory serves meanwhile
            return loaded[1]
        raise Unavailable(f"the checkpoints of job '{policy_id}' were replaced {ROTATION_RETRIES} times while being "
                          "loaded; try again")  # fmt: skip

    async def _batcher(self, policy_id: str, *, fresh: bool) -> MicroBatcher:
        resolved = self._resolved.get(policy_id)
        if not fresh and resolved is not None and time.monotonic() - resolved[0] < RESOLVE_TTL_S:
            ckpt = resolved[1]
        else:
            ckpt = await asyncio.to_thread(self._checkpoint_of, policy_id, fresh=fresh)
        return await self.batcher_at(policy_id, ckpt)

    async def batcher_at(self, key: str, ckpt: Path) -> MicroBatcher:
        """The cached batcher of checkpoint ``ckpt`` under ``key`` (a job id, or a deployment's version)."""
        policy_id = key
        hit = self.cache.get(policy_id)
        if hit is not None and hit[0] == ckpt:
            self.cache.move_to_end(policy_id)
            return hit[1]
        async with self._loading.setdefault(policy_id, asyncio.Lock()):
            hit = self.cache.get(policy_id)
            if hit is not None and hit[0] == ckpt:  # loaded while this request waited
                return hit[1]
            policy = await asyncio.to_thread(load_policy, ckpt)  # safetensors + JSON: no pickle
        batcher = MicroBatcher(
            policy, wait_s=self.settings.batch_wait_ms / 1000, max_batch=self.settings.max_batch
        )
        self.cache[policy_id] = (ckpt, batcher)
        self.cache.move_to_end(policy_id)
        while len(self.cache) > self.settings.policy_cache_size:
            self.cache.popitem(last=False)
        return batcher

    def describe(self, policy_id: str, *, job_name: str | None = None) -> dict[str, Any]:
        """``job_name``: the job's name when the caller has its record already (else it is read)."""
        if job_name is None:
            job_name = self.jobs.store.get(policy_id).name
        _, described = self.read(policy_id, describe_checkpoint)
        return {"id": policy_id, "job_id": policy_id, "job_name": job_name, **described}

    def list(self) -> list[dict[str, Any]]:
        """Every policy that can be described now: one job's trouble (a checkpoint mid-rotation, an unreadable
        file) leaves that job out of this answer, never fails the list for everyone."""
        out = []
        for rec in self.jobs.store.all():
            try:
                if find_latest_checkpoint(Path(rec.run_dir)) is not None:
                    out.append(self.describe(rec.id, job_name=rec.name))
            except (NotFound, Unavailable, OSError, ValueError, KeyError) as err:
                log.warning("policy list: leaving out %s (%s: %s)", rec.id, type(err).__name__, err)
        return out

    async def act(self, policy_id: str, observations: Any, *, deterministic: bool, values: bool,
                  probs: bool, observations_b64: str | None = None,
                  observations_dtype: str | None = None) -> ActResult:  # fmt: skip
        """``observations`` (nested lists), or ``observations_b64``: base64 of the batch's raw bytes."""
        return await self.act_with(await self.batcher(policy_id), observations, deterministic=deterministic,
                                   values=values, probs=probs, observations_b64=observations_b64,
                                   observations_dtype=observations_dtype)  # fmt: skip

    async def act_with(self, batcher: MicroBatcher, observations: Any, *, deterministic: bool, values: bool,
                       probs: bool, observations_b64: str | None = None,
                       observations_dtype: str | None = None) -> ActResult:  # fmt: skip
        """Act on ``batcher``'s policy: the request checks of every act route, then its micro-batch."""
        obs = self.check_request(batcher.policy, observations, probs=probs, observations_b64=observations_b64,
                                 observations_dtype=observations_dtype)  # fmt: skip
        return await batcher.act(obs, deterministic=deterministic, values=values, probs=probs)

    def check_request(self, policy: InferencePolicy, observations: Any, *, probs: bool,
                      observations_b64: str | None, observations_dtype: str | None = None) -> np.ndarray:  # fmt: skip
        """The batch of an act request, checked against ``policy``'s spaces; ConfigError (422) naming the field."""
        field = "observations" if observations_b64 is None else "observations_b64"
        try:
            if observations_b64 is None:
                obs = policy.check_observations(observations)
            else:
                try:
                    # line-wrapped base64 (base64.encodebytes, MIME) is fine: whitespace is not data
                    raw = base64.b64decode("".join(observations_b64.split()), validate=True)
                except binascii.Error:
                    raise ValueError("not valid base64") from None
                obs = policy.observations_from_bytes(raw, observations_dtype)
        except ValueError as err:
            raise ConfigError(field, str(err)) from None  # → 422 naming the field
        if len(obs) > self.settings.max_act_batch:
            raise ConfigError(field, f"at most {self.settings.max_act_batch} per request, got {len(obs)}")
        if probs and not policy.spec.discrete:
            raise ConfigError("return_probs", "action probabilities exist only for Discrete action spaces")
        return obs


def describe_checkpoint(ckpt: Path) -> dict[str, Any]:
    """What a client needs to call a checkpoint's policy: env, spaces, and where in training it was saved."""
    state = json.loads((ckpt / "state.json").read_text())
    spaces = json.loads((ckpt / "spaces.json").read_text())
    config = json.loads((ckpt / "config.json").read_text())
    action: dict[str, Any] = {"kind": spaces["action_kind"]}
    if spaces["action_kind"] == "discrete":
        action["n"] = spaces["action_n"]
    else:
        action.update(shape=spaces["action_shape"], low=spaces["action_low"], high=spaces["action_high"])
    return {
        "env_id": config["env"]["id"], "checkpoint": ckpt.name, "observation_shape": spaces["obs_shape"],
        "observation_dtype": spaces["obs_dtype"], "action_space": action,
        "observations_b64_dtype": bytes_dtype(SpaceSpec.from_dict(spaces)),
        "eval_return": state.get("eval_return"), "env_steps": state["env_steps"],
    }  # fmt: skip
