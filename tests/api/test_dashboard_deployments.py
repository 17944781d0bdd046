"""The dashboard's deployments in headless Chromium: deploy from a job's checkpoint table, a new version of the
same name, see the versions, roll back. The service runs in this process with a fake job client (no Ray); the
job is a run dir of constructed checkpoints."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn

import rayac
from api.app import create_app
from api.services.store import JobRecord
from api.settings import Settings
from tests.api.conftest import free_port
from tests.api.test_dashboard import browser, css, shot, wait  # noqa: F401 - browser is a fixture
from tests.constructed import make_run
from tests.unit.test_dashboard_routes import FakeCluster, FakeRay

pytestmark = [pytest.mark.timeout(300)]


class LogsRay(FakeRay):
    def get_job_logs(self, job_id):
        return "done\n"


class LogsCluster(FakeCluster):
    def client(self):
        return LogsRay()


@pytest.fixture
def page_service(tmp_path):
    settings = Settings(storage_dir=tmp_path / "storage", host="127.0.0.1", port=free_port())
    app = create_app(settings, cluster=LogsCluster())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{settings.port}", app
    server.should_exit = True
    thread.join(timeout=10)


def text(driver, selector: str) -> str | None:
    """The element's text read in one script call (the cards are re-rendered: no stale element in between)."""
    return driver.execute_script("return document.querySelector(arguments[0])?.textContent ?? null", selector)


def test_deploy_see_versions_and_roll_back_in_the_browser(page_service, browser, tmp_path):  # noqa: F811
    url, app = page_service
    run = make_run(tmp_path / "run", "cartpole", steps=(1000, 2000, 3000), evals=(10.0, 50.0, 20.0))
    now = time.time()
    app.state.jobs.store.insert(JobRecord("job-web", "web", "succeeded", rayac.Config().model_dump(mode="json"),
                                          str(run), now, now, None))  # fmt: skip
    d = browser
    d.get(f"{url}/#/jobs/job-web")
    wait(
        d, lambda d: len(d.find_elements("css selector", "#deploy-checkpoint option")) == 5, 30, "the choices"
    )
    css(d, "#deploy-name").send_keys("web")
    d.find_elements("css selector", "#job-checkpoints button.deploy-row")[0].click()  # the 1000-step row
    assert css(d, "#deploy-checkpoint").get_attribute("value") == "1000"
    css(d, "#deploy-btn").click()
    wait(d, lambda d: "web v1: ckpt_000000001000" in text(d, "#deploy-result"), 30, "v1 deployed")
    css(d, "#deploy-btn").click()  # again without 'new version': the 409 is explained
    wait(d, lambda d: "tick 'new version'" in text(d, "#deploy-result"), 30, "the 409")
    d.execute_script("const s = document.querySelector('#deploy-checkpoint'); s.value = 'best';")
    css(d, "#deploy-replace").click()
    css(d, "#deploy-btn").click()
    wait(d, lambda d: "web v2: ckpt_000000002000" in text(d, "#deploy-result"), 30, "v2 deployed")
    shot(d, tmp_path, "job-deploy", "#deploy-result")

    d.get(f"{url}/#/deployments")
    wait(d, lambda d: d.find_elements("css selector", '[data-name="web"] .version'), 30, "the deployment")
    assert text(d, '[data-name="web"] .version') == "v2"
    rows = d.find_elements("css selector", '[data-name="web"] tbody tr')
    assert [r.get_attribute("data-version") for r in rows] == ["2", "1"]
    css(d, '[data-name="web"] button.rollback').click()
    wait(d, lambda d: text(d, '[data-name="web"] .version') == "v1", 30, "rolled back")
    assert not css(d, '[data-name="web"] button.rollback').is_enabled()  # v1 is the first
    served = httpx.get(f"{url}/v1/deployments/web", timeout=30).json()
    assert (served["version"], served["checkpoint"]) == (1, "ckpt_000000001000")
    css(d, '[data-name="web"] tr[data-version="2"] button.serve-version').click()
    wait(d, lambda d: text(d, '[data-name="web"] .version') == "v2", 30, "v2 served again")
    shot(d, tmp_path, "deployments")
    errors = [
        e["message"]
        for e in d.get_log("browser")
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]  # (a resource that failed to load: the deliberate 409)
    assert not errors, errors  # no JavaScript errors
