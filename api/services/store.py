"""The job registry: one SQLite file in the storage dir. One short connection per call; a lock orders writers."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.services.errors import NotFound

TERMINAL = frozenset({"succeeded", "failed", "stopped"})


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
    replayed: bool = False  # returned again for a retried Idempotency-Key (not stored)


class JobStore:
    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        with self._db() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL, config TEXT NOT NULL, run_dir TEXT NOT NULL,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, error TEXT)""")
            db.execute("""CREATE TABLE IF NOT EXISTS idempotency_keys (
                key TEXT PRIMARY KEY, job_id TEXT NOT NULL, digest TEXT NOT NULL, created_at REAL NOT NULL)""")

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

    def delete(self, job_id: str) -> None:
        with self.lock, self._db() as db:
            db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
            db.execute("DELETE FROM idempotency_keys WHERE job_id=?", (job_id,))

    def update(
        self, job_id: str, *, status: str, error: str | None = None, only_unfinished: bool = False
    ) -> bool:
        """Set a job's status; ``only_unfinished``: leave a job that already ended as it is. True if it changed."""
        guard = " AND status NOT IN ('succeeded','failed','stopped')" if only_unfinished else ""
        with self.lock, self._db() as db:
            cur = db.execute(f"UPDATE jobs SET status=?, error=COALESCE(?, error), updated_at=? WHERE id=?{guard}",
                             (status, error, time.time(), job_id))  # fmt: skip
            return cur.rowcount > 0

    def run_dir_users(self, run_dir: str, *, unfinished_only: bool = False) -> list[str]:
        """Ids of the jobs whose run directory is ``run_dir`` (a job and the jobs that resumed it)."""
        guard = " AND status NOT IN ('succeeded','failed','stopped')" if unfinished_only else ""
        with self._db() as db:
            return [r[0] for r in db.execute(f"SELECT id FROM jobs WHERE run_dir=?{guard}", (run_dir,))]

    def claim_key(self, key: str, job_id: str, digest: str, *, ttl_s: float) -> tuple[str, str]:
        """(job id, digest) the Idempotency-Key ``key`` stands for: ``job_id`` if this call claimed it (one
        statement, so two retries racing each other, even from two processes, get one job), else the earlier one.
        Keys older than ``ttl_s`` are forgotten."""
        now = time.time()
        with self.lock, self._db() as db:
            db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (now - ttl_s,))
            db.execute("INSERT OR IGNORE INTO idempotency_keys VALUES (?,?,?,?)", (key, job_id, digest, now))
            return db.execute("SELECT job_id, digest FROM idempotency_keys WHERE key=?", (key,)).fetchone()

    def release_key(self, key: str, job_id: str) -> None:
        """Forget ``key`` if it still stands for ``job_id`` (its submission was refused: a retry may try again)."""
        with self.lock, self._db() as db:
            db.execute("DELETE FROM idempotency_keys WHERE key=? AND job_id=?", (key, job_id))

    def set_final(self, job_id: str, *, status: str, error: str | None) -> None:
        """Set a finished job's status and error exactly (a run continued outside the service ended again)."""
        with self.lock, self._db() as db:
            db.execute(
                "UPDATE jobs SET status=?, error=?, updated_at=? WHERE id=?",
                (status, error, time.time(), job_id),
            )

    def get(self, job_id: str) -> JobRecord:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job '{job_id}'")
        return self._row(row)

    def all(self) -> list[JobRecord]:
        with self._db() as db:
            return [self._row(r) for r in db.execute("SELECT * FROM jobs ORDER BY created_at")]

    def unfinished(self) -> list[JobRecord]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM jobs WHERE status NOT IN ('succeeded','failed','stopped')")
            return [self._row(r) for r in rows]

    def page(self, *, limit: int, cursor: str | None) -> tuple[list[JobRecord], str | None]:
        """Newest first; ``cursor`` (opaque) continues after the last job of the previous page."""
        after = decode_cursor(cursor) if cursor else None
        where, args = ("WHERE (created_at, id) < (?, ?)", after) if after else ("", ())
        with self._db() as db:
            rows = db.execute(f"SELECT * FROM jobs {where} ORDER BY created_at DESC, id DESC LIMIT ?",
                              (*args, limit + 1)).fetchall()  # fmt: skip
        recs = [self._row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return recs, encode_cursor(recs[-1].created_at, recs[-1].id) if more and recs else None

    def count_by_status(self) -> dict[str, int]:
        with self._db() as db:
            return dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())


def encode_cursor(created_at: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, job_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Raises ValueError for a cursor this service did not make."""
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except Exception:
        created_at = job_id = None
    if type(created_at) not in (int, float) or not isinstance(job_id, str):
        raise ValueError("not a cursor from a previous page")
    return float(created_at), job_id
