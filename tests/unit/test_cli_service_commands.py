"""`rayac serve` / `rayac submit` live in api/cli.py and reach the `rayac` command through entry points:
rayac never imports api, the commands still dispatch, and a missing service is one line and exit 2."""

import ast
import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import pytest
from sse_starlette import ServerSentEvent

import rayac.cli
from rayac.cli import main

RAYAC = Path(rayac.cli.__file__).parent


def _imports_api(node: ast.AST) -> bool:
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
        names = [node.module or ""]
    elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
        "import_module",
        "__import__",
    ):
        names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return any(name == "api" or name.startswith("api.") for name in names)


def test_no_module_under_rayac_imports_api():
    sources = sorted(RAYAC.rglob("*.py"))
    assert len(sources) > 20  # the package was found, not an empty directory
    offenders = [
        f"{path.relative_to(RAYAC.parent)}:{node.lineno}"
        for path in sources
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if _imports_api(node)
    ]
    assert offenders == [], f"rayac must not import api (DESIGN.md): {offenders}"


def test_the_import_check_sees_every_form_of_importing_api():
    for code in (
        "import api",
        "import api.cli as c",
        "from api.cli import serve",
        "importlib.import_module('api')",
    ):
        assert any(_imports_api(n) for n in ast.walk(ast.parse(code))), code
    for code in ("import apispec", "from rayac.api_like import x", "from . import api"):
        assert not any(_imports_api(n) for n in ast.walk(ast.parse(code))), code


@pytest.mark.parametrize(("command", "option"), [("serve", "--stop-head"), ("submit", "--follow")])
def test_service_commands_dispatch_to_their_own_parsers(capsys, command, option):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: rayac {command}" in capsys.readouterr().out.replace("\n", " ")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert command in capsys.readouterr().out


