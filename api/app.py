"""The FastAPI application. ``create_app`` builds it; nothing happens at import time.

uvicorn --factory api.app:create_app     (or: rayac serve)
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from typing import Any

import torch
from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from api.errors import config_error_body, unexpected_error, validation_body
from api.fast_act import FastAct
from api.hosts import LoopbackHostOnly
from api.routes import deployments, jobs, policies, sweeps, system
from api.routes.dashboard import add_dashboard
from api.services.deployments import DeploymentService
from api.services.errors import Conflict, InsufficientStorage, NotFound, Unavailable
from api.services.jobs import JobService
from api.services.policies import PolicyService
from api.services.prometheus import PrometheusMetrics
from api.services.ray_cluster import RayCluster
from api.services.sweeps import SweepService
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


class AllowHeader:
    """A 405 lists every method of its path in ``Allow`` (Starlette lists only those of the first route that
    matched the path, e.g. GET alone for /v1/jobs, which also takes POST). Each method is tried against the
    router's own matching, so this holds however FastAPI wraps included routers."""

    METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def __init__(self, app: Any, routes: list, openapi: Any = None):
        self.app = app
        self.routes = routes
        self.openapi = openapi  # the service's schema (a callable, cached by FastAPI)

    def allowed(self, scope: dict) -> list[str]:
        # a documented literal path is its own resource: /v1/jobs/validate lists POST, as its schema says, not
        # also the methods of /v1/jobs/{job_id} that its path happens to match
        documented = (self.openapi() if self.openapi else {}).get("paths", {}).get(scope["path"])
        if documented:
            return sorted(m.upper() for m in documented if m.upper() in self.METHODS)
        methods = set()
        for route in self.routes:
            if isinstance(route, Mount):  # the static files: GET and HEAD only
                if route.matches({**scope, "method": "GET"})[0] == Match.FULL:
                    methods |= {"GET", "HEAD"}
                continue
            methods |= {m for m in self.METHODS if route.matches({**scope, "method": m})[0] == Match.FULL}
        return sorted(methods)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        # routing rewrites the scope in place (a mount's root_path): match against the request as it came
        request = {"type": "http", "path": scope["path"], "root_path": scope.get("root_path", "")}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = self.allowed(request)
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", ", ".join(methods).encode())]}
            await send(message)

        await self.app(scope, receive, send_wrapper)


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


def _openapi_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error response described as what it is: JSON. (FastAPI gives a route's
    errors the media type of its success response: text/plain for logs, text/event-stream for the stream.)"""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for operations in schema["paths"].values():
            for operation in operations.values():
                for code, response in operation.get("responses", {}).items():
                    content = response.get("content")
                    if code[0] in "45" and content and "application/json" not in content:
                        response["content"] = {"application/json": next(iter(content.values()))}
        app.openapi_schema = schema
    return app.openapi_schema


def _plain_handler(code: int):
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handler


def create_app(settings: Settings | None = None, *, cluster: Any = None) -> FastAPI:
    """``cluster``: where jobs run (default: the RAY_ADDRESS cluster, or a head of the service's own)."""
    settings = settings or get_settings()
    settings.check_secure()
    torch.set_num_threads(1)  # small forward passes: extra intra-op threads only contend with the event loop

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.jobs.start_watching()  # unfinished jobs from before a restart are followed up at once
        app.state.sweeps.start_watching()  # and unfinished sweeps
        yield
        app.state.sweeps.stop_watching()
        app.state.jobs.stop_watching()

    app = FastAPI(title="rayac", version="0.1.0", description="Actor-critic training jobs on Ray, and inference.",
                  docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan,
                  strict_content_type=True)  # docs: system.docs; JSON bodies need a JSON Content-Type  # fmt: skip
    app.state.settings = settings
    app.state.jobs = JobService(settings, cluster or RayCluster(settings))
    app.state.policies = PolicyService(settings, app.state.jobs)
    app.state.sweeps = SweepService(settings, app.state.jobs)
    app.state.deployments = DeploymentService(settings, app.state.jobs, app.state.policies)
    app.state.prometheus = PrometheusMetrics()

    app.add_middleware(FastAct, settings=settings, policies=app.state.policies,
                       deployments=app.state.deployments)  # innermost: the act hot path  # fmt: skip
    app.add_middleware(AllowHeader, routes=app.router.routes, openapi=app.openapi)
    app.add_middleware(RequestMetrics, metrics=app.state.prometheus)
    app.add_middleware(BodySizeLimit, limit=settings.max_request_bytes)
    # outermost: with no token, no Host but a loopback name (DNS rebinding)
    app.add_middleware(LoopbackHostOnly, settings=settings)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc.errors()), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(ConfigError)
    async def bad_config(_: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse(config_error_body(exc), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if (
            exc.status_code == 400
        ):  # FastAPI could not parse the body (not UTF-8 JSON, say): a bad field like any other
            msg = f"could not be parsed ({exc.detail})"
            return JSONResponse({"detail": f"body: {msg}", "errors": [{"field": "body", "msg": msg}]},
                                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)  # fmt: skip
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)  # also what FastAct and every middleware raises: JSON, never text
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        code, body = unexpected_error(exc)
        if code == 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(body, status_code=code, headers={"Retry-After": "10"} if code != 500 else None)

    # raised by a route: a full disk is 507, anything else 500, as JSON
    for exc_type in (OSError, sqlite3.Error):
        app.add_exception_handler(exc_type, unexpected)

    for exc_type, code in ((NotFound, status.HTTP_404_NOT_FOUND), (Conflict, status.HTTP_409_CONFLICT),
                           (Unavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
                           (InsufficientStorage, status.HTTP_507_INSUFFICIENT_STORAGE)):  # fmt: skip
        app.add_exception_handler(exc_type, _plain_handler(code))

    app.openapi = lambda: _openapi_schema(app)
    app.include_router(system.router)
    app.include_router(system.docs)
    app.include_router(jobs.router)
    app.include_router(policies.router)
    app.include_router(deployments.router)
    app.include_router(sweeps.router)
    add_dashboard(app)  # GET / and /static: the web page; its schema, presets and episode GIF routes
    return app
