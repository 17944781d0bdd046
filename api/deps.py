"""FastAPI dependencies: settings, services, and the bearer-token check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from api.services.jobs import JobService
from api.services.policies import PolicyService
from api.settings import Settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs


def get_policies(request: Request) -> PolicyService:
    return request.app.state.policies


def require_token(
    settings: Annotated[Settings, Depends(get_app_settings)],
    authorization: Annotated[str | None, Header(description="Bearer <token>")] = None,
) -> None:
    if not settings.api_token:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), settings.api_token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


Jobs = Annotated[JobService, Depends(get_jobs)]
Policies = Annotated[PolicyService, Depends(get_policies)]
Authorized = [Depends(require_token)]
