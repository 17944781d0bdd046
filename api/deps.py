"""FastAPI dependencies: settings, services, and the bearer-token check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPBearer

from api.auth import bearer_problem
from api.services.jobs import JobService
from api.services.policies import PolicyService
from api.settings import Settings

# Only for the OpenAPI description ("Authorize" in /docs); the check itself is api.auth.bearer_problem.
_bearer_scheme = HTTPBearer(auto_error=False, description="RAYAC_API_TOKEN, when the service has one")


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs


def get_policies(request: Request) -> PolicyService:
    return request.app.state.policies


def require_token(request: Request, _: Annotated[object, Security(_bearer_scheme)] = None) -> None:
    problem = bearer_problem(request.scope.get("headers") or [], request.app.state.settings.api_token)
    if problem:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail=problem, headers={"WWW-Authenticate": "Bearer"}
        )


Jobs = Annotated[JobService, Depends(get_jobs)]
Policies = Annotated[PolicyService, Depends(get_policies)]
Authorized = [Depends(require_token)]
