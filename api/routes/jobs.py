"""/v1/jobs: submit, list, inspect, stop, logs, metrics, and the live metrics stream (SSE)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from sse_starlette.sse import EventSourceResponse, SendTimeoutError

from api.deps import Authorized, Jobs
from api.routes.stopping import stop_and_wait
from api.schemas import (
    CONFLICT,
    INVALID,
    NOT_FOUND,
    TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    JobCreate,
    JobList,
    JobOut,
    JobResume,
    JobSummary,
    MetricsPage,
)
from api.services.jobs import JobService, latest_returns
from api.services.lifecycle import delete_job, resume_job
from api.services.store import JobRecord
from rayac.metrics import read_metrics

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=Authorized, responses=UNAUTHORIZED)
LOG_BYTES, MAX_LOG_BYTES = 64 * 1024, 1024 * 1024  # /logs: the default tail, and the most one answer holds


def _out(jobs: JobService, rec: JobRecord) -> JobOut:
    return JobOut(id=rec.id, name=rec.name, status=rec.status, created_at=rec.created_at, updated_at=rec.updated_at,
                  config=rec.config, latest_metrics=jobs.latest_metrics(rec), checkpoints=jobs.checkpoints(rec),
                  error=rec.error)  # fmt: skip


def _summary(rec: JobRecord) -> JobSummary:
    try:
        last, eval_return = latest_returns(Path(rec.run_dir))
    except (OSError, ValueError):  # an unreadable run dir: the job is still listed, without its returns
        last, eval_return = None, None
    last = last or {}
    return JobSummary(id=rec.id, name=rec.name, status=rec.status, created_at=rec.created_at,
                      updated_at=rec.updated_at, algo=rec.config.get("algo", {}).get("name", "?"),
                      env_id=rec.config.get("env", {}).get("id", "?"), env_steps=last.get("time/env_steps"),
                      episode_return=last.get("rollout/episode_return_mean"), eval_return=eval_return,
                      error=rec.error)  # fmt: skip


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut, summary="Submit a training job",
             responses={**INVALID, **TOO_LARGE, **UNAVAILABLE, **CONFLICT})  # fmt: skip
def submit_job(
    body: JobCreate,
    jobs: Jobs,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
               description="Any unique string (a UUID): a retry with the same key and body returns the same job "
               "(with Idempotent-Replayed: true) instead of starting another; kept 24 h."),
    ] = None,
) -> JobOut:  # fmt: skip
    """422 when the config is invalid or the job could never run here (operator caps, the cluster's resources),
    naming the field and the numbers; 503 when the Ray cluster cannot be reached (nothing is registered then);
    409 when the Idempotency-Key was used for another body."""
    rec = jobs.submit(body.config, body.name, idempotency_key=idempotency_key)
    if rec.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return _out(jobs, rec)


@router.post("/validate", response_model=JobCreate, summary="Check a job body without submitting it",
             responses={**INVALID, **TOO_LARGE})  # fmt: skip
def validate_job(body: JobCreate, jobs: Jobs) -> JobCreate:
    """The same checks as submitting (schema, env id allow-list, estimator vs action space, operator caps) but
    the cluster's resources; 200 echoes the config with every default filled in."""
    jobs.validate(body.config)
    return body


@router.get("", response_model=JobList, summary="List jobs, newest first, a page at a time",
            responses=INVALID)  # fmt: skip
def list_jobs(
    jobs: Jobs,
    limit: Annotated[int, Query(ge=1, le=200, description="Jobs per page.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page.")
    ] = None,
) -> JobList:
    recs, next_cursor = jobs.page(limit=limit, cursor=cursor)
    return JobList(jobs=[_summary(r) for r in recs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, summary="A job: status, config, latest metrics, checkpoints",
            responses=NOT_FOUND)  # fmt: skip
def get_job(job_id: str, jobs: Jobs) -> JobOut:
    return _out(jobs, jobs.get(job_id))


@router.post("/{job_id}/stop", response_model=JobOut, summary="Stop a running job",
             responses={**NOT_FOUND, **CONFLICT, **UNAVAILABLE})  # fmt: skip
async def stop_job(job_id: str, jobs: Jobs) -> JobOut:
    """Asks Ray to stop the job, then waits up to 10 s for it to end (on the event loop: no thread is held)."""
    rec = await stop_and_wait(jobs.request_stop, jobs.get, job_id)
    return await asyncio.to_thread(_out, jobs, rec)


@router.post("/{job_id}/resume", status_code=status.HTTP_201_CREATED, response_model=JobOut,
             summary="Continue a finished job from its last checkpoint, as a new job",
             responses={**NOT_FOUND, **CONFLICT, **INVALID, **UNAVAILABLE})  # fmt: skip
def resume(job_id: str, body: JobResume, jobs: Jobs) -> JobOut:
    """A new job on the same run directory: the run's own config with `overrides` (as `--set`) and
    `total_env_steps` on top, from the latest checkpoint (as `rayac train --resume`). 409 while the job runs."""
    return _out(
        jobs, resume_job(jobs, job_id, total_env_steps=body.total_env_steps, overrides=body.overrides)
    )


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a finished job and its files",
               responses={**NOT_FOUND, **CONFLICT})  # fmt: skip
def delete(job_id: str, jobs: Jobs) -> Response:
    """Its record, its files and its run directory (kept while a resumed job uses it); 409 while it runs."""
    delete_job(jobs, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{job_id}/logs", response_class=PlainTextResponse, summary="The tail of the job's driver log",
            responses={**NOT_FOUND, **UNAVAILABLE, **INVALID})  # fmt: skip
def job_logs(
    job_id: str,
    jobs: Jobs,
    tail_bytes: Annotated[int, Query(ge=1, le=MAX_LOG_BYTES, description="Most bytes returned.")] = LOG_BYTES,
    offset: Annotated[
        int | None, Query(ge=0, le=2**53, description="Start at this byte (X-Log-Size of an earlier answer).")
    ] = None,
) -> PlainTextResponse:
    """The last `tail_bytes` of the log (from a line start), or with `offset` the bytes from there: a follower
    passes the previous answer's `X-Log-Size` and gets only what is new. `X-Log-Start` is where the text begins."""
    text, start, size = jobs.logs(job_id, tail_bytes=tail_bytes, offset=offset)
    return PlainTextResponse(text, headers={"X-Log-Start": str(start), "X-Log-Size": str(size)})


@router.get("/{job_id}/metrics", response_model=MetricsPage, summary="Metric records so far",
            responses={**NOT_FOUND, **INVALID})  # fmt: skip
def job_metrics(job_id: str, jobs: Jobs, since: Annotated[int, Query(ge=0, le=10**9)] = 0) -> MetricsPage:
    records = read_metrics(jobs.metrics_path(job_id), since=since)
    return MetricsPage(since=since, next=since + len(records), records=records)


@router.get("/{job_id}/metrics/stream", summary="Live metrics (Server-Sent Events, resumable with Last-Event-ID)",
            response_class=EventSourceResponse, responses={**NOT_FOUND, **INVALID})  # fmt: skip
async def stream_metrics(
    job_id: str,
    jobs: Jobs,
    request: Request,
    last_event_id: Annotated[int | None, Header(ge=-1, le=10**9)] = None,
) -> EventSourceResponse:
    """One `metrics` event per record (id = record index), then one `status` event with the final status.
    `Last-Event-ID: N` resumes with record N + 1."""
    await asyncio.to_thread(jobs.metrics_path, job_id)  # 404 before the stream starts
    return BoundedEventSource(jobs.metric_events(job_id, last_event_id), ping=15,
                              send_timeout=request.app.state.settings.stream_send_timeout_s)  # fmt: skip


class BoundedEventSource(EventSourceResponse):
    """A stream whose client stops reading holds at most the socket's buffers and one chunk of records: a send
    that waits longer than ``send_timeout`` ends the stream (the client reconnects with Last-Event-ID)."""

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.warning("dropped a metrics stream whose client read nothing for %g s (%s)", self.send_timeout,
                        scope.get("path"))  # fmt: skip
