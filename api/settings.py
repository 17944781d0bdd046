"""Service settings, read from RAYAC_* environment variables once (``get_settings`` is cached)."""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from rayac.config import ConfigError


class Settings(BaseModel):
    storage_dir: Path = Field(
        Path("rayac-data"), description="Job registry, run directories, the local Ray head."
    )
    api_token: str | None = Field(None, description="Bearer token every route but /healthz requires.")
    host: str = Field("127.0.0.1", description="Address uvicorn binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port uvicorn binds.")
    max_request_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get 413.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Without a token, Host names answered besides loopback ones ('*': any; guards DNS rebinding).",
    )
    allowed_env_modules: list[str] = Field(
        default_factory=list, description="Modules a 'module:Name' env id may import (none by default)."
    )
    policy_cache_size: int = Field(8, ge=1, description="Loaded policies kept in memory (LRU).")
    batch_wait_ms: float = Field(
        0.0, ge=0, description="Extra wait to grow a micro-batch (0: one event-loop turn)."
    )
    max_batch: int = Field(4096, ge=1, description="Most observations in one forward pass.")
    max_act_batch: int = Field(1024, ge=1, description="Most observations in one act request.")
    ray_address: str | None = Field(
        None, description="RAY_ADDRESS: use this cluster instead of a local head."
    )
    dashboard_url: str | None = Field(None, description="Ray dashboard URL (Jobs API) of that cluster.")
    head_cpus: int | None = Field(
        None, ge=1, description="CPUs of the local Ray head (default: 2 × cores, ≥ 4)."
    )
    train_command: str | None = Field(
        None, description="Job entrypoint prefix (default: this Python -m rayac.cli)."
    )
    public_docs: bool = Field(
        False,
        description="Serve /docs, /redoc and /openapi.json without the token (they describe every route).",
    )
    # Admission control: a job that can never run is refused at submit (422), not left pending.
    max_workers_per_job: int = Field(
        64, ge=0, description="Most rollout workers (resources.num_workers) a job may ask for."
    )
    max_rollout_bytes: int = Field(
        4 * 2**30,
        ge=0,
        description="Most memory a job may need, estimated from every per-step array its rollouts and its learner "
        "hold, and its parameters (rayac.budget).",
    )
    max_policy_params: int = Field(
        100_000_000, ge=1, description="Most parameters a job's network may have (model.hidden_sizes)."
    )
    min_worker_cpus: float = Field(
        1.0,
        ge=0,
        description="CPUs each rollout worker counts as at admission, however little resources.worker_cpus asks.",
    )
    check_cluster_resources: bool = Field(
        True,
        description="Refuse jobs that need more CPUs or custom resources than the cluster has now (turn off on an "
        "autoscaling cluster whose nodes come on demand).",
    )
    placement_timeout_s: float = Field(
        180.0,
        gt=0,
        description="A job still pending after this long is stopped and marked failed with Ray's reason.",
    )
    time_limit_grace_s: float = Field(
        60.0,
        ge=0,
        description="A job with run.stop.time_limit_s is stopped by the service this long after its limit.",
    )
    min_free_bytes: int = Field(
        256 * 2**20,
        ge=0,
        description="Submissions are refused (507) while the storage dir has less free space.",
    )
    stream_send_timeout_s: float = Field(
        30.0, gt=0, description="A metrics stream whose client reads nothing for this long is closed."
    )
    cluster_lost_after_s: float = Field(
        10.0,
        gt=0,
        description="The Ray cluster not answering for this long ends its unfinished jobs (see README).",
    )

    serve_replicas: str | None = Field(
        None,
        description="Serve deployment act on Ray Serve replicas on the service's cluster: a number of replicas, or "
        "'auto' (Serve's autoscaling, 1-8); unset: in the service's own process.",
    )
    serve_timeout_s: float = Field(
        10.0, gt=0, description="How long one Serve act call may take before it is retried (then 503)."
    )

    @field_validator("serve_replicas")
    @classmethod
    def _replicas(cls, value: str | None) -> str | None:
        if value is not None and value != "auto" and not (value.isdigit() and 1 <= int(value) <= 1024):
            raise ValueError("RAYAC_SERVE_REPLICAS must be a number of replicas (1-1024) or 'auto'")
        return value

    @field_validator("api_token")
    @classmethod
    def _printable_ascii(cls, value: str | None) -> str | None:
        if value is not None and not (value.isascii() and value.isprintable() and " " not in value):
            raise ValueError(
                "RAYAC_API_TOKEN must be printable ASCII without spaces (it travels in an HTTP header)"
            )
        return value

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check_secure(self) -> None:
        if not self.is_loopback() and not self.api_token:
            raise ValueError(f"refusing to serve on {self.host} (not loopback) without RAYAC_API_TOKEN")


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    values: dict[str, object] = {}
    for name in Settings.model_fields:
        key = f"RAYAC_{name.upper()}"
        if key in env and env[key] != "":
            raw = env[key]
            values[name] = (
                [m.strip() for m in raw.split(",") if m.strip()]
                if name in ("allowed_env_modules", "allowed_hosts")
                else raw
            )
    if "ray_address" not in values and env.get("RAY_ADDRESS"):
        values["ray_address"] = env["RAY_ADDRESS"]
    try:
        return Settings.model_validate(values)
    except ValidationError as err:  # named as the operator wrote it: the variable, not the field
        e = err.errors()[0]
        name = str(e["loc"][0]) if e["loc"] else ""
        var = (
            f"RAYAC_{name.upper()}"
            if f"RAYAC_{name.upper()}" in env or name != "ray_address"
            else "RAY_ADDRESS"
        )
        msg = e["msg"].removeprefix("Value error, ").removeprefix(f"{var} ")
        shown = "" if name == "api_token" else f" (it is {env.get(var, '')!r})"  # a secret is not echoed
        raise ConfigError(var, msg + shown) from None


@lru_cache
def get_settings() -> Settings:
    return settings_from_env()
