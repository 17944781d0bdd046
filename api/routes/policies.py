"""/v1/policies: trained policies, and inference on them."""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Response, status

from api.deps import Authorized, Policies
from api.schemas import ActRequest, ActResponse, PolicyList, PolicyOut

router = APIRouter(prefix="/v1/policies", tags=["policies"], dependencies=Authorized)


@router.get("", response_model=PolicyList, summary="A policy for each job with a checkpoint")
def list_policies(policies: Policies) -> PolicyList:
    return PolicyList(policies=[PolicyOut(**p) for p in policies.list()])


@router.get("/{policy_id}", response_model=PolicyOut, summary="One policy")
def get_policy(policy_id: str, policies: Policies) -> PolicyOut:
    return PolicyOut(**policies.describe(policy_id))


@router.post("/{policy_id}/act", response_model=ActResponse, summary="Actions for a batch of observations",
             responses={422: {"description": "observations of the wrong shape or type, or not finite"}})  # fmt: skip
async def act(policy_id: str, body: ActRequest, policies: Policies) -> Response:
    """Served by api.fast_act before routing; this route is its OpenAPI description and the same logic."""
    try:
        result = await policies.act(policy_id, body.observations, deterministic=body.deterministic,
                                    values=body.return_values, probs=body.return_probs)  # fmt: skip
    except ValueError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(err)) from None
    return Response(
        json.dumps(result.to_json(), separators=(",", ":")).encode(), media_type="application/json"
    )
