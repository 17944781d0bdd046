"""Sweeps: each a Ray job running ``rayac sweep --resume <storage>/sweeps/<id>`` (its SweepSpec written there
first as spec.json, so the same command starts it and, on a new cluster, would continue it).

Its state is the sweep's own ``sweep.json`` (written by rayac.sweep.SweepRecorder) plus what Ray says of the job.
Each trial is also a job record, ``<sweep id>-<trial id>``, whose run dir is the trial's: the job routes (metrics,
the SSE stream, checkpoints, policies and act, the dashboard's job page) work on it unchanged. Ray knows no job by
that id, so the job service hands such records here (``JobService.trials``): their status is the trial's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from api.services.errors import Conflict, NotFound, Unavailable
from api.services.jobs import (
    AGENT_WAIT_S,
    RAY_STATUS,
    WATCH_INTERVAL_S,
    JobService,
    _unknown_to_ray,
    touch_stop_file,
)
from api.services.store import TERMINAL, JobRecord
from api.services.watcher import Watcher
from rayac.checkpoint import atomic_write_text
from rayac.config import Config, ConfigError, apply_overrides, parse_config
from rayac.stopfile import STOP_FILE_ENV
from rayac.sweep import SweepSpec, parse_search, trial_bundles, trial_config

log = logging.getLogger(__name__)

PREFIX = "sweep-"
ID_LEN = len(PREFIX) + 12  # sweep-<12 hex>; a trial's job id is <sweep id>-<trial id>
# the CLI's option names in SweepSpec's errors, as the REST body names them
OPTION_FIELDS = {"--samples": "samples", "--concurrent": "concurrent", "--metric": "metric", "--mode": "mode",
                 "--scheduler": "scheduler", "--pbt-interval": "pbt_interval", "--search-alg": "search_alg",
                 "--search": "search"}  # fmt: skip
JOB_STATUS = {"stopped_early": "stopped"}  # a trial's status as a job's (JobStatus has no stopped_early)


@dataclass
class SweepRecord:
    id: str
    name: str | None
    status: str
    spec: dict[str, Any]  # SweepSpec's fields
    sweep_dir: str
    created_at: float
    updated_at: float
    error: str | None


class SweepStore:
    """The sweep registry: ``sweeps.db`` beside the jobs' (one short connection per call; a lock orders writers)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        with self._db() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS sweeps (
                id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL, spec TEXT NOT NULL, sweep_dir TEXT NOT NULL,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, error TEXT)""")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @staticmethod
    def _row(row: tuple) -> SweepRecord:
        return SweepRecord(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7])

    def insert(self, rec: SweepRecord) -> None:
        with self.lock, self._db() as db:
            db.execute("INSERT INTO sweeps VALUES (?,?,?,?,?,?,?,?)", (rec.id, rec.name, rec.status,
                       json.dumps(rec.spec), rec.sweep_dir, rec.created_at, rec.updated_at, rec.error))  # fmt: skip

    def delete(self, sweep_id: str) -> None:
        with self.lock, self._db() as db:
            db.execute("DELETE FROM sweeps WHERE id=?", (sweep_id,))

    def update(self, sweep_id: str, *, status: str, error: str | None) -> None:
        """Only an unfinished sweep changes: the first final status stands."""
        with self.lock, self._db() as db:
            db.execute("UPDATE sweeps SET status=?, error=COALESCE(?, error), updated_at=? WHERE id=? "
                       "AND status NOT IN ('succeeded','failed','stopped')", (status, error, time.time(), sweep_id))  # fmt: skip

    def get(self, sweep_id: str) -> SweepRecord:
        with self._db() as db:
            row = db.execute("SELECT * FROM sweeps WHERE id=?", (sweep_id,)).fetchone()
        if row is None:
            raise NotFound(f"no sweep '{sweep_id}'")
        return self._row(row)

    def newest(self, limit: int) -> list[SweepRecord]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM sweeps ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))
            return [self._row(r) for r in rows]

    def unfinished(self) -> list[SweepRecord]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM sweeps WHERE status NOT IN ('succeeded','failed','stopped')")
            return [self._row(r) for r in rows]


def rest_field(field: str, keys: list[str]) -> str:
    """A SweepSpec error's field as the request body names it: ``samples``, ``search.optim.lr``, ``config.…``."""
    if field in OPTION_FIELDS:
        return OPTION_FIELDS[field]
    for key in keys:
        if field == key or field.startswith(f"{key}."):
            return f"search.{key}"
    return f"config.{field}"


