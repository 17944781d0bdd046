"""The hot path: ``POST /v1/policies/{id}/act`` (and ``/v1/deployments/{name}/act``) answered at the ASGI level.

FastAPI's per-request machinery (routing, dependencies, response models) costs several times the forward
pass of a small policy. This middleware serves the act route directly, but never skips what defines the
route: the body is validated by the same pydantic model (``ActRequest``), the token by the same check
(``api.auth``), and errors get the same bodies (``api.errors``). The FastAPI route of the same path stays
registered, so it is what /docs and the OpenAPI schema describe.
"""

from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError

from api.auth import UNAUTHORIZED_HEADERS, bearer_problem
from api.errors import config_error_body, unexpected_error, validation_body
from api.schemas import ActRequest
from api.services.errors import NotFound, Unavailable
from rayac.config import ConfigError

log = logging.getLogger(__name__)
ACT_PATH = re.compile(r"^/v1/policies/([^/]+)/act$")
ROUTE = SimpleNamespace(path="/v1/policies/{policy_id}/act")  # the label request metrics use
DEPLOYMENT_ACT_PATH = re.compile(r"^/v1/deployments/([^/]+)/act$")
DEPLOYMENT_ROUTE = SimpleNamespace(path="/v1/deployments/{name}/act")


class FastAct:
    def __init__(self, app: Any, *, settings: Any, policies: Any, deployments: Any = None):
        self.app = app
        self.settings = settings
        self.policies = policies
        # POST /v1/deployments/{name}/act: the same request and answer, on the deployed checkpoint
        self.deployments = deployments

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        match, target, route = ACT_PATH.match(path), self.policies, ROUTE
        if match is None and self.deployments is not None:
            match, target, route = DEPLOYMENT_ACT_PATH.match(path), self.deployments, DEPLOYMENT_ROUTE
        if match is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        scope["route"] = route
        problem = bearer_problem(scope.get("headers") or [], self.settings.api_token)
        if problem:
            return await _respond(send, 401, {"detail": problem}, UNAUTHORIZED_HEADERS)
        content_type = next((v for k, v in scope.get("headers") or [] if k == b"content-type"), b"")
        # as FastAPI's strict check on every other body: a browser's CORS-free "simple" request never gets in
        if not _is_json(content_type):
            msg = f"send JSON with Content-Type: application/json (got '{content_type.decode('latin-1')}')"
            return await _respond(
                send, 422, {"detail": f"body: {msg}", "errors": [{"field": "body", "msg": msg}]}
            )
        try:
            body = ActRequest.model_validate_json(await _read_body(receive))
        except ValidationError as err:
            return await _respond(send, 422, validation_body(err.errors(include_url=False)))
        try:
            result = await target.act(match.group(1), body.observations, deterministic=body.deterministic,
                                      values=body.return_values, probs=body.return_probs,
                                      observations_b64=body.observations_b64,
                                      observations_dtype=body.observations_dtype)  # fmt: skip
        except ConfigError as err:
            return await _respond(send, 422, config_error_body(err))
        except NotFound as err:
            return await _respond(send, 404, {"detail": str(err)})
        except Unavailable as err:  # a checkpoint mid-rotation, or Ray Serve replicas that did not answer
            return await _respond(send, 503, {"detail": str(err)}, [(b"retry-after", b"1")])
        except Exception as err:  # JSON like every other error; the service log has the traceback
            code, payload = unexpected_error(err)
            log.error("act on %s failed", match.group(1), exc_info=err)
            return await _respond(send, code, payload)
        await _respond(send, 200, result.to_json())


def _is_json(content_type: bytes) -> bool:
    """application/json or application/*+json, parameters (charset) aside: what FastAPI takes as JSON."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Any, status: int, payload: dict, headers: list | None = None) -> None:
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})
