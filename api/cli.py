"""The service's commands, ``rayac serve`` and ``rayac submit``.

They live here, not in rayac/, because rayac never imports api: ``rayac.cli`` finds them through the
``rayac.commands`` entry-point group (pyproject.toml). Heavy imports (uvicorn, the app, httpx) stay inside
the handlers so that listing the commands, on every ``rayac`` start, costs next to nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from rayac.cli import fail
from rayac.config import apply_overrides, load_preset, parse_config

if TYPE_CHECKING:  # httpx is imported where it is used: listing the commands runs on every `rayac` start
    import httpx

    from api.settings import Settings


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
                   help="stop the local Ray head this service started in --storage, and the jobs still running on it, "
                        "and exit")  # fmt: skip


def cmd_serve(args: argparse.Namespace) -> int:
    from api.settings import settings_from_env

    try:
        settings = settings_from_env()
        updates = {k: v for k, v in {"host": args.host, "port": args.port, "storage_dir": args.storage}.items()
                   if v is not None}  # fmt: skip
        settings = settings.model_validate({**settings.model_dump(), **updates})
        settings.check_secure()
    except ValidationError as err:  # a flag's value (the RAYAC_* variables are named by settings_from_env)
        flags = {"host": "--host", "port": "--port", "storage_dir": "--storage"}
        return fail(
            "; ".join(f"{flags.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in err.errors())
        )
    except ValueError as err:  # check_secure, or a bad RAYAC_* variable (a ConfigError naming it)
        return fail(str(err))
    if args.stop_head:
        from api.services.ray_cluster import stop_local_head

        stopped = stop_local_head(Path(settings.storage_dir))
        print(
            "stopped the local Ray head and any jobs still running on it"
            if stopped
            else "no local Ray head recorded in " + str(settings.storage_dir)
        )
        return 0
    import uvicorn

    from api.app import create_app

    busy = _port_in_use(settings.host, settings.port)
    if busy:
        return fail(f"--port: {settings.host}:{settings.port} is taken ({busy}); another `rayac serve`? Pick "
                    "another port with --port")  # fmt: skip
    app = create_app(settings)
    print(startup_line(settings), flush=True)
    announce_head()
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops gracefully on Ctrl-C, then raises it again
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    print(
        shutdown_line(settings, len(app.state.jobs.store.unfinished()), storage_flag=args.storage), flush=True
    )
    return 0


def shutdown_line(settings: Settings, unfinished: int, *, storage_flag: str | None = None) -> str:
    """What ``rayac serve`` prints when it stops: the service ends, but its jobs and the Ray head they run on do
    not; say where they are and how to come back to them or stop them."""
    from api.services.ray_cluster import HEAD_FILE, auth_headers, dashboard_alive

    jobs = f"{unfinished} unfinished job{'' if unfinished == 1 else 's'}"
    keep = "keeps" if unfinished == 1 else "keep"
    storage = f" --storage {storage_flag}" if storage_flag else ""
    again = f"`rayac serve{storage}` follows them again"
    external = settings.dashboard_url or settings.ray_address
    if external:
        if not unfinished:
            return "rayac serve: stopped"
        return f"rayac serve: stopped; its {jobs} {keep} running on the Ray cluster at {external} ({again})"
    try:
        record = json.loads((Path(settings.storage_dir) / HEAD_FILE).read_text())
        alive = dashboard_alive(record["dashboard_url"], timeout=1.0, headers=auth_headers(record))
    except (OSError, ValueError, KeyError):
        alive = False
    if not alive:
        return "rayac serve: stopped"
    stop = f"`rayac serve{storage} --stop-head` stops the head"
    if unfinished:
        return (f"rayac serve: stopped; its Ray head at {record['gcs_address']} keeps running with {jobs}: "
                f"{again}, {stop} and them")  # fmt: skip
    return f"rayac serve: stopped; its Ray head at {record['gcs_address']} keeps running (idle): {stop}"


def announce_head() -> None:
    """The service's own Ray head starts at the first job: say so on a plain ``rayac serve:`` line, like the start
    line, not as a WARNING (its problems still are)."""
    import logging

    logger = logging.getLogger("api.services.ray_cluster")
    if any(getattr(h, "rayac_announce", False) for h in logger.handlers):
        return
    news = logging.StreamHandler(sys.stdout)
    news.setFormatter(logging.Formatter("rayac serve: %(message)s"))
    news.addFilter(lambda record: record.levelno == logging.INFO)
    problems = logging.StreamHandler(sys.stderr)
    problems.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    problems.setLevel(logging.WARNING)
    for handler in (news, problems):
        handler.rayac_announce = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound now, or None. Checked before the start line, so a second ``rayac serve``
    on the same port says so in one line instead of uvicorn's error after a line that says it is serving."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as uvicorn binds it: a port in TIME_WAIT is no conflict
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            return err.strerror or str(err)
    return None


def startup_line(settings: Settings) -> str:
    """What ``rayac serve`` prints once: where it listens, where it keeps its files, whether it needs a token,
    and which Ray cluster its jobs go to."""
    from api.services.ray_cluster import HEAD_FILE

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    token = "token required (RAYAC_API_TOKEN)" if settings.api_token else "no token (loopback only)"
    if settings.dashboard_url:
        ray = f"Ray: {settings.dashboard_url} (RAYAC_DASHBOARD_URL)"
    elif settings.ray_address:
        ray = f"Ray: {settings.ray_address} (RAY_ADDRESS)"
    else:
        head = Path(settings.storage_dir) / HEAD_FILE
        try:
            ray = f"Ray: its own head at {json.loads(head.read_text())['gcs_address']} (from {head})"
        except (OSError, ValueError, KeyError):
            cpus = settings.head_cpus or max(4, 2 * (os.cpu_count() or 1))
            ray = f"Ray: its own local head, {cpus} CPUs (RAYAC_HEAD_CPUS), started at the first job"
    return (f"rayac serve: http://{host}:{settings.port}/ (dashboard; API under /v1)  storage {settings.storage_dir}"
            f"  {token}  {ray}")  # fmt: skip


def _submit_arguments(m: argparse.ArgumentParser) -> None:
    m.add_argument("--preset", help="a preset name or YAML/JSON config file")
    m.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set optim.lr=0.001 (repeatable; keys: rayac train --help)")  # fmt: skip
    m.add_argument("--name", help="a name for the job (default: the preset's name)")
    m.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the service (default http://127.0.0.1:8000)"
    )
    m.add_argument("--token", default=None, help="bearer token (default: $RAYAC_API_TOKEN)")
    m.add_argument("--follow", action="store_true", help="stream the job's metrics until it ends")
    m.add_argument("--every", type=float, default=2.0, metavar="SECONDS",
                   help="--follow: a line at most this often, besides one per evaluation (default 2)")  # fmt: skip


def _error(resp: httpx.Response) -> str:
    """What the service said, as a user reads it: a refused config (422) names the field and the problem like a
    local config error; a refused token says how to pass one; anything else adds its HTTP status. The body
    itself when it is not the API's JSON (a proxy's page)."""
    resp.read()
    try:
        detail = resp.json().get("detail", resp.text)
    except (ValueError, AttributeError):
        detail = resp.text
    if resp.status_code == 422:
        return str(detail)
    if resp.status_code in (401, 403):
        return f"{detail} (HTTP {resp.status_code}: pass --token, or set RAYAC_API_TOKEN)"
    return f"the service answered HTTP {resp.status_code}: {detail}"


def _follow(client: httpx.Client, job_id: str, *, every_s: float = 2.0, token: bool = False) -> int:
    """Prints the job's progress as it arrives: a line every ``every_s`` seconds and one per evaluation, training
    and greedy evaluation returns labelled apart; at the end, where the policy is and a ready ``curl`` for act.
    Exit code 0 once the job has succeeded, 1 if it ended otherwise."""
    import time

    from httpx_sse import connect_sse

    from api.sse_client import stream_events

    last_printed, pending = -float("inf"), None  # pending: the newest record not printed yet
    try:
        with connect_sse(client, "GET", f"/v1/jobs/{job_id}/metrics/stream", timeout=None) as source:
            # not an event stream: its error, not httpx-sse's traceback
            if source.response.status_code >= 400:
                return fail(_error(source.response))
            for event in stream_events(source):
                record = json.loads(event.data)
                if event.event == "status":
                    if pending is not None:
                        print(progress_line(pending))
                    print(
                        f"{job_id}: {record['status']}" + (f" ({record['error']})" if record["error"] else "")
                    )
                    if record["status"] != "succeeded":
                        return 1
                    _print_policy(client, job_id, token=token)
                    return 0
                now = time.monotonic()
                if "eval/return_mean" in record or now - last_printed >= every_s:
                    print(progress_line(record), flush=True)
                    last_printed, pending = now, None
                else:
                    pending = record
    except KeyboardInterrupt:
        print(f"stopped following {job_id}; it goes on (GET /v1/jobs/{job_id}, POST /v1/jobs/{job_id}/stop)")
        return 130
    print(f"rayac: error: the metrics stream of {job_id} ended before the job did", file=sys.stderr)
    return 1


def progress_line(record: dict) -> str:
    """``    12,000 env steps  train return  45.2  eval return 438.5``: training episodes' mean return (the last
    100, with exploration) and the greedy evaluation's, each named, to one decimal."""
    line = f"{int(record.get('time/env_steps', 0)):>11,} env steps"
    if record.get("rollout/episode_return_mean") is not None:
        line += f"  train return {record['rollout/episode_return_mean']:7.1f}"
    if record.get("eval/return_mean") is not None:
        line += f"  eval return {record['eval/return_mean']:7.1f}"
    return line if "return" in line else line + "  (no episode finished yet)"


