"""Parameter-server shard checkpoints. A shard keeps its last few in memory (``ShardMemory``); the driver takes
them every step and writes them to its run directory (``ShardStore``), since only the driver writes a run's files
and a shard may run on another node. A restarted shard, which remembers nothing, is handed its slice back by
the driver.

``<run_dir>/ps/shard-<i>-of-<K>/v<version>.safetensors`` holds the shard's slice of the parameters and of the
optimiser state; the last few versions are kept. A shard that restarts comes back from its own newest file.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from rayac.a3c.messages import OptimizerSlice, ShardState
from rayac.normalizer import Moments

KEEP = 3


class ShardStore:
    def __init__(self, root: Path | None, shard: int, num_shards: int, *, keep: int = KEEP):
        self.dir = None if root is None else Path(root) / f"shard-{shard}-of-{num_shards}"
        self.keep = keep

    @property
    def enabled(self) -> bool:
        return self.dir is not None

    def _path(self, version: int) -> Path:
        assert self.dir is not None
        return self.dir / f"v{version:012d}.safetensors"

    def versions(self) -> list[int]:
        if self.dir is None or not self.dir.is_dir():
            return []
        return sorted(int(p.stem[1:]) for p in self.dir.glob("v*.safetensors"))

    def save(self, state: ShardState) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = {"params": np.ascontiguousarray(state.params)}
        tensors.update({f"opt.{k}": np.ascontiguousarray(v) for k, v in state.optimizer.moments.items()})
        for name, m in (state.norms or {}).items():
            tensors[f"norm.{name}.mean"] = np.ascontiguousarray(m.mean)
            tensors[f"norm.{name}.var"] = np.ascontiguousarray(m.var)
        meta = {
            "lo": state.lo,
            "hi": state.hi,
            "version": state.version,
            "scalars": state.optimizer.scalars,
            "norm_counts": {name: m.count for name, m in (state.norms or {}).items()},
        }
        path = self._path(state.version)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        save_file(tensors, str(tmp), metadata={"rayac": json.dumps(meta)})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        for old in self.versions()[: -self.keep]:
            self._path(old).unlink(missing_ok=True)

    def load(self, version: int) -> ShardState:
        from safetensors import safe_open

        path = self._path(version)
        with safe_open(str(path), framework="np") as f:
            meta = json.loads(f.metadata()["rayac"])
        tensors = load_file(str(path))
        opt = OptimizerSlice({k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, meta["scalars"])
        norms = {
            name: Moments(tensors[f"norm.{name}.mean"], tensors[f"norm.{name}.var"], float(count))
            for name, count in meta.get("norm_counts", {}).items()
        }
        return ShardState(meta["lo"], meta["hi"], meta["version"], tensors["params"], opt, norms or None)

    def clear(self) -> None:
        """A fresh run (or a --resume, which restores from the driver's checkpoint) starts a new history."""
        for version in self.versions():
            self._path(version).unlink(missing_ok=True)


class ShardMemory:
    """A shard's own checkpoints, in memory: the last ``keep`` versions, until the driver takes them to disk."""

    def __init__(self, *, enabled: bool, keep: int = KEEP):
        self.enabled = enabled
        self.keep = keep
        self.states: dict[int, ShardState] = {}

    def versions(self) -> list[int]:
        return sorted(self.states)

    def save(self, state: ShardState) -> None:
        if not self.enabled:
            return
        self.states[state.version] = state
        for old in self.versions()[: -self.keep]:
            del self.states[old]

    def load(self, version: int) -> ShardState:
        return self.states[version]

    def since(self, version: int) -> list[ShardState]:
        return [self.states[v] for v in self.versions() if v > version]

    def clear(self) -> None:
        self.states.clear()
