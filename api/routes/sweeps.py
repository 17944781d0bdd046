"""/v1/sweeps: submit a hyperparameter sweep, list and inspect them (the trial table), stop one, and the best
trial's policy at a stable address. Each trial is also a job (``job_id``): its metrics, stream and policy are
under /v1/jobs and /v1/policies."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from api.deps import Authorized, Policies
from api.routes.stopping import stop_and_wait
from api.schemas import (
    CONFLICT,
    INVALID,
    NOT_FOUND,
    TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    ActRequest,
    ActResponse,
    PolicyOut,
)
from api.services.sweeps import SweepRecord, SweepService
from api.sweep_schemas import SweepCreate, SweepList, SweepOut

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], dependencies=Authorized, responses=UNAUTHORIZED)


def get_sweeps(request: Request) -> SweepService:
    return request.app.state.sweeps


Sweeps = Annotated[SweepService, Depends(get_sweeps)]


def _out(sweeps: SweepService, rec: SweepRecord) -> SweepOut:
    doc = sweeps.read_doc(rec)
    trials = sweeps.sync_trials(rec, doc)
    best = doc.get("best_trial")
    best = best if any(t["id"] == best for t in trials) else None
    spec = rec.spec
    search = dict(item.split("=", 1) for item in spec["search"])
    return SweepOut(id=rec.id, name=rec.name, status=rec.status, error=rec.error, created_at=rec.created_at,
                    updated_at=rec.updated_at, metric=spec["metric"], mode=spec["mode"], scheduler=spec["scheduler"],
                    search_alg=spec["search_alg"], search=search, samples=spec["samples"],
                    concurrent=spec["concurrent"], best_trial=best,
                    best_job_id=sweeps.trial_job_id(rec.id, best) if best else None, trials=trials)  # fmt: skip


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SweepOut, summary="Submit a sweep",
             responses={**INVALID, **TOO_LARGE, **UNAVAILABLE})  # fmt: skip
def submit_sweep(body: SweepCreate, sweeps: Sweeps) -> SweepOut:
    """422 when the config, the search space or an option is invalid, or the sweep's `concurrent` trials could
    never run here at once (operator caps, the cluster's resources), naming the field (`search.optim.lr`,
    `concurrent`, `config.…`); 503 when the Ray cluster cannot be reached (nothing is registered then)."""
    rec = sweeps.submit(body.config, body.name, search=body.search, samples=body.samples,
                        concurrent=body.concurrent, metric=body.metric, mode=body.mode, scheduler=body.scheduler,
                        pbt_interval=body.pbt_interval, search_alg=body.search_alg)  # fmt: skip
    return _out(sweeps, rec)


@router.get("", response_model=SweepList, summary="List sweeps, newest first, with their trial tables",
            responses=INVALID)  # fmt: skip
def list_sweeps(
    sweeps: Sweeps, limit: Annotated[int, Query(ge=1, le=500, description="Most sweeps listed.")] = 100
) -> SweepList:
    return SweepList(sweeps=[_out(sweeps, r) for r in sweeps.newest(limit)])


@router.get("/{sweep_id}", response_model=SweepOut, summary="A sweep: status and the trial table",
            responses=NOT_FOUND)  # fmt: skip
def get_sweep(sweep_id: str, sweeps: Sweeps) -> SweepOut:
    return _out(sweeps, sweeps.get(sweep_id))


@router.post("/{sweep_id}/stop", response_model=SweepOut, summary="Stop a sweep and every trial of it",
             responses={**NOT_FOUND, **CONFLICT, **UNAVAILABLE})  # fmt: skip
async def stop_sweep(sweep_id: str, sweeps: Sweeps) -> SweepOut:
    """Asks Ray to stop the sweep's job (its trials end with it), then waits up to 10 s for it to end;
    409 when it has already ended."""
    rec = await stop_and_wait(sweeps.request_stop, sweeps.get, sweep_id)
    return await asyncio.to_thread(_out, sweeps, rec)


@router.get("/{sweep_id}/best", response_model=PolicyOut, summary="The best trial's policy",
            responses=NOT_FOUND)  # fmt: skip
def best_policy(sweep_id: str, sweeps: Sweeps, policies: Policies) -> PolicyOut:
    """The policy of the trial that is best so far by the sweep's metric (404 before any trial reported it,
    or before it has a checkpoint)."""
    return PolicyOut(**policies.describe(sweeps.best_job_id(sweep_id)))


@router.post("/{sweep_id}/best/act", response_model=ActResponse, summary="Act with the best trial's policy",
             responses={**NOT_FOUND, **INVALID, **TOO_LARGE})  # fmt: skip
async def best_act(sweep_id: str, body: ActRequest, sweeps: Sweeps, policies: Policies) -> Response:
    """As POST /v1/policies/{id}/act, on the best trial's policy so far: a stable address while the sweep runs."""
    job_id = await asyncio.to_thread(sweeps.best_job_id, sweep_id)
    result = await policies.act(job_id, body.observations, deterministic=body.deterministic,
                                values=body.return_values, probs=body.return_probs,
                                observations_b64=body.observations_b64, observations_dtype=body.observations_dtype)  # fmt: skip
    return Response(json.dumps(result.to_json(), separators=(",", ":"), allow_nan=False).encode(),
                    media_type="application/json")  # fmt: skip
