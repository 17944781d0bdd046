"""/healthz (no auth) and /metrics (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from api.deps import require_token

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="Liveness: the service answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", summary="Prometheus metrics: requests, latencies, jobs by state",
            dependencies=[Depends(require_token)], response_class=Response)  # fmt: skip
def metrics(request: Request) -> Response:
    body, content_type = request.app.state.prometheus.render(request.app.state.jobs)
    return Response(content=body, media_type=content_type)
