"""Service settings, read from RAYAC_* environment variables once (``get_settings`` is cached)."""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field


class Settings(BaseModel):
    storage_dir: Path = Field(
        Path("rayac-data"), description="Job registry, run directories, the local Ray head."
    )
    api_token: str | None = Field(None, description="Bearer token every route but /healthz requires.")
    host: str = Field("127.0.0.1", description="Address uvicorn binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port uvicorn binds.")
    max_request_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies get 413.")
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
                [m.strip() for m in raw.split(",") if m.strip()] if name == "allowed_env_modules" else raw
            )
    if "ray_address" not in values and env.get("RAY_ADDRESS"):
        values["ray_address"] = env["RAY_ADDRESS"]
    return Settings.model_validate(values)


@lru_cache
def get_settings() -> Settings:
    return settings_from_env()
