"""The FastAPI application. ``create_app`` builds it; nothing happens at import time.

uvicorn --factory api.app:create_app     (or: rayac serve)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.fast_act import FastAct
from api.routes import jobs, policies, system
from api.routes.dashboard import add_dashboard
from api.services.jobs import Conflict, JobService, NotFound, Unavailable
from api.services.policies import PolicyService
from api.services.prometheus import PrometheusMetrics
from api.services.ray_cluster import jobs_client
from api.settings import Settings, get_settings
from rayac.config import ConfigError

log = logging.getLogger(__name__)


class BodySizeLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._reject(send)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Any) -> None:
        body = b'{"detail":"request body too large (limit %d bytes)"}' % self.limit
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})  # fmt: skip


class _TooLarge(Exception):
    pass


class RequestMetrics:
    """Counts and times each request by its route template (pure ASGI: no per-request body copying)."""

    def __init__(self, app: Any, metrics: PrometheusMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status_code = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], route, status_code, time.perf_counter() - start)


def _field_errors(errors: list[dict]) -> list[dict[str, Any]]:
    """One {loc, field, msg} per problem: ``field`` is the dotted path a form can put the message next to."""
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "header", "path")]
        ctx = (e.get("ctx") or {}).get("error")
        msg = ctx.message if isinstance(ctx, ConfigError) else str(e.get("msg", "invalid"))
        if isinstance(ctx, ConfigError):
            loc = ["config", *ctx.field.split(".")]
        msg = msg.removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown field"
        out.append({"loc": list(e.get("loc", ())), "field": ".".join(loc) or "body", "msg": msg})
    return out


def _plain_handler(code: int):
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handler


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_secure()
    torch.set_num_threads(1)  # small forward passes: extra intra-op threads only contend with the event loop
    app = FastAPI(
        title="rayac", version="0.1.0", description="Actor-critic training jobs on Ray, and inference."
    )
    app.state.settings = settings
    app.state.jobs = JobService(settings, jobs_client)
    app.state.policies = PolicyService(settings, app.state.jobs)
    app.state.prometheus = PrometheusMetrics()

    app.add_middleware(FastAct, settings=settings, policies=app.state.policies)  # innermost: the act hot path
    app.add_middleware(RequestMetrics, metrics=app.state.prometheus)
    app.add_middleware(BodySizeLimit, limit=settings.max_request_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc.errors())
        return JSONResponse({"detail": "; ".join(f"{e['field']}: {e['msg']}" for e in errors), "errors": errors},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)  # fmt: skip

    @app.exception_handler(ConfigError)
    async def bad_config(_: Request, exc: ConfigError) -> JSONResponse:
        errors = [{"loc": exc.field.split("."), "field": exc.field, "msg": exc.message}]
        return JSONResponse(
            {"detail": str(exc), "errors": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
        )

    for exc_type, code in ((NotFound, status.HTTP_404_NOT_FOUND), (Conflict, status.HTTP_409_CONFLICT),
                           (Unavailable, status.HTTP_503_SERVICE_UNAVAILABLE)):  # fmt: skip
        app.add_exception_handler(exc_type, _plain_handler(code))

    app.include_router(system.router)
    app.include_router(jobs.router)
    app.include_router(policies.router)
    add_dashboard(app)  # GET / and /static: the web page; its schema, presets and episode GIF routes
    return app