def test_python_m_rayac_cli_serve_help_uses_the_installed_entry_point():
    proc = subprocess.run([sys.executable, "-m", "rayac.cli", "serve", "--help"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--stop-head" in proc.stdout and "--storage" in proc.stdout


def test_serve_stop_head_with_no_head_recorded_says_so(capsys, tmp_path):
    assert main(["serve", "--stop-head", "--storage", str(tmp_path)]) == 0
    assert f"no local Ray head recorded in {tmp_path}" in capsys.readouterr().out


def test_submit_bad_config_is_one_line_exit_2_before_any_request(capsys):
    # port 9 (discard): a request would be a connection error, not the config error asserted here
    assert main(["submit", "--url", "http://127.0.0.1:9", "--set", "algo.gamma=1.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "algo.gamma" in err[0], err


def test_submit_to_no_service_is_one_line_exit_2(capsys):
    assert main(["submit", "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--url http://127.0.0.1:9" in err[0], err
    assert err[0].endswith("(is `rayac serve` running there?)")


def test_serve_on_a_taken_port_is_one_line_exit_2_before_the_start_line(capsys, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--storage", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # no "rayac serve: http://…" line for a service that never served
    assert out.err == (f"rayac: error: --port: 127.0.0.1:{port} is taken (Address already in use); another "
                       "`rayac serve`? Pick another port with --port\n")  # fmt: skip


@pytest.mark.parametrize(
    "entry_points",
    [
        [],  # the package metadata has no such entry point (api not installed)
        [EntryPoint("serve", "rayac_no_such_module:serve", "rayac.commands")],  # named, but not importable
    ],
)
def test_a_missing_service_is_one_line_and_exit_2(capsys, monkeypatch, entry_points):
    monkeypatch.setattr(rayac.cli, "entry_points", lambda group: entry_points)
    assert main(["serve", "--port", "9", "--help"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`rayac serve`" in err[0] and "not installed" in err[0], err
    with pytest.raises(SystemExit) as exit_:
        main(["presets", "--bogus"])  # an unknown flag on a built-in is still argparse's error
    assert exit_.value.code == 2


def _sse(*events: dict) -> bytes:
    """The bytes sse-starlette sends (CRLF lines), with a keep-alive comment in front."""
    # keep-alive comments before and between events, as sse-starlette sends them on a quiet stream
    return b": ping\r\n\r\n" + b": ping\r\n\r\n".join(ServerSentEvent(**e).encode() for e in events)


def _mock_service(monkeypatch, body: bytes, policy: dict | None = None, token: str | None = "t0k") -> list:
    posted = []

    def handler(request: httpx.Request) -> httpx.Response:
        if token:
            assert request.headers["authorization"] == f"Bearer {token}"
        if request.method == "POST":
            posted.append(json.loads(request.content))
            return httpx.Response(201, json={"id": "job-1", "status": "pending"})
        if request.url.path == "/v1/policies/job-1":
            return (
                httpx.Response(200, json=policy)
                if policy
                else httpx.Response(404, json={"detail": "no such"})
            )
        assert request.url.path == "/v1/jobs/job-1/metrics/stream"
        return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=body)

    real_client = httpx.Client
    monkeypatch.setattr(
        httpx, "Client", lambda **kw: real_client(transport=httpx.MockTransport(handler), **kw)
    )
    return posted


def test_submit_follow_prints_metrics_until_the_status_event(capsys, monkeypatch):
    records = [{"time/env_steps": 1000, "rollout/episode_return_mean": 20.5},
               {"time/env_steps": 2000, "eval/return_mean": 500.0}]  # fmt: skip
    body = _sse(
        *({"id": str(i), "event": "metrics", "data": json.dumps(r)} for i, r in enumerate(records)),
        {"event": "status", "data": json.dumps({"status": "failed", "error": "boom"})},
    )
    _mock_service(monkeypatch, body)
    assert main(["submit", "--follow", "--token", "t0k"]) == 1  # the job failed
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "submitted job-1 (pending); following its metrics (Ctrl-C stops following, not the job)",
        "      1,000 env steps  train return    20.5",
        "      2,000 env steps  eval return   500.0",
        "job-1: failed (boom)",
    ]


def test_submit_follow_is_readable_and_ends_with_the_policy_and_a_curl(capsys, monkeypatch):
    """A line per evaluation and at most one per --every seconds otherwise (the newest before the end is
    shown), training and eval returns labelled and rounded; then the policy and a curl that works."""
    records = [{"time/env_steps": 80 * i, "rollout/episode_return_mean": 20 + i / 3} for i in range(1, 200)]
    records[99]["eval/return_mean"] = 131.23456
    records[0] = {"time/env_steps": 80}  # no episode has finished yet
    body = _sse(
        *({"id": str(i), "event": "metrics", "data": json.dumps(r)} for i, r in enumerate(records)),
        {"event": "status", "data": json.dumps({"status": "succeeded", "error": None})},
    )
    policy = {"id": "job-1", "job_id": "job-1", "env_id": "CartPole-v1", "checkpoint": "ckpt_000000015920",
              "observation_shape": [4], "observation_dtype": "float32", "action_space": {"type": "Discrete", "n": 2},
              "eval_return": 500.0, "env_steps": 15920}  # fmt: skip
    posted = _mock_service(monkeypatch, body, policy)
    args = ["--preset", "a2c_cartpole", "--every", "3600", "--url", "http://127.0.0.1:8123"]
    assert main(["submit", "--follow", "--token", "t0k", *args]) == 0
    assert posted[0]["name"] == "a2c_cartpole"  # named after its preset, so the dashboard has a name to show
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "submitted job-1 (pending); following its metrics (Ctrl-C stops following, not the job)",
        "         80 env steps  (no episode finished yet)",
        "      8,000 env steps  train return    53.3  eval return   131.2",
        "     15,920 env steps  train return    86.3",
        "job-1: succeeded",
        "policy job-1: checkpoint ckpt_000000015920, 15,920 env steps, greedy eval return 500.0",
        "act on it:",
        "  curl -s -X POST http://127.0.0.1:8123/v1/policies/job-1/act -H 'content-type: application/json' "
        '-H "Authorization: Bearer $RAYAC_API_TOKEN" -d \'{"observations": [[0.0, 0.0, 0.0, 0.0]], '
        '"deterministic": true}\'',
    ]


def test_submit_follow_curl_for_an_image_policy_sends_base64(capsys, monkeypatch):
    body = _sse({"event": "status", "data": json.dumps({"status": "succeeded", "error": None})})
    policy = {"id": "job-1", "job_id": "job-1", "env_id": "ALE/Pong-v5", "checkpoint": "ckpt_000000000010", "eval_return": None,
              "observation_shape": [4, 84, 84], "observation_dtype": "uint8", "action_space": {}, "env_steps": 10}  # fmt: skip
    _mock_service(monkeypatch, body, policy, token=None)
    monkeypatch.delenv("RAYAC_API_TOKEN", raising=False)
    assert main(["submit", "--follow"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == [
        "policy job-1: checkpoint ckpt_000000000010, 10 env steps",
        "act on it:",
        "  curl -s -X POST http://127.0.0.1:8000/v1/policies/job-1/act -H 'content-type: application/json' "
        '-d \'{"observations_b64": "<base64 of 4x84x84 uint8>"}\'',
    ]


def test_serve_prints_one_line_on_start(tmp_path, monkeypatch):
    from api.cli import startup_line
    from api.settings import Settings

    monkeypatch.setattr("os.cpu_count", lambda: 3)
    assert startup_line(Settings(storage_dir=tmp_path)) == (
        f"rayac serve: http://127.0.0.1:8000/ (dashboard; API under /v1)  storage {tmp_path}  no token (loopback "
        "only)  Ray: its own local head, 6 CPUs (RAYAC_HEAD_CPUS), started at the first job"
    )
    (tmp_path / "ray_head.json").write_text(json.dumps({"gcs_address": "127.0.0.1:6123"}))
    assert startup_line(Settings(storage_dir=tmp_path, api_token="x", host="0.0.0.0", port=9000)) == (
        f"rayac serve: http://0.0.0.0:9000/ (dashboard; API under /v1)  storage {tmp_path}  token required "
        f"(RAYAC_API_TOKEN)  Ray: its own head at 127.0.0.1:6123 (from {tmp_path / 'ray_head.json'})"
    )
    assert startup_line(Settings(ray_address="10.0.0.2:6379")).endswith("Ray: 10.0.0.2:6379 (RAY_ADDRESS)")


def test_the_services_own_head_starting_is_news_not_a_warning(capsys, monkeypatch):
    """A newcomer saw `WARNING api.services.ray_cluster: started a local Ray head …` on a normal first job."""
    import logging

    from api.cli import announce_head

    logger = logging.getLogger("api.services.ray_cluster")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    announce_head()
    announce_head()  # once per process, however often serve is set up
    logger.info("started its Ray head at %s (Ray dashboard %s)", "127.0.0.1:6123", "http://127.0.0.1:8265")
    logger.warning("the Ray head at x was started without token auth")
    out, err = capsys.readouterr()
    assert (
        out == "rayac serve: started its Ray head at 127.0.0.1:6123 (Ray dashboard http://127.0.0.1:8265)\n"
    )
    assert err == "WARNING api.services.ray_cluster: the Ray head at x was started without token auth\n"


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"RAYAC_MAX_WORKERS_PER_JOB": "lots"}, "rayac: error: RAYAC_MAX_WORKERS_PER_JOB: Input should be a valid "
         "integer, unable to parse string as an integer (it is 'lots')"),
        ({"RAYAC_HEAD_CPUS": "0"}, "rayac: error: RAYAC_HEAD_CPUS: Input should be greater than or equal to 1 (it is '0')"),
        ({"RAYAC_API_TOKEN": "a secret"}, "rayac: error: RAYAC_API_TOKEN: must be printable ASCII without spaces "
         "(it travels in an HTTP header)"),
        ({}, "rayac: error: --port: Input should be less than or equal to 65535"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_named_as_the_operator_wrote_it(capsys, monkeypatch, env, line):
    for key in list(os.environ):
        if key.startswith("RAYAC_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    port = [] if env else ["--port", "70000"]
    assert main(["serve", "--stop-head", *port]) == 2
    assert capsys.readouterr().err == line + "\n"


def test_docs_name_only_commands_flags_and_make_targets_that_exist():
    """`rayac CMD --flag` and `make TARGET` in the docs, docstrings, comments and cluster files must exist."""
    import argparse
    import re

    root = RAYAC.parent
    subparsers = next(a for a in rayac.cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {
        name: {o for a in sp._actions for o in a.option_strings} for name, sp in subparsers.choices.items()
    }
    targets = set(re.findall(r"^([a-z][\w-]*):", (root / "Makefile").read_text(), re.M))
    paths = [root / "README.md", root / "Makefile"]
    paths += [p for d in ("rayac", "api", "benchmarks", "cluster") for p in sorted((root / d).rglob("*"))
              if p.suffix in (".py", ".md", ".yaml", ".sh", ".js", ".html")]  # fmt: skip
    wrong = []
    for path in paths:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(root)}:{n}"
            for m in re.finditer(
                r"(`?)\brayac ([a-z][\w-]*)((?:[ \t]+(?:--?[\w-]+|[^\s`'\"|)#-][^\s`'\"|)]*))*)", line
            ):
                quoted, cmd, rest = m.groups()
                if cmd not in flags:
                    if quoted:  # prose such as "rayac never imports api" is not a command
                        wrong.append(f"{where}: no command `rayac {cmd}`")
                    continue
                wrong += [f"{where}: `rayac {cmd}` has no {flag}"
                          for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest) if flag not in flags[cmd]]  # fmt: skip
            wrong += [
                f"{where}: no make target {t}"
                for t in re.findall(r"`make ([a-z][\w-]*)", line)
                if t not in targets
            ]
    assert wrong == []


def test_serve_says_on_stop_that_its_head_and_jobs_keep_running(tmp_path, monkeypatch):
    """A newcomer's Ctrl-C ended `rayac serve` without a word, while its Ray head and a job went on running."""
    from api.cli import shutdown_line
    from api.settings import Settings

    assert shutdown_line(Settings(storage_dir=tmp_path), 0) == "rayac serve: stopped"  # no head was started
    (tmp_path / "ray_head.json").write_text(json.dumps({"gcs_address": "127.0.0.1:6123",
                                                        "dashboard_url": "http://127.0.0.1:8265"}))  # fmt: skip
    monkeypatch.setattr(
        "api.services.ray_cluster.dashboard_alive", lambda url, timeout=2.0, headers=None: True
    )
    assert shutdown_line(Settings(storage_dir=tmp_path), 2, storage_flag="data") == (
        "rayac serve: stopped; its Ray head at 127.0.0.1:6123 keeps running with 2 unfinished jobs: "
        "`rayac serve --storage data` follows them again, `rayac serve --storage data --stop-head` stops the head "
        "and them"
    )
    assert shutdown_line(Settings(storage_dir=tmp_path), 0) == (
        "rayac serve: stopped; its Ray head at 127.0.0.1:6123 keeps running (idle): `rayac serve --stop-head` "
        "stops the head"
    )
    monkeypatch.setattr(
        "api.services.ray_cluster.dashboard_alive", lambda url, timeout=2.0, headers=None: False
    )
    assert shutdown_line(Settings(storage_dir=tmp_path), 2) == "rayac serve: stopped"  # the head is gone too
    assert shutdown_line(Settings(ray_address="10.0.0.2:6379"), 1) == (
        "rayac serve: stopped; its 1 unfinished job keeps running on the Ray cluster at 10.0.0.2:6379 "
        "(`rayac serve` follows them again)"
    )


def test_ctrl_c_stops_serve_with_one_line_and_exit_0(tmp_path):
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "rayac.cli", "serve", "--port", str(port), "--storage",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().startswith(f"rayac serve: http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # serving: the port answers
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "rayac serve: stopped\n"
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("status", "detail", "line"),
    [
        (422, "config.resources.num_workers: the job needs 64 CPUs",
         "rayac: error: config.resources.num_workers: the job needs 64 CPUs"),
        (401, "missing or invalid bearer token",
         "rayac: error: missing or invalid bearer token (HTTP 401: pass --token, or set RAYAC_API_TOKEN)"),
        (503, "the Ray cluster is not reachable", "rayac: error: the service answered HTTP 503: the Ray cluster is "
         "not reachable"),
    ],
)  # fmt: skip
def test_submit_refused_by_the_service_is_what_it_said_without_a_bare_status(capsys, monkeypatch, status, detail,
                                                                            line):  # fmt: skip
    """A newcomer read `rayac: error: 422: config…` and did not know what 422 was."""
    real_client = httpx.Client
    handler = lambda request: httpx.Response(status, json={"detail": detail})  # noqa: E731
    monkeypatch.setattr(
        httpx, "Client", lambda **kw: real_client(transport=httpx.MockTransport(handler), **kw)
    )
    assert main(["submit", "--preset", "a2c_cartpole"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == line + "\n"