def _stop_reason(run_dir: str | None) -> str | None:
    try:
        return json.loads((Path(run_dir or "") / "result.json").read_text()).get("stop_reason")
    except (OSError, ValueError, AttributeError):
        return None


def trial_status(entry: dict[str, Any], sweep_status: str) -> str:
    """A trial's status as the service shows it: sweep.json's, but a trial the sweep's end cut short is
    ``stopped`` (``failed`` if the sweep failed), and one that ended because the stop file asked it to is too."""
    status = entry.get("status", "pending")
    if status in ("pending", "running") and sweep_status in TERMINAL:
        return "failed" if sweep_status == "failed" else "stopped"
    if status == "succeeded" and _stop_reason(entry.get("run_dir")) == "interrupted":
        return "stopped"
    return status


def trial_extremes(spec: SweepSpec) -> list[tuple[str, Any, Config]]:
    """(key, value, trial config) for each listed value and both ends of each range of the space, one key at a
    time: what a job's checks (env allow-list, operator caps) and admission look at for the trials it can make."""
    out = []
    for dim in parse_search(spec.search, spec.base, scheduler=spec.scheduler):
        if dim.kind == "choice":
            values = list(dim.values)
        else:  # randint's hi is excluded
            values = [dim.values[0], dim.values[1] - 1 if dim.kind == "randint" else dim.values[1]]
        for value in values:
            out.append(
                (dim.key, value, parse_config(apply_overrides(spec.base, [f"{dim.key}={json.dumps(value)}"])))
            )
    return out


