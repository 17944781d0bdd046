"""One shape for every error body: ``{"detail": "<field>: <problem>; …", "errors": [{field, msg}, …]}``.

Both the FastAPI handlers and the act fast path build their 422 bodies here, from rayac's own formatter of
pydantic errors, so a field is named the same way by the CLI, the routes and the fast path."""

from __future__ import annotations

import errno
import sqlite3
from typing import Any

from rayac.config import ConfigError, describe_error

REQUEST_PARTS = frozenset({"body", "query", "header", "path", "cookie"})


def validation_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The 422 body for pydantic errors of a request (FastAPI's or a model's own)."""
    items = []
    for e in errors:
        in_config = "config" in e.get("loc", ())
        field, msg = describe_error(e, skip=REQUEST_PARTS, prefix="config." if in_config else "", root="body")
        items.append({"field": field, "msg": msg})
    return {"detail": "; ".join(f"{i['field']}: {i['msg']}" for i in items), "errors": items}


def config_error_body(err: ConfigError) -> dict[str, Any]:
    return {"detail": str(err), "errors": [{"field": err.field, "msg": err.message}]}


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: BaseException) -> bool:
    """A write that failed for want of space: an OSError with ENOSPC/EDQUOT, or SQLite's own 'disk is full'."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


def unexpected_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) for an exception no route expected: 507 for a full disk (it recovers when space
    returns), else 500. Never a traceback in the body; the service log has it."""
    if disk_full(exc):
        return 507, {"detail": f"the service's storage is full ({exc}); free some space and retry"}
    return 500, {"detail": f"internal error ({type(exc).__name__}); the service log has the details"}
