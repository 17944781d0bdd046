"""Training jobs: each a Ray job running ``rayac train``, registered in the SQLite store of the storage dir.

The service owns three promises: a job that can never run is refused at submit (admission), a job that is
accepted but never placed — or overruns its time limit — is ended with the reason, and when the Ray cluster
goes away every unfinished job gets a final status from its run directory (``result.json``) within seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import shlex
import shutil
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from api.services.env_kwargs import check_env_kwargs
from api.services.errors import Conflict, InsufficientStorage, NotFound, Unavailable
from api.services.files import iter_new_lines, read_range, skip_lines, tail_text
from api.services.store import TERMINAL, JobRecord, JobStore
from api.services.watcher import Watcher
from rayac.budget import check_memory
from rayac.checkpoint import atomic_write_text, checkpoint_dirs
from rayac.config import Config, ConfigError
from rayac.envs import SpaceSpec, check_config_against_env
from rayac.metrics import last_record
from rayac.stopfile import STOP_FILE_ENV

log = logging.getLogger(__name__)

AGENT_WAIT_S = 60.0  # how long a submission waits for a freshly started head's job agent
WATCH_INTERVAL_S = 1.0  # how often the watcher checks the cluster and unfinished jobs
STREAM_POLL_S = 0.25
RESULT_SLACK_S = 5.0  # a run's files written this long after its record's last change are a later session's
LIVE_S = 60.0  # a finished job whose metrics grew this recently is shown running (continued elsewhere)
IDEMPOTENCY_TTL_S = 24 * 3600.0  # how long an Idempotency-Key stands for its job
RAY_STATUS = {"PENDING": "pending", "RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed",
              "STOPPED": "stopped"}  # fmt: skip


def touch_stop_file(path: Path, what: str) -> None:
    """Written before Ray is asked: a driver Ray starts after the stop (still preparing its runtime env when the
    stop came) sees it and never trains. Ray's own stop may come too early to reach it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as err:  # a full disk: Ray's stop still goes out
        log.warning("could not write the stop file of %s: %s", what, err)


def _unknown_to_ray(err: Exception) -> bool:
    return "does not exist" in str(err) or "404" in str(err)


