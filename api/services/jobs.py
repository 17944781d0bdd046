"""Training jobs: a SQLite registry in the storage dir, each job a Ray job running ``rayac train``.

Services never import FastAPI: they raise the errors below and the routes turn them into HTTP codes.
"""

from __future__ import annotations

import base64
import json
import logging
import shlex
import sqlite3
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayac.checkpoint import atomic_write_text, checkpoint_dirs
from rayac.config import Config, ConfigError
from rayac.envs import check_config_against_env

log = logging.getLogger(__name__)

TERMINAL = {"succeeded", "failed", "stopped"}
AGENT_WAIT_S = 60.0  # how long a submission waits for a freshly started head's job agent
RAY_STATUS = {"PENDING": "pending", "RUNNING": "running", "SUCCEEDED": "succeeded", "FAILED": "failed",
              "STOPPED": "stopped"}  # fmt: skip


class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    pass


class Unavailable(RuntimeError):
    """The Ray cluster cannot be reached (HTTP 503)."""


@dataclass
class JobRecord:
    id: str
    name: str | None
    status: str
    config: dict[str, Any]
    run_dir: str
    created_at: float
    updated_at: float
    error: str | None


class JobStore:
    """The registry. One short connection per call; a lock keeps writers in order."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        with self._db() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL, config TEXT NOT NULL, run_dir TEXT NOT NULL,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, error TEXT)""")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @staticmethod
    def _row(row: tuple) -> JobRecord:
        return JobRecord(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7])

    def insert(self, rec: JobRecord) -> None:
        with self.lock, self._db() as db:
            db.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?)", (rec.id, rec.name, rec.status,
                       json.dumps(rec.config), rec.run_dir, rec.created_at, rec.updated_at, rec.error))  # fmt: skip

    def update(self, job_id: str, *, status: str, error: str | None = None) -> None:
        with self.lock, self._db() as db:
            db.execute("UPDATE jobs SET status=?, error=COALESCE(?, error), updated_at=? WHERE id=?",
                       (status, error, time.time(), job_id))  # fmt: skip

    def get(self, job_id: str) -> JobRecord:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job '{job_id}'")
        return self._row(row)

    def all(self) -> list[JobRecord]:
        with self._db() as db:
            return [self._row(r) for r in db.execute("SELECT * FROM jobs ORDER BY created_at")]

    def page(self, limit: int, after: tuple[float, str] | None) -> list[JobRecord]:
        """Up to ``limit`` jobs, newest first, strictly older than ``after`` = (created_at, id)."""
        query, args = "SELECT * FROM jobs", []
        if after is not None:
            query += " WHERE created_at < ? OR (created_at = ? AND id < ?)"
            args = [after[0], after[0], after[1]]
        with self._db() as db:
            rows = db.execute(f"{query} ORDER BY created_at DESC, id DESC LIMIT ?", [*args, limit]).fetchall()
        return [self._row(r) for r in rows]


