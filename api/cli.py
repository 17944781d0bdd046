"""The service's commands, ``rayac serve`` and ``rayac submit``.

They live here, not in rayac/, because rayac never imports api: ``rayac.cli`` finds them through the
``rayac.commands`` entry-point group (pyproject.toml). Heavy imports (uvicorn, the app, httpx) stay inside
the handlers so that listing the commands, on every ``rayac`` start, costs next to nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from rayac.cli import fail
from rayac.config import apply_overrides, format_validation_error, load_preset, parse_config

if TYPE_CHECKING:  # httpx is imported where it is used: listing the commands runs on every `rayac` start
    import httpx


@dataclass(frozen=True)
class ServiceCommand:
    """What ``rayac.cli`` needs of a plugged-in subcommand: its help, its arguments and its handler."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _serve_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--host", default=None, help="bind address (default 127.0.0.1; others need RAYAC_API_TOKEN)"
    )
    s.add_argument("--port", type=int, default=None, help="port (default 8000)")
    s.add_argument(
        "--storage", default=None, help="storage directory (RAYAC_STORAGE_DIR, default ./rayac-data)"
    )
    s.add_argument("--stop-head", action="store_true",
                   help="stop the local Ray head this service started in --storage, and exit")  # fmt: skip


def cmd_serve(args: argparse.Namespace) -> int:
    from api.settings import settings_from_env

    try:
        settings = settings_from_env()
        updates = {k: v for k, v in {"host": args.host, "port": args.port, "storage_dir": args.storage}.items()
                   if v is not None}  # fmt: skip
        settings = settings.model_validate({**settings.model_dump(), **updates})
        settings.check_secure()
    except ValidationError as err:
        return fail(format_validation_error(err))
    except ValueError as err:  # check_secure
        return fail(str(err))
    if args.stop_head:
        from api.services.ray_cluster import stop_local_head

        stopped = stop_local_head(Path(settings.storage_dir))
        print(
            "stopped the local Ray head"
            if stopped
            else "no local Ray head recorded in " + str(settings.storage_dir)
        )
        return 0
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
    return 0


def _submit_arguments(m: argparse.ArgumentParser) -> None:
    m.add_argument("--preset", help="a preset name or YAML/JSON config file")
    m.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    m.add_argument("--name", help="a name for the job")
    m.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the service (default http://127.0.0.1:8000)"
    )
    m.add_argument("--token", default=None, help="bearer token (default: $RAYAC_API_TOKEN)")
    m.add_argument("--follow", action="store_true", help="stream the job's metrics until it ends")


def _error(resp: httpx.Response) -> str:
    """``STATUS: detail`` of an error response; the body itself when it is not the API's JSON (a proxy's page)."""
    resp.read()
    try:
        detail = resp.json().get("detail", resp.text)
    except (ValueError, AttributeError):
        detail = resp.text
    return f"{resp.status_code}: {detail}"


def _follow(client: httpx.Client, job_id: str) -> int:
    """Prints the job's metrics as they arrive; exit code 0 once it has succeeded, 1 if it ended otherwise."""
    from httpx_sse import connect_sse

    from api.sse_client import stream_events

    with connect_sse(client, "GET", f"/v1/jobs/{job_id}/metrics/stream", timeout=None) as source:
        if source.response.status_code >= 400:  # not an event stream: its error, not httpx-sse's traceback
            return fail(_error(source.response))
        for event in stream_events(source):
            record = json.loads(event.data)
            if event.event == "status":
                print(f"{job_id}: {record['status']}" + (f" ({record['error']})" if record["error"] else ""))
                return 0 if record["status"] == "succeeded" else 1
            ret = record.get("eval/return_mean", record.get("rollout/episode_return_mean"))
            print(f"{record.get('time/env_steps', 0):>10,} steps  return {ret if ret is not None else '-'}")
    print(f"rayac: error: the metrics stream of {job_id} ended before the job did", file=sys.stderr)
    return 1


def cmd_submit(args: argparse.Namespace) -> int:
    import httpx

    data = load_preset(args.preset) if args.preset else {}
    cfg = parse_config(apply_overrides(data, args.overrides))  # ConfigError → rayac.cli prints it, exit 2
    token = args.token or os.environ.get("RAYAC_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=60) as client:
            resp = client.post("/v1/jobs", json={"name": args.name, "config": cfg.model_dump(mode="json")})
            if resp.status_code >= 400:
                return fail(_error(resp))
            job = resp.json()
            print(f"submitted {job['id']} ({job['status']})")
            return _follow(client, job["id"]) if args.follow else 0
    except httpx.TransportError as err:  # no service there, or it went away mid-stream
        return fail(f"--url {args.url}: {err}")


serve = ServiceCommand(
    "run the HTTP service (jobs, metrics streams, policy inference)", _serve_arguments, cmd_serve
)
submit = ServiceCommand("submit a training job to a running service", _submit_arguments, cmd_submit)
