"""Request and response bodies. The job body is rayac's own Config: the CLI, presets and the API share it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator

from rayac.config import Config, json_safety_problem

JobStatus = Literal["pending", "running", "succeeded", "failed", "stopped"]


def _storable(value: str) -> str:
    problem = json_safety_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Storable = Annotated[str, AfterValidator(_storable)]  # text that is stored and shown: no NUL, lone surrogate…


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Storable | None = Field(None, max_length=200, description="A name for people; ids are assigned.")
    config: Config = Field(
        default_factory=Config, description="The training config (as `rayac train` takes)."
    )


class JobResume(BaseModel):
    model_config = ConfigDict(extra="forbid")
    total_env_steps: int | None = Field(
        None, ge=1, description="The new run.stop.total_env_steps (as --steps)."
    )
    overrides: list[str] = Field(
        default_factory=list, max_length=100, description="'section.key=value' items, as `rayac train --set`."
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
    """A job in the list: what a table shows. The whole config is on GET /v1/jobs/{id}."""

    id: str
    name: str | None
    status: JobStatus
    created_at: float
    updated_at: float
    algo: str
    env_id: str
    env_steps: int | None = Field(None, description="Env steps of the latest metrics record.")
    episode_return: float | None = Field(
        None, description="rollout/episode_return_mean of the latest record."
    )
    eval_return: float | None = Field(None, description="The latest greedy evaluation mean return.")
    error: str | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]
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
    job_name: str | None = Field(
        None, description="The name of the job that trained it, if it was given one."
    )
    env_id: str
    checkpoint: str
    observation_shape: list[int]
    observation_dtype: str
    action_space: dict[str, Any]
    observations_b64_dtype: str = Field(
        description="What act reads observations_b64 as unless observations_dtype says otherwise."
    )
    eval_return: float | None
    env_steps: int


class PolicyList(BaseModel):
    policies: list[PolicyOut]


class ActRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    observations: list[Any] | None = Field(
        None,
        min_length=1,
        description="A batch of observations, each of the policy's observation shape; finite numbers within "
        "the float32 range (or 0..255 integers for image policies). Give this or observations_b64.",
    )
    observations_b64: str | None = Field(
        None,
        min_length=1,
        description="The same batch as base64 of its raw bytes: C order, little-endian, in observations_dtype (default: "
        "the policy's observations_b64_dtype); the batch size is the byte count over one observation's, which "
        "must divide it. For image policies: a (4, 84, 84) frame stack is 37.6 kB instead of ~130 kB of JSON, "
        "decoded ~10x faster.",
    )
    observations_dtype: Literal["uint8", "float32", "float64"] | None = Field(
        None,
        description="The dtype of observations_b64's bytes (little-endian); default: the policy's "
        "observations_b64_dtype (its observation_dtype: float64 for MuJoCo, uint8 for images).",
    )
    deterministic: StrictBool = Field(True, description="Greedy actions (true) or sampled ones.")
    return_values: StrictBool = Field(False, description="Also return V(s) for each observation.")
    return_probs: StrictBool = Field(
        False, description="Also return action probabilities (Discrete actions only)."
    )

    @model_validator(mode="after")
    def _one_batch(self) -> ActRequest:
        if (self.observations is None) == (self.observations_b64 is None):
            raise ValueError("give exactly one of observations and observations_b64")
        if self.observations_dtype is not None and self.observations_b64 is None:
            raise ValueError("observations_dtype describes observations_b64's bytes; give observations_b64")
        return self


class ActResponse(BaseModel):
    actions: list[Any]
    values: list[float] | None = None
    probs: list[list[float]] | None = None


class ErrorBody(BaseModel):
    detail: str = Field(description="What is wrong, for people.")


class FieldError(BaseModel):
    field: str = Field(
        description="The dotted field, e.g. config.algo.gamma ('body' for the body as a whole)."
    )
    msg: str


class ValidationErrorBody(BaseModel):
    detail: str = Field(description="Every problem on one line: '<field>: <problem>; …'.")
    errors: list[FieldError]


def _error(description: str, model: type[BaseModel] = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


UNAUTHORIZED = {401: _error("Missing or wrong bearer token, or more than one Authorization header")}
NOT_FOUND = {404: _error("No such job or policy")}
INVALID = {422: _error("A field is invalid: each problem names its field", ValidationErrorBody)}
TOO_LARGE = {413: _error("Request body over RAYAC_MAX_REQUEST_BYTES")}
UNAVAILABLE = {503: _error("The Ray cluster cannot be reached")}
CONFLICT = {409: _error("The job has already ended")}
