"""Resume and delete a job through the service.

- **Resume** continues a finished job's run from its latest checkpoint as a new job (a new id, the same run
  directory): what `rayac train --resume RUN_DIR [--steps N] [--set k=v …]` does, with the same checks as a submit.
- **Delete** removes a finished job's record, its files and its run directory (unless another job, a resume of it,
  still uses that directory). A job that is pending or running is refused: stop it first.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from api.services.errors import Conflict
from api.services.jobs import JobService
from api.services.store import TERMINAL, JobRecord
from rayac.checkpoint import latest_checkpoint
from rayac.config import ConfigError, apply_overrides, parse_config


def resume_job(
    jobs: JobService, job_id: str, *, total_env_steps: int | None, overrides: list[str]
) -> JobRecord:
    rec = jobs.get(job_id)
    if rec.status not in TERMINAL:
        raise Conflict(f"job '{job_id}' is {rec.status}; only a finished job is resumed")
    run_dir = Path(rec.run_dir)
    if latest_checkpoint(run_dir) is None:
        raise Conflict(f"job '{job_id}' has no checkpoint to resume from")
    if any(jobs.store.run_dir_users(str(run_dir), unfinished_only=True)):
        raise Conflict(f"the run of job '{job_id}' is already being continued by another job")
    sets = list(overrides)
    if total_env_steps is not None:
        sets.append(f"run.stop.total_env_steps={total_env_steps}")
    try:
        data = apply_overrides(json.loads((run_dir / "config.json").read_text()), sets)
        cfg = parse_config(data)
    except ConfigError as err:  # the field is the list; the message names the key in it
        raise ConfigError("overrides", str(err)) from None
    # the run directory where it is now (a copied or moved run's config.json names its old place)
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_dir": str(run_dir)})})
    jobs.stop_path(job_id).unlink(missing_ok=True)
    new_id = f"job-{uuid.uuid4().hex[:12]}"
    name = f"{rec.name or job_id} (resumed)"
    return jobs._submit(cfg, name[:200], new_id, resume=sets)  # noqa: SLF001 (one service, two modules)


def delete_job(jobs: JobService, job_id: str) -> None:
    rec = jobs.get(job_id)
    if jobs.trials is not None and jobs.trials.owns(job_id):
        raise Conflict(f"job '{job_id}' is a trial of a sweep: it is kept with its sweep")
    if rec.status not in TERMINAL:
        raise Conflict(f"job '{job_id}' is {rec.status}; stop it before deleting it")
    jobs.store.delete(job_id)
    for path in (jobs.storage / "jobs" / f"{job_id}.json", jobs.stop_path(job_id)):
        path.unlink(missing_ok=True)
    run_dir = Path(rec.run_dir)
    inside = run_dir.resolve().is_relative_to((jobs.storage / "runs").resolve())
    if inside and not jobs.store.run_dir_users(str(run_dir)):  # a resume of this job may still use it
        trash = run_dir.with_name(f".deleted-{run_dir.name}-{uuid.uuid4().hex[:6]}")
        try:
            os.rename(run_dir, trash)  # gone at once for every reader; removed below
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)
