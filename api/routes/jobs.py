"""/v1/jobs: submit, list, inspect, stop, logs, metrics, and the live metrics stream (SSE)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, status
from fastapi.responses import PlainTextResponse
from sse_starlette.sse import EventSourceResponse

from api.deps import Authorized, Jobs
from api.schemas import JobCreate, JobList, JobOut, JobSummary, MetricsPage
from api.services.jobs import TERMINAL, JobRecord, JobService, iter_new_lines, latest_returns, skip_lines
from rayac.metrics import last_record, read_metrics

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=Authorized)
STREAM_POLL_S = 0.25


def _out(jobs: JobService, rec: JobRecord) -> JobOut:
    return JobOut(id=rec.id, name=rec.name, status=rec.status, created_at=rec.created_at, updated_at=rec.updated_at,
                  config=rec.config, latest_metrics=last_record(Path(rec.run_dir) / "metrics.jsonl"),
                  checkpoints=jobs.checkpoints(rec), error=rec.error)  # fmt: skip


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut, summary="Submit a training job")
def submit_job(body: JobCreate, jobs: Jobs) -> JobOut:
    return _out(jobs, jobs.submit(body.config, body.name))


@router.post("/validate", response_model=JobCreate, summary="Check a job body without submitting it")
def validate_job(body: JobCreate, jobs: Jobs) -> JobCreate:
    """The same checks as submitting (schema, env id allow-list, estimator vs action space); 200 echoes the
    config with every default filled in."""
    jobs.validate(body.config)
    return body


def _summary(rec: JobRecord) -> JobSummary:
    last, eval_return = latest_returns(Path(rec.run_dir))
    last = last or {}
    return JobSummary(id=rec.id, name=rec.name, status=rec.status, created_at=rec.created_at,
                      updated_at=rec.updated_at, algo=rec.config["algo"]["name"], env_id=rec.config["env"]["id"],
                      env_steps=last.get("time/env_steps"), episode_return=last.get("rollout/episode_return_mean"),
                      eval_return=eval_return, error=rec.error)  # fmt: skip


@router.get("", response_model=JobList, summary="List jobs, newest first, a page at a time")
def list_jobs(
    jobs: Jobs,
    limit: Annotated[int, Query(ge=1, le=200, description="Jobs per page.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="next_cursor of the previous page.")
    ] = None,
) -> JobList:
    try:
        recs, next_cursor = jobs.page(limit, cursor)
    except ValueError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(err)) from None
    return JobList(jobs=[_summary(r) for r in recs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, summary="A job: status, config, latest metrics, checkpoints")
def get_job(job_id: str, jobs: Jobs) -> JobOut:
    return _out(jobs, jobs.get(job_id))


@router.post("/{job_id}/stop", response_model=JobOut, summary="Stop a running job")
def stop_job(job_id: str, jobs: Jobs) -> JobOut:
    return _out(jobs, jobs.stop(job_id))


@router.get("/{job_id}/logs", response_class=PlainTextResponse, summary="The job's driver log")
def job_logs(job_id: str, jobs: Jobs) -> str:
    return jobs.logs(job_id)


@router.get("/{job_id}/metrics", response_model=MetricsPage, summary="Metric records so far")
def job_metrics(job_id: str, jobs: Jobs, since: Annotated[int, Query(ge=0, le=10**9)] = 0) -> MetricsPage:
    records = read_metrics(jobs.metrics_path(job_id), since=since)
    return MetricsPage(since=since, next=since + len(records), records=records)


@router.get("/{job_id}/metrics/stream", summary="Live metrics (Server-Sent Events, resumable with Last-Event-ID)",
            response_class=EventSourceResponse)  # fmt: skip
async def stream_metrics(
    job_id: str, jobs: Jobs, last_event_id: Annotated[int | None, Header(ge=-1, le=10**9)] = None
) -> EventSourceResponse:
    """One `metrics` event per record (id = record index), then one `status` event with the final status."""
    path = await asyncio.to_thread(jobs.metrics_path, job_id)  # 404 before the stream starts

    async def events():
        offset, next_id = await asyncio.to_thread(skip_lines, path, (last_event_id or -1) + 1)
        while True:
            lines, offset = await asyncio.to_thread(iter_new_lines, path, offset)
            for line in lines:
                yield {"id": str(next_id), "event": "metrics", "data": line}
                next_id += 1
            if lines:
                continue
            rec = await asyncio.to_thread(jobs.get, job_id)
            if rec.status in TERMINAL:
                lines, offset = await asyncio.to_thread(iter_new_lines, path, offset)
                for line in lines:
                    yield {"id": str(next_id), "event": "metrics", "data": line}
                    next_id += 1
                yield {"event": "status", "data": json.dumps({"status": rec.status, "error": rec.error})}
                return
            await asyncio.sleep(STREAM_POLL_S)

    return EventSourceResponse(events(), ping=15)