def _print_policy(client: httpx.Client, job_id: str, *, token: bool) -> None:
    """Where the trained policy is, and a curl that asks it for an action (for a zero observation)."""
    resp = client.get(f"/v1/policies/{job_id}")
    if resp.status_code >= 400:
        print(f"no policy to act with: {_error(resp)}")
        return
    policy = resp.json()
    shape = policy["observation_shape"]
    size = 1
    for n in shape:
        size *= n
    ret = policy.get("eval_return")
    print(f"policy {job_id}: checkpoint {policy['checkpoint']}, {policy['env_steps']:,} env steps"
          + (f", greedy eval return {ret:.1f}" if ret is not None else ""))  # fmt: skip
    if size <= 64:  # one observation of zeros, as nested lists of the policy's shape
        zero: object = 0.0
        for n in reversed(shape):
            zero = [zero] * n
        body = json.dumps({"observations": [zero], "deterministic": True})
    else:  # an image stack: JSON would be megabytes; its raw bytes as base64
        body = json.dumps(
            {"observations_b64": f"<base64 of {'x'.join(map(str, shape))} {policy['observation_dtype']}>"}
        )
    auth = ' -H "Authorization: Bearer $RAYAC_API_TOKEN"' if token else ""
    url = str(client.base_url).rstrip("/")
    print(f"act on it:\n  curl -s -X POST {url}/v1/policies/{job_id}/act -H 'content-type: application/json'{auth} "
          f"-d '{body}'")  # fmt: skip


def cmd_submit(args: argparse.Namespace) -> int:
    import httpx

    data = load_preset(args.preset) if args.preset else {}
    cfg = parse_config(apply_overrides(data, args.overrides))  # ConfigError → rayac.cli prints it, exit 2
    token = args.token or os.environ.get("RAYAC_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=60) as client:
            name = args.name or (Path(args.preset).stem if args.preset else None)  # the dashboard shows it
            resp = client.post("/v1/jobs", json={"name": name, "config": cfg.model_dump(mode="json")})
            if resp.status_code >= 400:
                return fail(_error(resp))
            job = resp.json()
            print(f"submitted {job['id']} ({job['status']})"
                  + ("; following its metrics (Ctrl-C stops following, not the job)" if args.follow else ""))  # fmt: skip
            return _follow(client, job["id"], every_s=args.every, token=bool(token)) if args.follow else 0
    except httpx.TransportError as err:  # no service there, or it went away mid-stream
        return fail(f"--url {args.url}: {err} (is `rayac serve` running there?)")


serve = ServiceCommand(
    "run the HTTP service (jobs, metrics streams, policy inference)", _serve_arguments, cmd_serve
)
submit = ServiceCommand("submit a training job to a running service", _submit_arguments, cmd_submit)
