"""Request and response bodies of /v1/sweeps. The base config is rayac's own Config, as for a job; the search
space is the CLI's ``--search KEY=SPEC``, given as a mapping KEY -> SPEC."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.schemas import Storable
from rayac.config import Config

SweepStatus = Literal["pending", "running", "succeeded", "failed", "stopped"]
TrialStatus = Literal["pending", "running", "succeeded", "stopped_early", "stopped", "failed"]
SearchKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-]+$", min_length=1, max_length=200)]
SearchSpec = Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class SweepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Storable | None = Field(None, max_length=200, description="A name for people; ids are assigned.")
    config: Config = Field(
        default_factory=Config, description="The base training config of every trial (as a job's)."
    )
    search: dict[SearchKey, SearchSpec] = Field(
        min_length=1,
        max_length=50,
        description="Searched config fields: KEY -> SPEC, SPEC one of choice(a,b,…), uniform(lo,hi), "
        'loguniform(lo,hi), randint(lo,hi) (hi excluded), e.g. {"optim.lr": "loguniform(1e-5,1e-1)"}.',
    )
    samples: int = Field(8, ge=1, le=10_000, description="Trials to sample (grid: repeats of the grid).")
    concurrent: int = Field(2, ge=1, le=1_000, description="Trials at once; admission counts all of them.")
    metric: Storable = Field(
        "eval/return_mean", min_length=1, max_length=200, description="The metric to optimise."
    )
    mode: Literal["max", "min"] = Field("max", description="Whether the metric is maximised or minimised.")
    scheduler: Literal["none", "asha", "pbt"] = Field(
        "none", description="asha: early stopping; pbt: population-based training of the searched keys."
    )
    pbt_interval: int = Field(10_000, ge=1, description="PBT: env steps between perturbations.")
    search_alg: Literal["random", "grid", "optuna"] = Field(
        "random", description="How trials are sampled (optuna needs the optuna extra)."
    )


class TrialChange(BaseModel):
    env_steps: int
    config: dict[str, Any]


class TrialOut(BaseModel):
    id: str = Field(description="Ray Tune's trial id.")
    job_id: str = Field(
        description="The trial as a job: /v1/jobs/{job_id} (metrics, stream, checkpoints), /v1/policies/{job_id}."
    )
    config: dict[str, Any] = Field(description="The searched keys and their (latest) values.")
    history: list[TrialChange] = Field(
        default_factory=list, description="PBT's changes to the searched values; [] otherwise."
    )
    status: TrialStatus
    best: float | None = Field(None, description="The best value of the sweep's metric so far.")
    env_steps: int = 0
    run_dir: str | None = None


class SweepOut(BaseModel):
    id: str
    name: str | None
    status: SweepStatus
    error: str | None = None
    created_at: float
    updated_at: float
    metric: str
    mode: str
    scheduler: str
    search_alg: str
    search: dict[str, str]
    samples: int
    concurrent: int
    best_trial: str | None = Field(None, description="The id of the best trial so far.")
    best_job_id: str | None = Field(
        None, description="Its job id; its policy is also at /v1/sweeps/{id}/best."
    )
    trials: list[TrialOut] = Field(default_factory=list)


class SweepList(BaseModel):
    sweeps: list[SweepOut]
