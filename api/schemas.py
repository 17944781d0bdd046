"""Request and response bodies. The job body is rayac's own Config: the CLI, presets and the API share it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rayac.config import Config

JobStatus = Literal["pending", "running", "succeeded", "failed", "stopped"]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=200, description="A name for people; ids are assigned.")
    config: Config = Field(
        default_factory=Config, description="The training config (as `rayac train` takes)."
    )


class Checkpoint(BaseModel):
    name: str
    env_steps: int
    version: int
    eval_return: float | None


class JobOut(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    created_at: float
    updated_at: float
    config: dict[str, Any]
    latest_metrics: dict[str, Any] | None = None
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    error: str | None = None


class JobSummary(BaseModel):
    """A row of the jobs list: what a table shows, without the config (GET /v1/jobs/{id} has it)."""

    id: str
    name: str | None
    status: JobStatus
    created_at: float
    updated_at: float
    algo: str
    env_id: str
    env_steps: int | None = Field(None, description="Env steps of the latest metrics record.")
    episode_return: float | None = Field(None, description="Latest mean training-episode return.")
    eval_return: float | None = Field(None, description="Latest greedy evaluation mean return.")
    error: str | None = None


class JobList(BaseModel):
    jobs: list[JobSummary] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        None, description="Pass as ?cursor= for the next (older) page; null: no more."
    )


class MetricsPage(BaseModel):
    since: int
    next: int = Field(description="Pass as ?since= to get only newer records.")
    records: list[dict[str, Any]]


class PolicyOut(BaseModel):
    id: str
    job_id: str
    env_id: str
    checkpoint: str
    observation_shape: list[int]
    observation_dtype: str
    action_space: dict[str, Any]
    eval_return: float | None
    env_steps: int


class PolicyList(BaseModel):
    policies: list[PolicyOut]


class ActRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    observations: list[Any] = Field(
        description="A batch of observations, each of the policy's observation shape."
    )
    deterministic: bool = Field(True, description="Greedy actions (true) or sampled ones.")
    return_values: bool = Field(False, description="Also return V(s) for each observation.")
    return_probs: bool = Field(False, description="Also return action probabilities (Discrete actions only).")


class ActResponse(BaseModel):
    actions: list[Any]
    values: list[float] | None = None
    probs: list[list[float]] | None = None


class Problem(BaseModel):
    detail: str