class SweepService:
    def __init__(self, settings: Any, jobs: JobService):
        self.settings = settings
        self.jobs = jobs
        self.storage = jobs.storage
        self.store = SweepStore(self.storage / "sweeps.db")
        jobs.trials = self  # the job service hands trial records here
        self._known: dict[str, str] = {}  # trial job id -> the status last recorded (saves a write per read)
        self._watcher = Watcher("rayac-sweep-watcher", self.watch_once, WATCH_INTERVAL_S)

    # -- ids
    @staticmethod
    def owns(job_id: str) -> bool:
        """Whether a job id is a sweep's trial."""
        return job_id.startswith(PREFIX) and len(job_id) > ID_LEN + 1

    @staticmethod
    def trial_job_id(sweep_id: str, trial_id: str) -> str:
        return f"{sweep_id}-{trial_id}"

    @staticmethod
    def ray_job_of(job_id: str) -> str:
        """The Ray job a trial runs in: its sweep's (the trial's output is in the sweep driver's log)."""
        return job_id[:ID_LEN]

    def sweep_dir(self, sweep_id: str) -> Path:
        return self.storage / "sweeps" / sweep_id

    def stop_path(self, sweep_id: str) -> Path:
        return self.storage / "sweeps" / f"{sweep_id}.stop"

    # -- submit
    def validate(self, cfg: Config, spec: SweepSpec) -> None:
        """As a job's config (env allow-list, operator caps), then the search space and options: ConfigError
        naming the body's field (``search.optim.lr``, ``samples``, ``config.run.stop.total_env_steps``)."""
        self.jobs.validate(cfg)
        keys = [item.split("=", 1)[0] for item in spec.search]
        for key, item in zip(keys, spec.search, strict=True):  # one at a time: each error names its key
            try:
                parse_search([item], spec.base, scheduler=spec.scheduler)
            except ConfigError as err:
                named = err.field == key or err.field.startswith(f"{key}.")
                raise ConfigError(f"search.{key}", err.message if named else str(err)) from None
        try:
            spec.validate()
        except ConfigError as err:
            raise ConfigError(rest_field(err.field, keys), err.message) from None
        for key, value, trial_cfg in trial_extremes(spec):  # a searched value gets no way around the caps
            try:
                self.jobs.validate(trial_cfg)
            except ConfigError as err:
                raise ConfigError(f"search.{key}", f"a trial with {key}={value}: {err}") from None

    def _per_trial_cpus(self, cfg: Config) -> float:
        per_worker = max(cfg.resources.worker_cpus, self.settings.min_worker_cpus)
        return trial_bundles(cfg)[0]["CPU"] + per_worker * cfg.resources.num_workers

    def _check_cluster(self, spec: SweepSpec, concurrent: int) -> None:
        """Admission: ``concurrent`` trials at once, each its placement group (trial_bundles) as large as the
        largest the space can make, must fit the cluster, as a job's workers must."""
        cfg = max(
            [parse_config(spec.base)] + [c for _, _, c in trial_extremes(spec)], key=self._per_trial_cpus
        )
        self.jobs._check_cluster(cfg)  # noqa: SLF001 (one trial's GPU and learner resources, as a job's)
        res = cfg.resources
        per_worker = max(res.worker_cpus, self.settings.min_worker_cpus)
        bundles = trial_bundles(cfg)
        per_trial = self._per_trial_cpus(cfg)
        if not self.settings.check_cluster_resources:
            return
        try:
            have = self.jobs.cluster.total_resources().get("CPU", 0.0)
        except Unavailable:
            raise
        except Exception as err:
            raise Unavailable(f"the Ray cluster's resources are unavailable: {err}") from err
        need = concurrent * per_trial
        if need > have + 1e-9:
            field = "concurrent" if per_trial <= have + 1e-9 else "config.resources.num_workers"
            raise ConfigError(field, f"the sweep needs {need:g} CPU ({concurrent} concurrent trial(s) × {per_trial:g}: "
                              f"a driver of {bundles[0]['CPU']:g} + num_workers {res.num_workers} × {per_worker:g}); "
                              f"the Ray cluster has {have:g} in all")  # fmt: skip

    def submit(self, cfg: Config, name: str | None, *, search: dict[str, str], **options: Any) -> SweepRecord:
        """``options``: SweepSpec's samples, concurrent, metric, mode, scheduler, pbt_interval, search_alg."""
        spec = SweepSpec(base=cfg.model_dump(mode="json"), search=[f"{k}={v}" for k, v in search.items()],
                         **options)  # fmt: skip
        self.validate(cfg, spec)
        self._check_cluster(spec, spec.concurrent)
        self.jobs._check_free_space()  # noqa: SLF001
        sweep_id = f"{PREFIX}{uuid.uuid4().hex[:12]}"
        sweep_dir = self.sweep_dir(sweep_id)
        now = time.time()
        rec = SweepRecord(sweep_id, name, "pending", asdict(spec), str(sweep_dir), now, now, None)
        try:
            sweep_dir.mkdir(parents=True)
            atomic_write_text(sweep_dir / "spec.json", json.dumps(asdict(spec), indent=1) + "\n")
            self.store.insert(rec)
            self._submit_to_ray(rec)
        except BaseException:  # refused (Ray unreachable, a full disk): nothing of this sweep is left behind
            self.store.delete(sweep_id)
            shutil.rmtree(sweep_dir, ignore_errors=True)
            raise
        return rec

    def _submit_to_ray(self, rec: SweepRecord) -> None:
        entrypoint = f"{self.jobs._train_command()} sweep --resume {shlex.quote(rec.sweep_dir)}"  # noqa: SLF001
        # the stop file reaches the driver and, through the job's runtime env, every trial's Runner
        env = {"RAYAC_ACTOR_STARTUP_TIMEOUT_S": f"{self.settings.placement_timeout_s:g}",
               STOP_FILE_ENV: str(self.stop_path(rec.id))}  # fmt: skip
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                self.jobs._ray("submit_job", entrypoint=entrypoint, submission_id=rec.id,  # noqa: SLF001
                               runtime_env={"env_vars": env}, metadata={"rayac_sweep": rec.id, "name": rec.name or ""})  # fmt: skip
                return
            except Unavailable:
                raise
            except Exception as err:
                if "No available agent" in str(err) and time.monotonic() < deadline:
                    time.sleep(1.0)  # a head that just started has no job agent yet
                    continue
                raise Unavailable(f"submission to Ray failed: {err}") from err

    # -- status
    def read_doc(self, rec: SweepRecord) -> dict[str, Any]:
        """sweep.json, or an empty table before the sweep's driver wrote it (written atomically: never torn)."""
        try:
            return json.loads((Path(rec.sweep_dir) / "sweep.json").read_text())
        except (OSError, ValueError):
            return {}

    def refresh(self, rec: SweepRecord) -> SweepRecord:
        """Ask Ray about an unfinished sweep; record what changed. A sweep that ended has its trials ended too."""
        if rec.status in TERMINAL:
            return rec
        try:
            info = self.jobs._ray("get_job_info", rec.id)  # noqa: SLF001
        except Unavailable:
            return rec  # the job watcher decides when an unreachable cluster counts as gone
        except Exception as err:
            if not _unknown_to_ray(err):
                log.warning("status of %s unavailable: %s", rec.id, err)
                return rec
            if rec.status == "pending" and time.time() - rec.created_at < AGENT_WAIT_S + 30:
                return rec  # its submission is still under way
            finished = self.read_doc(rec).get("state") == "finished"
            status, error = ("succeeded", None) if finished else ("failed", "the Ray cluster no longer knows this "
                             "sweep (it was replaced or restarted); `rayac sweep --resume "
                             f"{rec.sweep_dir}` continues its unfinished trials")  # fmt: skip
            return self._record(rec, status, error)
        status = RAY_STATUS.get(str(info.status).split(".")[-1], rec.status)
        error = None
        if status == "failed":
            error = (info.message or "the sweep failed") + self.jobs._log_tail(rec.id)  # noqa: SLF001
        elif status == "pending" and time.time() - rec.created_at > self.settings.placement_timeout_s:
            status, error = "failed", (f"not started within {self.settings.placement_timeout_s:g} s "
                                       f"(RAYAC_PLACEMENT_TIMEOUT_S): {info.message or 'Ray gave no reason'}")  # fmt: skip
            self._stop_quietly(rec.id)
        if status != rec.status:
            return self._record(rec, status, error)
        return rec

    def _record(self, rec: SweepRecord, status: str, error: str | None) -> SweepRecord:
        try:
            self.store.update(rec.id, status=status, error=error)
            rec = self.store.get(rec.id)
        except sqlite3.Error as err:  # a full disk: the answer still carries it, the watcher writes it later
            log.warning("could not record sweep %s as %s (%s)", rec.id, status, err)
            rec = SweepRecord(**{**asdict(rec), "status": status, "error": error or rec.error})
        if rec.status in TERMINAL:
            self.sync_trials(rec)
        return rec

    def get(self, sweep_id: str) -> SweepRecord:
        return self.refresh(self.store.get(sweep_id))

    def newest(self, limit: int) -> list[SweepRecord]:
        return [self.refresh(r) for r in self.store.newest(limit)]

    # -- trials as jobs
    def sync_trials(self, rec: SweepRecord, doc: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The trial table (TrialOut dicts); every trial has its job record, with the trial's status. A trial
        is registered once (its job id is the primary key), so however often this runs none is duplicated."""
        doc = self.read_doc(rec) if doc is None else doc
        trials = []
        for entry in doc.get("trials", []):
            status = trial_status(entry, rec.status)
            job_id = self.trial_job_id(rec.id, entry["id"])
            history = entry.get("config_history") or []
            trials.append({"id": entry["id"], "job_id": job_id, "config": entry.get("config") or {},
                           "history": history[1:], "status": status, "best": entry.get("best"),
                           "env_steps": int(entry.get("env_steps") or 0), "run_dir": entry.get("run_dir")})  # fmt: skip
            try:
                self._register(rec, entry, job_id, JOB_STATUS.get(status, status))
            except sqlite3.Error as err:  # the table is still shown; the watcher registers it later
                log.warning("could not register trial %s: %s", job_id, err)
        return trials

    def _register(self, rec: SweepRecord, entry: dict[str, Any], job_id: str, status: str) -> None:
        if self._known.get(job_id) == status:
            return
        store = self.jobs.store
        try:
            current = store.get(job_id)
        except NotFound:
            run_dir = entry.get("run_dir") or str(Path(rec.sweep_dir) / "trials" / entry["id"])
            try:
                config = trial_config(rec.spec["base"], entry.get("config") or {}, Path(run_dir))
                config_dump = config.model_dump(mode="json")
            except ConfigError:  # cannot happen for a validated space; the base config is still worth showing
                config_dump = rec.spec["base"]
            name = f"{rec.name or rec.id} · trial {entry['id']}"
            now = time.time()
            with contextlib.suppress(sqlite3.IntegrityError):  # another thread registered it just now
                store.insert(JobRecord(job_id, name[:200], status, config_dump, run_dir, now, now, None))
            current = store.get(job_id)
        if current.status != status:
            error = (
                (rec.error or "the trial failed; the sweep's log (GET /v1/jobs/{id}/logs) has its error")
                if status == "failed"
                else None
            )
            store.set_final(job_id, status=status, error=error)
        self._known[job_id] = status

    def refresh_trial(self, job: JobRecord) -> JobRecord:
        """The job service's refresh of a trial's record: the trial's status from sweep.json (no Ray call)."""
        try:
            rec = self.store.get(job.id[:ID_LEN])
        except NotFound:
            return job
        if job.status in TERMINAL and rec.status in TERMINAL:
            return job  # both ended: nothing changes any more
        self.sync_trials(rec)
        return self.jobs.store.get(job.id)

    def best_job_id(self, sweep_id: str) -> str:
        """The job id of the sweep's best trial so far (NotFound before any trial reported the metric)."""
        rec = self.get(sweep_id)
        doc = self.read_doc(rec)
        best = doc.get("best_trial")
        if not best:
            raise NotFound(f"sweep '{sweep_id}' has no best trial yet: no trial has reported "
                           f"{rec.spec.get('metric')}")  # fmt: skip
        self.sync_trials(rec, doc)
        return self.trial_job_id(rec.id, best)

    # -- stop
    def _mark_stopped(self, sweep_id: str) -> None:
        touch_stop_file(self.stop_path(sweep_id), sweep_id)

    def _stop_quietly(self, sweep_id: str) -> None:
        self.jobs._stop_quietly(sweep_id, self.stop_path(sweep_id))  # noqa: SLF001

    def request_stop(self, sweep_id: str) -> SweepRecord:
        """Ask the sweep's driver and every trial to stop (the stop file, then Ray's stop of the sweep's job,
        whose trial actors end with it); returns at once, the caller polls."""
        rec = self.get(sweep_id)
        if rec.status in TERMINAL:
            raise Conflict(f"sweep '{sweep_id}' already {rec.status}")
        self._mark_stopped(sweep_id)
        try:
            self.jobs._ray("stop_job", sweep_id)  # noqa: SLF001
        except Unavailable:
            raise
        except Exception as err:
            if not _unknown_to_ray(err):
                raise Unavailable(f"Ray could not stop the sweep: {err}") from err
            return self._record(rec, "stopped", None)  # never reached Ray: nothing runs
        return rec

    # -- the watcher: sweeps end, and their trials get job records, without any request
    def start_watching(self) -> None:
        self._watcher.start()

    def stop_watching(self) -> None:
        self._watcher.stop()

    def watch_once(self) -> None:
        for rec in self.store.unfinished():
            try:
                self.sync_trials(self.refresh(rec))
            except Exception:  # one sweep's trouble never keeps the others from being followed
                log.exception("watching %s", rec.id)
