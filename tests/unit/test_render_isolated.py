"""Rendering cannot take the service down (issue 20, item 9): an episode renders in a process of its own, so a
renderer that aborts costs that process; with no GL backend that works the answer is a JSON 501 naming the reason
and the setting, as often as it is asked. In-process service (an abort here would end this test run)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import rayac.render
from api.app import create_app
from api.settings import Settings
from rayac.cli import main
from tests.unit.test_checkpoint_rotation import trained_run  # noqa: F401 (a fixture)
from tests.unit.test_dashboard_routes import AUTH, TOKEN, FakeCluster, add_job


@pytest.fixture
def app(tmp_path, trained_run):  # noqa: F811
    app = create_app(Settings(storage_dir=tmp_path / "storage", api_token=TOKEN), cluster=FakeCluster())
    add_job(app, trained_run, name="p")
    return app


def test_a_renderer_that_aborts_is_a_json_501_and_the_service_lives_on(app, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    app.state.episodes.worker = "tests.unit.render_abort"
    with TestClient(app, headers=AUTH) as c:
        for seed in (1, 2):  # the second request used to kill `rayac serve`
            resp = c.get("/v1/policies/job-p/episode.gif", params={"seed": seed})
            assert resp.status_code == 501 and resp.headers["content-type"] == "application/json", resp.text
            detail = resp.json()["detail"]
            assert "MUJOCO_GL=egl" in detail and "osmesa" in detail and "gladLoadGL" in detail, detail
        assert c.get("/healthz").status_code == 200
    assert rayac.render.gl_backends() == [None, "egl", "osmesa"]  # each was tried, in that order


def test_a_real_render_runs_in_its_own_process(app, monkeypatch):
    seen = []
    real_run = rayac.render.subprocess.run
    monkeypatch.setattr(
        rayac.render.subprocess, "run", lambda cmd, **kw: (seen.append(cmd), real_run(cmd, **kw))[1]
    )
    with TestClient(app, headers=AUTH) as c:
        resp = c.get("/v1/policies/job-p/episode.gif", params={"seed": 3})
    assert resp.status_code == 200 and resp.content[:4] == b"GIF8"
    assert seen and seen[0][2] == "rayac.render"


def test_evaluate_gif_that_cannot_render_is_one_line_not_a_traceback(
    trained_run,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    """Every backend's render process aborts as MuJoCo does without GL: one line naming each reason and the
    setting, and no GIF or temp file left."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(rayac.render, "WORKER", "tests.unit.render_abort")
    code = main(["evaluate", str(trained_run), "--episodes", "1", "--gif", str(tmp_path / "a.gif")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(
        "rayac: error: --gif: CartPole-v1: this env cannot be rendered on this machine ("
    ), err
    assert "MUJOCO_GL=egl: mujoco.FatalError: gladLoadGL error" in err and "MUJOCO_GL=osmesa" in err, err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_gif_without_a_display_falls_back_to_headless_gl(trained_run, tmp_path, monkeypatch, capsys):  # noqa: F811
    """`replay it: rayac evaluate RUN --gif …`, pasted on a headless server after a MuJoCo run, failed: it rendered
    in its own process with GLFW. Now a render that fails for want of a display is tried again under EGL."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(rayac.render, "WORKER", "tests.unit.render_needs_egl")
    assert main(["evaluate", str(trained_run), "--episodes", "1", "--gif", str(tmp_path / "a.gif")]) == 0
    out = capsys.readouterr().out
    assert f"GIF: {tmp_path / 'a.gif'} (" in out and (tmp_path / "a.gif").read_bytes()[:4] == b"GIF8"
    assert list(tmp_path.iterdir()) == [tmp_path / "a.gif"]
