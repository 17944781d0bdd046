"""/v1/policies: trained policies, and inference on them."""

from __future__ import annotations

import json

from fastapi import APIRouter, Response

from api.deps import Authorized, Policies
from api.schemas import (
    INVALID,
    NOT_FOUND,
    TOO_LARGE,
    UNAUTHORIZED,
    ActRequest,
    ActResponse,
    PolicyList,
    PolicyOut,
)

router = APIRouter(prefix="/v1/policies", tags=["policies"], dependencies=Authorized, responses=UNAUTHORIZED)


@router.get("", response_model=PolicyList, summary="A policy for each job with a checkpoint")
def list_policies(policies: Policies) -> PolicyList:
    return PolicyList(policies=[PolicyOut(**p) for p in policies.list()])


@router.get("/{policy_id}", response_model=PolicyOut, summary="One policy", responses=NOT_FOUND)
def get_policy(policy_id: str, policies: Policies) -> PolicyOut:
    return PolicyOut(**policies.describe(policy_id))


@router.post("/{policy_id}/act", response_model=ActResponse, summary="Actions for a batch of observations",
             responses={**NOT_FOUND, **INVALID, **TOO_LARGE})  # fmt: skip
async def act(policy_id: str, body: ActRequest, policies: Policies) -> Response:
    """Served by api.fast_act before routing (same model, same token check, same error bodies); this route is
    its OpenAPI description and the same logic."""
    result = await policies.act(policy_id, body.observations, deterministic=body.deterministic,
                                values=body.return_values, probs=body.return_probs,
                                observations_b64=body.observations_b64, observations_dtype=body.observations_dtype)  # fmt: skip
    return Response(json.dumps(result.to_json(), separators=(",", ":"), allow_nan=False).encode(),
                    media_type="application/json")  # fmt: skip
