"""Deployments: a stable name for a chosen checkpoint, with versions and rollback.

A deployment pins a copy of its checkpoint's inference files (``policy.safetensors``, ``config.json``,
``spaces.json``, ``state.json``: a few MB, no optimiser or sampler state) under
``<storage>/deployments/<name>/v<version>-<id>/``, so the job that wrote it may go on writing and pruning
(``run.keep_checkpoints``) without the deployment ever changing. Every version keeps its copy until the
deployment is deleted: a rollback is a pointer move, and its answers are the old version's exactly.

The registry is two tables in the service's SQLite file (``jobs.db``, see api.services.store).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.services.errors import Conflict, NotFound
from api.services.jobs import JobService
from api.services.policies import ActResult, PolicyService, describe_checkpoint
from rayac.checkpoint import NoSuchCheckpoint, load_checkpoint, select_checkpoint
from rayac.config import ConfigError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # also a safe directory name
log = logging.getLogger(__name__)
PINNED_FILES = ("policy.safetensors", "config.json", "spaces.json", "state.json")
RESOLVE_TTL_S = 1.0  # another service process on the same storage sees a rollback within this
COPY_ATTEMPTS = 5  # a checkpoint pruned while it is copied: choose again


@dataclass
class Version:
    name: str
    version: int
    job_id: str
    requested: str
    path: str
    created_at: float

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.path)


class DeploymentStore:
    """Two tables: ``deployments`` (name → current version) and ``deployment_versions`` (the history)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        with self._db() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS deployments (name TEXT PRIMARY KEY, current INTEGER NOT NULL,
                created_at REAL NOT NULL, updated_at REAL NOT NULL)""")
            db.execute("""CREATE TABLE IF NOT EXISTS deployment_versions (name TEXT NOT NULL,
                version INTEGER NOT NULL, job_id TEXT NOT NULL, requested TEXT NOT NULL, path TEXT NOT NULL,
                created_at REAL NOT NULL, PRIMARY KEY (name, version))""")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions are explicit
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def add_version(self, name: str, *, job_id: str, requested: str, place: Any, replace: bool) -> Version:
        """Register the next version of ``name``; ``place(version) -> path`` puts its files in place inside the
        transaction (a rename), so a refused version leaves nothing. Conflict if it exists and not ``replace``."""
        with self.lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # also orders writers in other processes
            try:
                row = db.execute("SELECT current FROM deployments WHERE name=?", (name,)).fetchone()
                if row is not None and not replace:
                    raise Conflict(
                        f"name: deployment '{name}' exists (version {row[0]}); send replace: true for a new version"
                    )
                last = db.execute(
                    "SELECT MAX(version) FROM deployment_versions WHERE name=?", (name,)
                ).fetchone()
                version = (last[0] or 0) + 1
                now = time.time()
                path = str(place(version))
                db.execute("INSERT INTO deployment_versions VALUES (?,?,?,?,?,?)",
                           (name, version, job_id, requested, path, now))  # fmt: skip
                db.execute("INSERT INTO deployments VALUES (?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                           "current=excluded.current, updated_at=excluded.updated_at", (name, version, now, now))  # fmt: skip
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return Version(name, version, job_id, requested, path, now)

    def current(self, name: str) -> tuple[int, float, float]:
        """(current version, created_at, updated_at); NotFound naming the deployment."""
        if not NAME.fullmatch(
            name
        ):  # never a registered name (nor a string SQLite could take: lone surrogates)
            raise NotFound(f"no deployment '{name.encode('utf-8', 'backslashreplace').decode()}'")
        with self._db() as db:
            row = db.execute(
                "SELECT current, created_at, updated_at FROM deployments WHERE name=?", (name,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no deployment '{name}'")
        return int(row[0]), float(row[1]), float(row[2])

    def versions(self, name: str) -> list[Version]:
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM deployment_versions WHERE name=? ORDER BY version", (name,)
            ).fetchall()
        return [Version(*r) for r in rows]

    def names(self) -> list[str]:
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT name FROM deployments ORDER BY created_at, name")]

    def set_current(self, name: str, version: int) -> None:
        with self.lock, self._db() as db:
            db.execute(
                "UPDATE deployments SET current=?, updated_at=? WHERE name=?", (version, time.time(), name)
            )

    def delete(self, name: str) -> list[Version]:
        self.current(name)  # NotFound
        with self.lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            versions = [
                Version(*r) for r in db.execute("SELECT * FROM deployment_versions WHERE name=?", (name,))
            ]
            cur = db.execute("DELETE FROM deployments WHERE name=?", (name,))
            db.execute("DELETE FROM deployment_versions WHERE name=?", (name,))
            db.execute("COMMIT")
        if not cur.rowcount:
            raise NotFound(f"no deployment '{name}'")
        return versions


class DeploymentService:
    def __init__(self, settings: Any, jobs: JobService, policies: PolicyService):
        self.settings = settings
        self.jobs = jobs
        self.policies = policies
        self.root = jobs.storage / "deployments"
        self.store = DeploymentStore(jobs.storage / "jobs.db")
        self._resolved: dict[str, tuple[float, Version]] = {}
        self._export_locks: dict[tuple[str, str], threading.Lock] = {}
        self.serve = None  # RAYAC_SERVE_REPLICAS: act on Ray Serve replicas instead of in this process
        if getattr(settings, "serve_replicas", None):
            from api.services.serve_act import ServeActs

            self.serve = ServeActs(settings, jobs.cluster)

    # -- create, rollback, delete
    def create(self, name: str, *, policy: str, checkpoint: str | int, replace: bool) -> dict[str, Any]:
        """Pin ``checkpoint`` (``best``, ``latest`` or a step) of job ``policy`` as the next version of ``name``."""
        try:
            rec = self.jobs.store.get(policy)
        except NotFound:
            raise ConfigError("policy", f"no job '{policy}'") from None
        if not replace:  # fail before copying anything (checked again when the version is registered)
            try:
                version, _, _ = self.store.current(name)
            except NotFound:
                pass
            else:
                raise Conflict(f"name: deployment '{name}' exists (version {version}); send replace: true "
                               "for a new version")  # fmt: skip
        staged = self._pin(Path(rec.run_dir), policy, checkpoint)
        try:
            dest_dir = self.root / name

            def place(version: int) -> Path:
                dest = dest_dir / f"v{version}-{uuid.uuid4().hex[:8]}"
                dest.mkdir(parents=True)
                target = dest / staged.name
                staged.rename(target)
                return target

            self.store.add_version(
                name, job_id=policy, requested=str(checkpoint), place=place, replace=replace
            )
        finally:
            shutil.rmtree(staged.parent, ignore_errors=True)
        self._resolved.pop(name, None)
        self._warm(name)
        return self.describe(name)

    def _pin(self, run_dir: Path, job_id: str, checkpoint: str | int) -> Path:
        """A verified copy of the chosen checkpoint's inference files in a staging dir; its path."""
        staging = self.root / f".staging-{uuid.uuid4().hex[:12]}"
        for _ in range(COPY_ATTEMPTS):
            try:
                source = select_checkpoint(run_dir, checkpoint, label=f"job '{job_id}'")
            except NoSuchCheckpoint as err:
                raise ConfigError("checkpoint", str(err)) from None
            except FileNotFoundError as err:
                raise ConfigError("policy", f"{err} yet") from None
            except ValueError as err:
                raise ConfigError("checkpoint", str(err)) from None
            target = staging / source.name
            shutil.rmtree(staging, ignore_errors=True)
            target.mkdir(parents=True)
            try:
                for fname in PINNED_FILES:
                    shutil.copy2(source / fname, target / fname)
                load_checkpoint(target).build_policy()  # whole and loadable, or choose again
                return target
            except (OSError, ValueError, RuntimeError):
                continue  # pruned (or replaced) by its job while copied: choose again (a step may be gone now)
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError("checkpoint", f"job '{job_id}' replaced its checkpoints faster than they could be "
                          f"copied ({COPY_ATTEMPTS} tries); try again")  # fmt: skip

    def rollback(self, name: str, *, version: int | None = None) -> dict[str, Any]:
        """Back to ``version``, or to the version before the current one."""
        current, _, _ = self.store.current(name)
        known = [v.version for v in self.store.versions(name)]
        if version is None:
            older = [v for v in known if v < current]
            if not older:
                raise Conflict(
                    f"deployment '{name}' is at version {current}, its first: nothing to roll back to"
                )
            version = older[-1]
        elif version not in known:
            raise ConfigError("version", f"deployment '{name}' has no version {version} (it has {known})")
        self.store.set_current(name, version)
        self._resolved.pop(name, None)
        self._warm(name)
        return self.describe(name)

    def delete(self, name: str) -> None:
        self.store.delete(name)
        self._resolved.pop(name, None)
        shutil.rmtree(self.root / name, ignore_errors=True)
        if self.serve is not None:
            self.serve.forget(name)

    def _warm(self, name: str) -> None:
        """With Serve: start the replicas of the version ``name`` serves now, in the background."""
        if self.serve is None:
            return

        def start() -> None:
            try:
                self.serve.handle(name, self.resolve(name).checkpoint_dir)
            except Exception as err:  # the next act tries again, and reports
                log.warning("deployment %s: Serve replicas not started yet: %s", name, err)

        threading.Thread(target=start, name=f"rayac-serve-{name}", daemon=True).start()

    # -- reading
    def resolve(self, name: str) -> Version:
        """The version ``name`` serves now (trusted for RESOLVE_TTL_S; this process's changes at once)."""
        hit = self._resolved.get(name)
        if hit is not None and time.monotonic() - hit[0] < RESOLVE_TTL_S:
            return hit[1]
        current, _, _ = self.store.current(name)
        version = next(v for v in self.store.versions(name) if v.version == current)
        self._resolved[name] = (time.monotonic(), version)
        return version

    def describe(self, name: str) -> dict[str, Any]:
        current, created_at, updated_at = self.store.current(name)
        history, active = [], {}
        for v in self.store.versions(name):
            info = describe_checkpoint(v.checkpoint_dir)
            history.append({"version": v.version, "job_id": v.job_id, "checkpoint": info["checkpoint"],
                            "requested": v.requested, "env_steps": info["env_steps"],
                            "eval_return": info["eval_return"], "created_at": v.created_at,
                            "active": v.version == current})  # fmt: skip
            if v.version == current:
                active = {"job_id": v.job_id, **info}
        return {"name": name, "version": current, **active, "created_at": created_at, "updated_at": updated_at,
                "history": history}  # fmt: skip

    def list(self) -> list[dict[str, Any]]:
        out = []
        for name in self.store.names():
            try:
                out.append(self.describe(name))
            except NotFound:  # deleted meanwhile
                continue
        return out

    # -- inference and export
    async def act(self, name: str, observations: Any, *, deterministic: bool, values: bool, probs: bool,
                  observations_b64: str | None = None, observations_dtype: str | None = None) -> ActResult:  # fmt: skip
        version = self._resolved.get(name)
        if version is None or time.monotonic() - version[0] >= RESOLVE_TTL_S:
            pinned = await asyncio.to_thread(self.resolve, name)
        else:
            pinned = version[1]
        try:
            batcher = await self.policies.batcher_at(f"deployment:{name}", pinned.checkpoint_dir)
        except FileNotFoundError:  # deleted by another service process on this storage since resolved
            self._resolved.pop(name, None)
            raise NotFound(f"no deployment '{name}'") from None
        if self.serve is not None:  # the same checks here, the forward pass on a replica
            obs = self.policies.check_request(batcher.policy, observations, probs=probs,
                                              observations_b64=observations_b64,
                                              observations_dtype=observations_dtype)  # fmt: skip
            return await self.serve.act(name, pinned.checkpoint_dir, obs, deterministic=deterministic,
                                        values=values, probs=probs)  # fmt: skip
        return await self.policies.act_with(batcher, observations, deterministic=deterministic, values=values,
                                            probs=probs, observations_b64=observations_b64,
                                            observations_dtype=observations_dtype)  # fmt: skip

    def export(self, name: str, fmt: str) -> tuple[Path, Path, int]:
        """(exported file, its JSON sidecar, version) of the current version, exported once per format."""
        from rayac.export import SUFFIX, export_policy

        pinned = self.resolve(name)
        out = pinned.checkpoint_dir.parent / "export" / f"{name}-v{pinned.version}{SUFFIX[fmt]}"
        sidecar = out.with_name(out.name + ".json")
        with self._export_locks.setdefault((str(out), fmt), threading.Lock()):
            if not sidecar.is_file():  # written after the file: both are there
                export_policy(pinned.checkpoint_dir, out, fmt=fmt)  # type: ignore[arg-type]
        return out, sidecar, pinned.version
