"""The one bearer-token check, used by the FastAPI dependency and by the ASGI act fast path alike.

It reads the raw ASGI headers (bytes), so a token with any bytes in it is compared, never decoded, and a
request with more than one Authorization header is refused the same way on every route.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

UNAUTHORIZED_HEADERS = [(b"www-authenticate", b"Bearer")]


def bearer_problem(headers: Iterable[tuple[bytes, bytes]], token: str | None) -> str | None:
    """None when the request may pass; else what is wrong with its Authorization header (→ 401)."""
    if not token:
        return None
    values = [value for name, value in headers if name.lower() == b"authorization"]
    if len(values) > 1:
        return "more than one Authorization header"
    scheme, _, given = (values[0] if values else b"").partition(b" ")
    if scheme.lower() != b"bearer" or not secrets.compare_digest(given.strip(), token.encode()):
        return "missing or wrong bearer token"
    return None
