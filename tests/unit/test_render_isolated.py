"""Rendering cannot take the service down (issue 20, item 9): an episode renders in a process of its own, so a
renderer that aborts costs that process; with no GL backend that works the answer is a JSON 501 naming the reason
and the setting, as often as it is asked. In-process service (an abort here would end this test run)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import api.services.episodes as episodes
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
    assert episodes.gl_backends() == [None, "egl", "osmesa"]  # each was tried, in that order


def test_a_real_render_runs_in_its_own_process(app, monkeypatch):
    seen = []
    real_run = episodes.subprocess.run
    monkeypatch.setattr(
        episodes.subprocess, "run", lambda cmd, **kw: (seen.append(cmd), real_run(cmd, **kw))[1]
    )
    with TestClient(app, headers=AUTH) as c:
        resp = c.get("/v1/policies/job-p/episode.gif", params={"seed": 3})
    assert resp.status_code == 200 and resp.content[:4] == b"GIF8"
    assert seen and seen[0][2] == "api.services.render_worker"


def test_evaluate_gif_that_cannot_render_is_one_line_not_a_traceback(
    trained_run,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    import rayac.evaluate

    def no_gl(*_, **__):
        raise RuntimeError("gladLoadGL error")

    monkeypatch.setattr(rayac.evaluate, "render_gif", no_gl)
    code = main(["evaluate", str(trained_run), "--episodes", "1", "--gif", str(tmp_path / "a.gif")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("rayac: error: --gif:") and "MUJOCO_GL" in err
