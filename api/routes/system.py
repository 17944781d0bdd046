"""/healthz (no auth), /metrics (Prometheus text format), and the API docs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from api.deps import require_token
from api.schemas import UNAUTHORIZED

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="Liveness: the service answers")
async def healthz() -> dict[str, str]:
    """Async on purpose: it needs no worker thread, so it answers even when every thread is busy."""
    return {"status": "ok"}


@router.get("/metrics", summary="Prometheus metrics: requests, latencies, jobs by state",
            dependencies=[Depends(require_token)], response_class=Response, responses=UNAUTHORIZED)  # fmt: skip
def metrics(request: Request) -> Response:
    body, content_type = request.app.state.prometheus.render(request.app.state.jobs)
    return Response(content=body, media_type=content_type)


def docs_guard(request: Request) -> None:
    """The docs describe every route: they need the token too, unless RAYAC_PUBLIC_DOCS opens them."""
    if not request.app.state.settings.public_docs:
        require_token(request)


docs = APIRouter(include_in_schema=False, dependencies=[Depends(docs_guard)])


@docs.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs.get("/docs")
def swagger(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} — docs")


@docs.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} — docs")
