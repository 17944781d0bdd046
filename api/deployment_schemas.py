"""Request and response bodies of /v1/deployments (the act bodies are the policies' own, api.schemas)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from api.services.deployments import NAME
from rayac.checkpoint import parse_checkpoint_choice
from rayac.config import json_safety_problem

CheckpointChoice = Literal["best", "latest"] | Annotated[int, Field(ge=0)]


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        description="The deployment's name: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."
    )
    policy: str = Field(
        min_length=1, max_length=200, description="The job whose checkpoint to deploy (its id)."
    )
    checkpoint: CheckpointChoice = Field(
        "latest",
        description="'best' (the kept checkpoint with the highest greedy evaluation), 'latest', or an env-step "
        "count naming one checkpoint (ckpt_<step>).",
    )
    replace: StrictBool = Field(
        False, description="If the name exists: deploy as its next version (else 409)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError("1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("policy")
    @classmethod
    def _storable(cls, value: str) -> str:
        problem = json_safety_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _choice(cls, value: Any) -> Any:
        return parse_checkpoint_choice(value)  # ValueError names what is accepted


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(
        None, ge=1, description="The version to serve again (default: the one before the current)."
    )


class DeploymentVersion(BaseModel):
    version: int
    job_id: str
    checkpoint: str = Field(description="The checkpoint pinned (its directory name in the job's run).")
    requested: str = Field(description="What was asked for: best, latest or a step.")
    env_steps: int
    eval_return: float | None = Field(description="The greedy evaluation return recorded at that checkpoint.")
    created_at: float
    active: bool


class DeploymentOut(BaseModel):
    name: str
    version: int = Field(description="The version served now.")
    job_id: str
    env_id: str
    checkpoint: str
    observation_shape: list[int]
    observation_dtype: str
    action_space: dict[str, Any]
    eval_return: float | None
    env_steps: int
    created_at: float
    updated_at: float
    history: list[DeploymentVersion] = Field(description="Every version, oldest first.")


class DeploymentList(BaseModel):
    deployments: list[DeploymentOut]
