"""One shape for every error body: ``{"detail": "<field>: <problem>; …", "errors": [{field, msg}, …]}``.

Both the FastAPI handlers and the act fast path build their 422 bodies here, from rayac's own formatter of
pydantic errors, so a field is named the same way by the CLI, the routes and the fast path."""

from __future__ import annotations

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
