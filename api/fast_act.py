"""The hot path: ``POST /v1/policies/{id}/act`` answered at the ASGI level.

FastAPI's per-request machinery (routing, dependencies, pydantic body models, response models) costs
several times the forward pass of a small policy. This middleware serves the act route directly: same
bearer-token check, same body fields and checks, same error messages and status codes. The FastAPI route
of the same path stays registered, so it is what /docs and the OpenAPI schema describe.
"""

from __future__ import annotations

import json
import re
import secrets
from types import SimpleNamespace
from typing import Any

from api.services.jobs import NotFound

ACT_PATH = re.compile(r"^/v1/policies/([^/]+)/act$")
ROUTE = SimpleNamespace(path="/v1/policies/{policy_id}/act")  # the label request metrics use
FLAGS = ("deterministic", "return_values", "return_probs")
DEFAULTS = {"deterministic": True, "return_values": False, "return_probs": False}


class _Reject(Exception):
    def __init__(self, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None):
        self.status = status
        self.detail = detail
        self.headers = headers or []


class FastAct:
    def __init__(self, app: Any, *, settings: Any, policies: Any):
        self.app = app
        self.settings = settings
        self.policies = policies

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        match = ACT_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        scope["route"] = ROUTE
        try:
            self._authorize(scope)
            body = await self._read_json(receive)
            try:
                result = await self.policies.act(match.group(1), body["observations"], deterministic=body["deterministic"],
                                                  values=body["return_values"], probs=body["return_probs"])  # fmt: skip
            except ValueError as err:
                raise _Reject(422, str(err)) from None
            except NotFound as err:
                raise _Reject(404, str(err)) from None
        except _Reject as rej:
            return await _respond(send, rej.status, {"detail": rej.detail}, rej.headers)
        await _respond(send, 200, result.to_json())

    def _authorize(self, scope: dict) -> None:
        token = self.settings.api_token
        if not token:
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), token):
            raise _Reject(401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])

    async def _read_json(self, receive: Any) -> dict[str, Any]:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError):
            raise _Reject(422, "body: not valid JSON") from None
        if not isinstance(body, dict):
            raise _Reject(422, "body: must be a JSON object")
        for key in body:
            if key != "observations" and key not in FLAGS:
                raise _Reject(422, f"{key}: unknown field")
        if "observations" not in body:
            raise _Reject(422, "observations: Field required")
        if not isinstance(body["observations"], list):
            raise _Reject(422, "observations: Input should be a valid list")
        for flag in FLAGS:
            value = body.setdefault(flag, DEFAULTS[flag])
            if not isinstance(value, bool):
                raise _Reject(422, f"{flag}: Input should be a valid boolean")
        return body


async def _respond(send: Any, status: int, payload: dict, headers: list | None = None) -> None:
    data = json.dumps(payload, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})
