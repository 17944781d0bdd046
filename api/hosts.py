"""Without a token, the service answers only requests addressed to a loopback name (as Jupyter does).

A page on any website can make a browser send requests to 127.0.0.1; with DNS rebinding it can even read the
answers, because the browser thinks the service *is* that website (``Host: attacker.example``). A service with no
token trusts the loopback interface, so it must refuse every request whose ``Host`` is not a loopback name:
``localhost`` (and ``*.localhost``), ``127.0.0.0/8`` and ``::1``. ``RAYAC_ALLOWED_HOSTS`` adds names (``*``: any).
With a token the bearer header is the guard, and any Host is fine.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any


def host_name(raw: bytes) -> str:
    """The name of a Host header value: the port and IPv6 brackets stripped, lower case."""
    host = raw.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class LoopbackHostOnly:
    """403 (JSON) for a request whose Host is not a loopback name, when the service has no token."""

    def __init__(self, app: Any, *, settings: Any):
        self.app = app
        self.settings = settings
        self.allowed = {h.lower() for h in settings.allowed_hosts}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self.settings.api_token or "*" in self.allowed:
            return await self.app(scope, receive, send)
        hosts = [v for k, v in scope.get("headers") or [] if k == b"host"]
        name = host_name(hosts[0]) if len(hosts) == 1 else ""
        if is_loopback_name(name) or name in self.allowed:
            return await self.app(scope, receive, send)
        detail = (f"Host '{name}' is not a loopback name: without RAYAC_API_TOKEN this service answers only "
                  "requests to localhost, 127.0.0.1 or ::1 (RAYAC_ALLOWED_HOSTS adds names)")  # fmt: skip
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})