class JobService:
    def __init__(self, settings: Any, client_factory: Any):
        self.settings = settings
        self.storage = Path(settings.storage_dir).resolve()
        self.storage.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.storage / "jobs.db")
        self._client_factory = client_factory
        self._client = None

    # -- Ray
    def client(self):
        if self._client is None:
            try:
                self._client = self._client_factory(self.settings)
            except Exception as err:
                raise Unavailable(f"Ray cluster unavailable: {err}") from err
        return self._client

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

    def validate(self, cfg: Config) -> None:
        self.check_env_allowed(cfg)
        try:
            check_config_against_env(cfg)
        except ConfigError as err:
            raise ConfigError(f"config.{err.field}", err.message) from None

    def submit(self, cfg: Config, name: str | None) -> JobRecord:
        self.validate(cfg)
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        run_dir = self.storage / "runs" / job_id
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_dir": str(run_dir),
                                                                        "progress_bar": False})})  # fmt: skip
        config_path = self.storage / "jobs" / f"{job_id}.json"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, cfg.model_dump_json(indent=2))
        now = time.time()
        rec = JobRecord(job_id, name, "pending", cfg.model_dump(mode="json"), str(run_dir), now, now, None)
        client = self.client()
        self.store.insert(rec)
        entrypoint = (f"{self._train_command()} train --preset {shlex.quote(str(config_path))} "
                      f"--run-dir {shlex.quote(str(run_dir))} --no-progress")  # fmt: skip
        # an A2C job's driver hosts its learner: pin the driver where the learner should run
        pin = dict(cfg.resources.learner_resources) if cfg.algo.name == "a2c" else {}
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                client.submit_job(entrypoint=entrypoint, submission_id=job_id, entrypoint_resources=pin or None,
                                  metadata={"rayac_job": job_id, "name": name or ""})  # fmt: skip
                break
            except Exception as err:
                # A head that just started has no job agent yet; Ray says to try again later.
                if "No available agent" in str(err) and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                self.store.update(job_id, status="failed", error=f"submission to Ray failed: {err}")
                raise Unavailable(f"submission to Ray failed: {err}") from err
        return rec

    # -- status
    def refresh(self, rec: JobRecord) -> JobRecord:
        """Ask Ray for a job that is not finished yet; record what changed."""
        if rec.status in TERMINAL:
            return rec
        try:
            info = self.client().get_job_info(rec.id)
        except Unavailable:
            return rec
        except Exception as err:  # Ray no longer knows it (its cluster was replaced)
            if "does not exist" in str(err) or "404" in str(err):
                self.store.update(rec.id, status="failed", error="the Ray cluster no longer knows this job")
                return self.store.get(rec.id)
            log.warning("status of %s unavailable: %s", rec.id, err)
            return rec
        status = RAY_STATUS.get(str(info.status).split(".")[-1], rec.status)
        if status != rec.status:
            error = None
            if status == "failed":
                error = (info.message or "the job failed") + self._log_tail(rec.id)
            self.store.update(rec.id, status=status, error=error)
            rec = self.store.get(rec.id)
        return rec

    def _log_tail(self, job_id: str, lines: int = 20) -> str:
        try:
            tail = self.client().get_job_logs(job_id).strip().splitlines()[-lines:]
        except Exception:  # logs are a courtesy here
            return ""
        return "\n" + "\n".join(tail) if tail else ""

    def get(self, job_id: str) -> JobRecord:
        return self.refresh(self.store.get(job_id))

    def list(self) -> list[JobRecord]:
        return [self.refresh(r) for r in self.store.all()]

    def page(self, limit: int, cursor: str | None = None) -> tuple[list[JobRecord], str | None]:
        """A page of jobs, newest first, and the cursor of the next page (None: this was the last).

        The cursor is opaque to clients: the (created_at, id) of the page's last job, so pages stay
        stable while new jobs arrive. Raises ValueError for a cursor this service did not hand out."""
        after = decode_cursor(cursor) if cursor else None
        recs = self.store.page(limit + 1, after)
        more = len(recs) > limit
        recs = [self.refresh(r) for r in recs[:limit]]
        return recs, encode_cursor(recs[-1]) if more else None

    def stop(self, job_id: str) -> JobRecord:
        rec = self.get(job_id)
        if rec.status in TERMINAL:
            raise Conflict(f"job '{job_id}' already {rec.status}")
        self.client().stop_job(job_id)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rec = self.get(job_id)
            if rec.status in TERMINAL:
                break
            time.sleep(0.2)
        return rec

    def logs(self, job_id: str) -> str:
        self.store.get(job_id)
        try:
            return self.client().get_job_logs(job_id)
        except Unavailable:
            raise
        except Exception as err:
            raise Unavailable(f"logs unavailable: {err}") from err

    # -- results
    def metrics_path(self, job_id: str) -> Path:
        return Path(self.store.get(job_id).run_dir) / "metrics.jsonl"

    def checkpoints(self, rec: JobRecord) -> list[dict[str, Any]]:
        out = []
        for path in checkpoint_dirs(Path(rec.run_dir)):
            state = json.loads((path / "state.json").read_text())
            out.append({"name": path.name, "env_steps": state["env_steps"], "version": state["version"],
                        "eval_return": state.get("eval_return")})  # fmt: skip
        return out


def encode_cursor(rec: JobRecord) -> str:
    raw = json.dumps([rec.created_at, rec.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if (
            isinstance(created_at, bool)
            or not isinstance(created_at, int | float)
            or not isinstance(job_id, str)
        ):
            raise TypeError
    except (ValueError, TypeError):
        raise ValueError("cursor: not a cursor this service handed out (use next_cursor as given)") from None
    return float(created_at), job_id


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
        record = json.loads(line)
        last = last or record
        if "eval/return_mean" in record:
            eval_return = float(record["eval/return_mean"])
            break
    if eval_return is None:
        ckpts = checkpoint_dirs(Path(run_dir))
        if ckpts:
            eval_return = json.loads((ckpts[-1] / "state.json").read_text()).get("eval_return")
    return last, eval_return


def iter_new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines after byte ``offset`` (a partly written last line waits for the next call)."""
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    return data[: end + 1].decode().splitlines(), offset + end + 1


def skip_lines(path: Path, count: int) -> tuple[int, int]:
    """(byte offset, lines skipped) after the first ``count`` complete lines: resuming after Last-Event-ID."""
    offset = skipped = 0
    if count <= 0 or not path.exists():
        return offset, skipped
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n") or skipped == count:
                break
            offset += len(line)
            skipped += 1
    return offset, skipped