class JobService:
    def __init__(self, settings: Any, cluster: Any):
        """``cluster``: where jobs run (``api.services.ray_cluster.RayCluster``, or a fake in unit tests)."""
        self.settings = settings
        self.cluster = cluster
        self.storage = Path(settings.storage_dir).resolve()
        self.storage.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.storage / "jobs.db")
        self._down_since: float | None = None
        self._watcher = Watcher("rayac-job-watcher", self.watch_once, WATCH_INTERVAL_S)
        self.trials: Any = None  # the sweep service: it follows its trials' records (api.services.sweeps)

    # -- Ray
    def _ray(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One Jobs API call; an unreachable cluster is Unavailable (503), whatever the client raised."""
        try:
            client = self.cluster.client()
        except Unavailable:
            raise
        except Exception as err:
            raise Unavailable(f"Ray cluster unavailable: {err}") from err
        try:
            return getattr(client, method)(*args, **kwargs)
        except OSError as err:  # requests' ConnectionError and timeouts are OSErrors
            raise Unavailable(f"the Ray cluster does not answer: {err}") from err

    def _train_command(self) -> str:
        return self.settings.train_command or f"{shlex.quote(sys.executable)} -m rayac.cli"

    # -- submit
    def check_env_allowed(self, cfg: Config) -> None:
        env_id = cfg.env.id
        if ":" in env_id:
            module = env_id.split(":", 1)[0]
            if module not in self.settings.allowed_env_modules:
                raise ConfigError("config.env.id", f"'{env_id}' would import module '{module}', which the service "
                                  "does not allow (settings: RAYAC_ALLOWED_ENV_MODULES)")  # fmt: skip

    def validate(self, cfg: Config) -> SpaceSpec:
        self.check_env_allowed(cfg)
        # before the env is built: validation opens no file a caller names
        check_env_kwargs(cfg.env.id, cfg.env.kwargs, self.settings.allowed_env_modules)
        try:
            spec = check_config_against_env(cfg)
        except ConfigError as err:
            raise ConfigError(f"config.{err.field}", err.message) from None
        self._check_caps(cfg, spec)
        return spec

    def _check_caps(self, cfg: Config, spec: SpaceSpec) -> None:
        """The operator's caps (settings), checked without Ray."""
        res, s = cfg.resources, self.settings
        if res.num_workers > s.max_workers_per_job:
            raise ConfigError("config.resources.num_workers", f"{res.num_workers} rollout workers asked; this service "
                              f"allows at most {s.max_workers_per_job} per job (RAYAC_MAX_WORKERS_PER_JOB)")  # fmt: skip
        try:
            check_memory(cfg, spec, limit_bytes=s.max_rollout_bytes, limit_name="RAYAC_MAX_ROLLOUT_BYTES",
                         max_params=s.max_policy_params, params_name="RAYAC_MAX_POLICY_PARAMS")  # fmt: skip
        except ConfigError as err:
            raise ConfigError(f"config.{err.field}", err.message) from None

    def _check_cluster(self, cfg: Config) -> None:
        """What the job needs against what the cluster has now: a job that can never be placed is refused."""
        res = cfg.resources
        needs: dict[str, tuple[str, float, str]] = {}
        learner_actor = bool(res.num_workers) and (
            cfg.algo.name == "a3c" or bool(res.learner_resources) or res.device == "cuda"
        )
        # a rollout worker is a busy process whatever Ray books for it: fractions count as RAYAC_MIN_WORKER_CPUS
        per_worker = max(res.worker_cpus, self.settings.min_worker_cpus)
        counted = (
            "" if per_worker == res.worker_cpus else f", counted as {per_worker:g} (RAYAC_MIN_WORKER_CPUS)"
        )
        cpus = res.num_workers * per_worker + (res.learner_cpus if learner_actor else 0)
        if cpus:
            needs["CPU"] = ("config.resources.num_workers", cpus, f"num_workers {res.num_workers} × worker_cpus "
                            f"{res.worker_cpus:g}{counted}" + (f" + learner_cpus {res.learner_cpus:g}" if learner_actor else ""))  # fmt: skip
        if res.device == "cuda":
            needs["GPU"] = ("config.resources.device", 1.0, "device cuda")
        for key, amount in (
            res.learner_resources.items() if res.num_workers else ()
        ):  # 0 workers: all in the driver
            needs[key] = (f"config.resources.learner_resources.{key}", amount, f"learner_resources.{key}")
        if not needs or not self.settings.check_cluster_resources:
            return
        try:
            total = self.cluster.total_resources()
        except Unavailable:
            raise
        except Exception as err:
            raise Unavailable(f"the Ray cluster's resources are unavailable: {err}") from err
        for key, (field, amount, why) in needs.items():
            have = total.get(key, 0.0)
            if amount > have + 1e-9:
                raise ConfigError(field, f"the job needs {amount:g} {key} ({why}); the Ray cluster has {have:g} in all"
                                  + ("" if have else f" (no node offers '{key}')"))  # fmt: skip

    def submit(self, cfg: Config, name: str | None, *, idempotency_key: str | None = None) -> JobRecord:
        """Register and submit a job. With ``idempotency_key``, a retry of the same request (a client that lost
        its connection mid-submit) gets the job the first one made, never a second job; the same key with another
        body is a Conflict. ``replayed`` on the record says which."""
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        if idempotency_key is None:
            return self._submit(cfg, name, job_id)
        digest = hashlib.sha256(
            json.dumps([name, cfg.model_dump(mode="json")], sort_keys=True).encode()
        ).hexdigest()
        owner, owner_digest = self.store.claim_key(idempotency_key, job_id, digest, ttl_s=IDEMPOTENCY_TTL_S)
        if owner != job_id:
            if owner_digest != digest:
                raise Conflict(
                    "Idempotency-Key was used for a different request; use a new key for a new job"
                )
            try:
                return dataclasses.replace(self.store.get(owner), replayed=True)
            except NotFound:
                raise Conflict(
                    "a submission with this Idempotency-Key is still in progress; retry shortly"
                ) from None
        try:
            return self._submit(cfg, name, job_id)
        except BaseException:
            self.store.release_key(idempotency_key, job_id)  # refused: a retry may try again
            raise

    def _submit(
        self, cfg: Config, name: str | None, job_id: str, *, resume: list[str] | None = None
    ) -> JobRecord:
        """``resume``: the ``--set`` overrides of a job that continues ``cfg.run.run_dir`` (see lifecycle)."""
        self.validate(cfg)
        self._check_cluster(cfg)
        run_dir = Path(cfg.run.run_dir) if resume is not None else self.storage / "runs" / job_id
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_dir": str(run_dir),
                                                                        "progress_bar": False})})  # fmt: skip
        config_path = self.storage / "jobs" / f"{job_id}.json"
        self._check_free_space()
        now = time.time()
        rec = JobRecord(job_id, name, "pending", cfg.model_dump(mode="json"), str(run_dir), now, now, None)
        try:
            config_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(config_path, cfg.model_dump_json(indent=2))
            self.store.insert(rec)
        except BaseException:  # a full disk, say: nothing of this job is left behind
            config_path.unlink(missing_ok=True)
            raise
        entrypoint = (f"{self._train_command()} train --preset {shlex.quote(str(config_path))} "
                      f"--run-dir {shlex.quote(str(run_dir))} --no-progress")  # fmt: skip
        if (
            resume is not None
        ):  # the run's own config and checkpoint, overrides on top: `rayac train --resume`
            entrypoint = (f"{self._train_command()} train --resume {shlex.quote(str(run_dir))} --no-progress"
                          + "".join(f" --set {shlex.quote(o)}" for o in resume))  # fmt: skip
        deadline = time.monotonic() + AGENT_WAIT_S
        try:
            while True:
                try:
                    # The driver runs where Ray runs job drivers (the head), so the run's files land where the
                    # service reads them; learner_resources place the learner / parameter server actors instead.
                    # Its actors that Ray cannot place fail the job after the service's placement deadline.
                    env = {"RAYAC_ACTOR_STARTUP_TIMEOUT_S": f"{self.settings.placement_timeout_s:g}",
                           STOP_FILE_ENV: str(self.stop_path(job_id))}  # fmt: skip
                    self._ray("submit_job", entrypoint=entrypoint, submission_id=job_id, runtime_env={"env_vars": env},
                              metadata={"rayac_job": job_id, "name": name or ""})  # fmt: skip
                    break
                except Unavailable:
                    raise
                except Exception as err:
                    # A head that just started has no job agent yet; Ray says to try again later.
                    if "No available agent" in str(err) and time.monotonic() < deadline:
                        time.sleep(1.0)
                        continue
                    raise Unavailable(f"submission to Ray failed: {err}") from err
        except Unavailable:
            self.store.delete(job_id)  # a refused submission leaves nothing behind
            config_path.unlink(missing_ok=True)
            raise
        return rec

    def _check_free_space(self) -> None:
        """Below the floor a job's run could not write its checkpoints, nor the registry its status: refuse now."""
        free = shutil.disk_usage(self.storage).free
        if free < self.settings.min_free_bytes:
            raise InsufficientStorage(f"the service's storage ({self.storage}) has {free / 2**20:,.0f} MiB free, under "
                                      f"its floor of {self.settings.min_free_bytes / 2**20:,.0f} MiB "
                                      "(RAYAC_MIN_FREE_BYTES); free some space and retry")  # fmt: skip

    # -- status
    def refresh(self, rec: JobRecord) -> JobRecord:
        """Ask Ray about a job that is not finished yet; record what changed, and enforce the deadlines."""
        if self.trials is not None and self.trials.owns(rec.id):
            return self.trials.refresh_trial(rec)  # a sweep's trial: Ray knows its sweep, not it
        if rec.status in TERMINAL:
            return self._continued_elsewhere(rec)
        try:
            info = self._ray("get_job_info", rec.id)
        except Unavailable:
            return rec  # the watcher decides when an unreachable cluster counts as gone
        except Exception as err:
            if _unknown_to_ray(err):
                if rec.status == "pending" and time.time() - rec.created_at < AGENT_WAIT_S + 30:
                    return rec  # registered a moment ago; its submission to Ray is still under way
                return self.finish_from_run_dir(
                    rec, "the Ray cluster no longer knows this job"
                )  # a replaced cluster
            log.warning("status of %s unavailable: %s", rec.id, err)
            return rec
        status = RAY_STATUS.get(str(info.status).split(".")[-1], rec.status)
        error = None
        if status == "failed":
            error = (info.message or "the job failed") + self._log_tail(rec.id)
        elif status == "pending" and time.time() - rec.created_at > self.settings.placement_timeout_s:
            status, error = "failed", (f"not placed within {self.settings.placement_timeout_s:g} s "
                                       f"(RAYAC_PLACEMENT_TIMEOUT_S): {info.message or 'Ray gave no reason'}")  # fmt: skip
            self._stop_quietly(rec.id)
        elif status == "running" and self._over_time_limit(rec, info):
            limit = rec.config["run"]["stop"]["time_limit_s"]
            status, error = "stopped", (f"stopped by the service: run.stop.time_limit_s={limit:g} was exceeded by "
                                        f"more than {self.settings.time_limit_grace_s:g} s")  # fmt: skip
            self._stop_quietly(rec.id)
        if status != rec.status:
            rec = self._record(rec, status, error)
        return rec

    def _continued_elsewhere(self, rec: JobRecord) -> JobRecord:
        """A finished job whose run went on without the service (`rayac train --resume RUN_DIR`) shows its new
        state: `running` while its metrics grow, then what its new result.json says, recorded."""
        run = Path(rec.run_dir)
        result_at, metrics_at = _mtime(run / "result.json"), _mtime(run / "metrics.jsonl")
        if result_at > rec.updated_at + RESULT_SLACK_S:  # a later session of the run ended: it decides
            try:
                result = json.loads((run / "result.json").read_text())
            except (OSError, ValueError):
                return rec
            status, error = _final_status(result)
            try:
                self.store.set_final(rec.id, status=status, error=error)
                return self.store.get(rec.id)
            except sqlite3.Error:
                return dataclasses.replace(rec, status=status, error=None)
        if metrics_at > max(rec.updated_at, result_at) + RESULT_SLACK_S and time.time() - metrics_at < LIVE_S:
            # shown, not stored: Ray knows nothing of this session
            return dataclasses.replace(rec, status="running", error=None)
        return rec

    def _record(self, rec: JobRecord, status: str, error: str | None) -> JobRecord:
        """Store a job's new status. When it cannot be written (a full disk), the answer still carries it and the
        watcher writes it on a later pass: one job's status never breaks a list, and none stays `running` for
        good."""
        try:
            self.store.update(rec.id, status=status, error=error, only_unfinished=True)
            return self.store.get(rec.id)
        except sqlite3.Error as err:
            log.warning("could not record %s as %s (%s); the watcher tries again", rec.id, status, err)
            return dataclasses.replace(rec, status=status, error=error if error is not None else rec.error)

    def _over_time_limit(self, rec: JobRecord, info: Any) -> bool:
        limit = rec.config["run"]["stop"].get("time_limit_s")
        started = (getattr(info, "start_time", None) or 0) / 1000 or rec.created_at
        return limit is not None and time.time() - started > limit + self.settings.time_limit_grace_s

    def stop_path(self, job_id: str) -> Path:
        """The job's stop file (``RAYAC_STOP_FILE`` of its driver): it exists once a stop was asked for."""
        return self.storage / "jobs" / f"{job_id}.stop"

    def _mark_stopped(self, job_id: str) -> None:
        touch_stop_file(self.stop_path(job_id), job_id)

    def _stop_quietly(self, job_id: str, stop_file: Path | None = None) -> None:
        """The stop file (``stop_file``, else the job's), then Ray's stop of the Ray job ``job_id``; a failure
        is logged, never raised (the caller is ending it anyway)."""
        touch_stop_file(stop_file or self.stop_path(job_id), job_id)
        try:
            self._ray("stop_job", job_id)
        except Exception as err:
            log.warning("could not stop %s: %s", job_id, err)

    def finish_from_run_dir(self, rec: JobRecord, reason: str) -> JobRecord:
        """The final status of a job Ray cannot tell about: what its run wrote, else failed with ``reason``."""
        result_path = Path(rec.run_dir) / "result.json"
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError):
            result = None
        status, error = ("failed", reason) if result is None else _final_status(result, reason)
        return self._record(rec, status, error)

    def _log_tail(self, job_id: str, lines: int = 20) -> str:
        try:
            tail = self._ray("get_job_logs", job_id).strip().splitlines()[-lines:]
        except Exception:  # logs are a courtesy here
            return ""
        return "\n" + "\n".join(tail) if tail else ""

    def get(self, job_id: str) -> JobRecord:
        return self.refresh(self.store.get(job_id))

    def page(self, *, limit: int, cursor: str | None) -> tuple[list[JobRecord], str | None]:
        try:
            recs, next_cursor = self.store.page(limit=limit, cursor=cursor)
        except ValueError as err:
            raise ConfigError("cursor", str(err)) from None
        return [self.refresh(r) for r in recs], next_cursor

    def request_stop(self, job_id: str) -> JobRecord:
        """Ask Ray to stop the job and return at once (the caller polls; no thread waits here)."""
        rec = self.get(job_id)
        if self.trials is not None and self.trials.owns(job_id):
            raise Conflict(
                f"job '{job_id}' is a trial of sweep '{self.trials.ray_job_of(job_id)}': stop the sweep"
            )
        if rec.status in TERMINAL:
            raise Conflict(f"job '{job_id}' already {rec.status}")
        self._mark_stopped(job_id)
        self._ray("stop_job", job_id)
        return rec

    def logs(self, job_id: str, *, tail_bytes: int, offset: int | None = None) -> tuple[str, int, int]:
        """(text, its start byte, the log's size): the last ``tail_bytes`` of the job's driver log, or with
        ``offset`` the bytes from there (at most ``tail_bytes``): a follower asks only for what is new.

        On a head of the service's own the log file is read directly, a bounded slice of it; on another cluster
        Ray's Jobs API hands over the whole log and the slice is cut from it."""
        self.store.get(job_id)
        if self.trials is not None and self.trials.owns(job_id):
            job_id = self.trials.ray_job_of(job_id)  # a trial's output is in its sweep's driver log
        local = self._local_driver_log(job_id)
        if local is not None:
            data, start, size = read_range(local, tail_bytes=tail_bytes, offset=offset)
            return data.decode(errors="replace"), start, size
        try:
            text = self._ray("get_job_logs", job_id)
        except Unavailable:
            raise
        except Exception as err:
            if _unknown_to_ray(err):
                raise NotFound(
                    f"the Ray cluster no longer knows job '{job_id}', so it has no logs of it"
                ) from None
            raise Unavailable(f"logs unavailable: {err}") from err
        data = text.encode(errors="replace")
        if offset is not None:
            start = min(offset, len(data))
            return data[start : start + tail_bytes].decode(errors="replace"), start, len(data)
        tail = tail_text(text, tail_bytes)
        return tail, len(data) - len(tail.encode(errors="replace")), len(data)

    def _local_driver_log(self, job_id: str) -> Path | None:
        """The driver log file of a job on a Ray head this service started (Ray's own name for it)."""
        head = getattr(self.cluster, "owned_head", None)
        if not head or not head.get("temp_dir"):
            return None
        path = Path(head["temp_dir"]) / "session_latest" / "logs" / f"job-driver-{job_id}.log"
        return path if path.is_file() else None

    # -- the watcher: the cluster's health, placement deadlines and time limits, without any request
    def start_watching(self) -> None:
        self._watcher.start()

    def stop_watching(self) -> None:
        self._watcher.stop()

    def watch_once(self) -> None:
        unfinished = self.store.unfinished()
        if not unfinished:
            return
        try:
            self.cluster.client()  # (re)connect — for a service without RAY_ADDRESS, a new head of its own
            alive = self.cluster.alive()
        except Exception:
            alive = False
        if not alive:
            now = time.monotonic()
            self._down_since = self._down_since or now
            if (
                now - self._down_since >= self.settings.cluster_lost_after_s
                or not self.cluster.alive_processes()
            ):
                self._cluster_lost(
                    f"the Ray cluster at {self.cluster.dashboard_url or '?'} went away", unfinished
                )
            return
        self._down_since = None
        for rec in unfinished:
            try:
                self.refresh(rec)
            except Exception:  # one job's trouble never keeps the others from being followed
                log.exception("watching %s", rec.id)

    def _cluster_lost(self, reason: str, unfinished: list[JobRecord]) -> None:
        log.warning("%s: ending %d unfinished job(s) from their run directories", reason, len(unfinished))
        for rec in unfinished:
            self.finish_from_run_dir(rec, reason)
        self.cluster.lost()  # the next call reconnects, or starts a new head of the service's own
        self._down_since = None

    # -- results
    def metrics_path(self, job_id: str) -> Path:
        return Path(self.store.get(job_id).run_dir) / "metrics.jsonl"

    def latest_metrics(self, rec: JobRecord) -> dict[str, Any] | None:
        return last_record(Path(rec.run_dir) / "metrics.jsonl")

    def checkpoints(self, rec: JobRecord) -> list[dict[str, Any]]:
        out = []
        for path in checkpoint_dirs(Path(rec.run_dir)):
            try:
                state = json.loads((path / "state.json").read_text())
            except (FileNotFoundError, NotADirectoryError):
                continue  # pruned by the running job since it was listed
            out.append({"name": path.name, "env_steps": state["env_steps"], "version": state["version"],
                        "eval_return": state.get("eval_return")})  # fmt: skip
        return out

    async def metric_events(self, job_id: str, last_event_id: int | None) -> AsyncIterator[dict[str, str]]:
        """SSE events: one ``metrics`` event per record after ``last_event_id`` (id = record index), then one
        ``status`` event once the job has ended. File reads run in threads."""
        path = await asyncio.to_thread(self.metrics_path, job_id)  # NotFound before the stream starts
        first = 0 if last_event_id is None else last_event_id + 1
        # every read is one bounded chunk (files.CHUNK_BYTES) in a thread: a 100 MB metrics file costs each stream
        # a chunk of memory, and a stream whose client stops reading waits in its send (and is dropped by it)
        offset, next_id = await asyncio.to_thread(skip_lines, path, first)
        while True:
            lines, offset = await asyncio.to_thread(iter_new_lines, path, offset)
            for line in lines:
                yield {"id": str(next_id), "event": "metrics", "data": line}
                next_id += 1
            if lines:
                continue
            rec = await asyncio.to_thread(self.get, job_id)
            if rec.status in TERMINAL:
                lines, offset = await asyncio.to_thread(iter_new_lines, path, offset)
                for line in lines:
                    yield {"id": str(next_id), "event": "metrics", "data": line}
                    next_id += 1
                yield {"event": "status", "data": json.dumps({"status": rec.status, "error": rec.error})}
                return
            await asyncio.sleep(STREAM_POLL_S)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def latest_returns(run_dir: Path, *, tail_bytes: int = 262_144) -> tuple[dict[str, Any] | None, float | None]:
    """(last metrics record, last greedy eval return) from the tail of ``metrics.jsonl``.

    Evaluation runs every K steps, so the last record often has no eval: look back through the tail,
    then fall back to the latest checkpoint's state (which keeps the last eval return)."""
    last, eval_return = None, None
    try:
        with open(Path(run_dir) / "metrics.jsonl", "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - tail_bytes))
            lines = f.read().split(b"\n")[:-1]  # after the last newline: a line still being written
        if size > tail_bytes:
            lines = lines[1:]  # the tail cut its first line
    except FileNotFoundError:
        lines = []
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:  # a torn line (a full disk, a crash): the records around it still count
            continue
        last = last or record
        if "eval/return_mean" in record:
            eval_return = float(record["eval/return_mean"])
            break
    if eval_return is None:
        for ckpt in reversed(checkpoint_dirs(Path(run_dir))):
            try:
                eval_return = json.loads((ckpt / "state.json").read_text()).get("eval_return")
                break
            except (FileNotFoundError, NotADirectoryError):
                continue  # pruned since it was listed
    return last, eval_return


def _final_status(result: dict, reason: str | None = None) -> tuple[str, str | None]:
    """A job's final (status, error) from its run's result.json: an interrupted run was stopped, one that raised
    (stop_reason "error") failed with its error, any other stop succeeded."""
    if result.get("stop_reason") == "interrupted":
        return "stopped", None
    if result.get("stop_reason") == "error":
        return "failed", result.get("error") or reason
    return "succeeded", None
