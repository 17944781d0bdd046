"""/v1/deployments: stable names for chosen checkpoints, with versions, rollback, act and export."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import FileResponse

from api.deployment_schemas import DeploymentCreate, DeploymentList, DeploymentOut, RollbackRequest
from api.deps import Authorized
from api.schemas import INVALID, TOO_LARGE, UNAUTHORIZED, ActRequest, ActResponse, ErrorBody
from api.services.deployments import DeploymentService

router = APIRouter(
    prefix="/v1/deployments", tags=["deployments"], dependencies=Authorized, responses=UNAUTHORIZED
)
NO_DEPLOYMENT = {404: {"model": ErrorBody, "description": "No such deployment"}}
EXISTS = {409: {"model": ErrorBody, "description": "The name exists and `replace` was not set"}}


def get_deployments(request: Request) -> DeploymentService:
    return request.app.state.deployments


Deployments = Annotated[DeploymentService, Depends(get_deployments)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DeploymentOut,
             summary="Deploy a job's checkpoint under a name (a new version with replace: true)",
             responses={**INVALID, **EXISTS, **TOO_LARGE})  # fmt: skip
async def create_deployment(
    body: DeploymentCreate, deployments: Deployments, response: Response
) -> DeploymentOut:
    """Copies the checkpoint's weights (and normaliser) out of the job's run, so the job may go on writing and
    pruning checkpoints: the deployment answers the same until it is re-pointed. 201 for a new name, 200 for a
    new version of an existing one. 422 names the field: an unknown job (`policy`), a checkpoint that is not
    there (`checkpoint`), a bad `name`."""
    existed = body.replace and body.name in await asyncio.to_thread(deployments.store.names)
    out = await asyncio.to_thread(deployments.create, body.name, policy=body.policy,
                                  checkpoint=body.checkpoint, replace=body.replace)  # fmt: skip
    if existed:
        response.status_code = status.HTTP_200_OK
    return DeploymentOut(**out)


@router.get("", response_model=DeploymentList, summary="Every deployment with its history")
def list_deployments(deployments: Deployments) -> DeploymentList:
    return DeploymentList(deployments=[DeploymentOut(**d) for d in deployments.list()])


@router.get("/{name}", response_model=DeploymentOut, summary="One deployment: the version served, and its history",
            responses=NO_DEPLOYMENT)  # fmt: skip
def get_deployment(name: str, deployments: Deployments) -> DeploymentOut:
    return DeploymentOut(**deployments.describe(name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a deployment and its versions",
               responses=NO_DEPLOYMENT)  # fmt: skip
def delete_deployment(name: str, deployments: Deployments) -> Response:
    deployments.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/rollback", response_model=DeploymentOut,
             summary="Serve the previous version again (or the version named in the body)",
             responses={**NO_DEPLOYMENT, **INVALID,
                        409: {"model": ErrorBody, "description": "No earlier version"}})  # fmt: skip
def rollback_deployment(
    name: str, deployments: Deployments, body: RollbackRequest | None = None
) -> DeploymentOut:
    return DeploymentOut(**deployments.rollback(name, version=body.version if body else None))


@router.post("/{name}/act", response_model=ActResponse, summary="Actions of the deployed checkpoint",
             responses={**NO_DEPLOYMENT, **INVALID, **TOO_LARGE,
                        503: {"model": ErrorBody, "description": "Ray Serve replicas did not answer; retry"}})  # fmt: skip
async def act(name: str, body: ActRequest, deployments: Deployments) -> Response:
    """The same request, checks and answer as `POST /v1/policies/{id}/act`, on the version deployed now. Served
    by api.fast_act before routing, as that route is; this route is its OpenAPI description and the same logic.
    503 when Ray Serve replicas (RAYAC_SERVE_REPLICAS) did not answer."""
    result = await deployments.act(name, body.observations, deterministic=body.deterministic,
                                   values=body.return_values, probs=body.return_probs,
                                   observations_b64=body.observations_b64,
                                   observations_dtype=body.observations_dtype)  # fmt: skip
    return Response(json.dumps(result.to_json(), separators=(",", ":"), allow_nan=False).encode(),
                    media_type="application/json")  # fmt: skip


@router.get("/{name}/export", response_class=FileResponse,
            summary="The deployed version as an ONNX or TorchScript file (or its JSON sidecar)",
            responses={200: {"content": {"application/octet-stream": {}, "application/json": {}},
                             "description": "The file, as `rayac export` writes it"},
                       **NO_DEPLOYMENT, **INVALID})  # fmt: skip
async def export_deployment(
    name: str,
    deployments: Deployments,
    format: Annotated[Literal["onnx", "torchscript"], Query(description="The file's format.")] = "onnx",  # noqa: A002
    sidecar: Annotated[bool, Query(description="The JSON sidecar (inputs, outputs, env) instead.")] = False,
) -> FileResponse:
    path, meta, version = await asyncio.to_thread(deployments.export, name, format)
    if sidecar:
        return FileResponse(meta, media_type="application/json", filename=meta.name)
    return FileResponse(path, media_type="application/octet-stream", filename=path.name,
                        headers={"X-Deployment-Version": str(version)})  # fmt: skip
