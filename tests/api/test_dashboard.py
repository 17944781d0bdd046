"""The web dashboard in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

One walk through the page against the real service (token set, Ray head, real training jobs): enter the
token, submit a tiny job from a preset, watch its curves fill, see a validation error next to its field,
stop a second job (after dropping its metrics stream once: it must resume with no gaps), try a policy and
watch its episode. Every request the browser made is then checked: only this service, the token only in
the Authorization header, and every API call refused without it. Screenshots land in tmp_path.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import uvicorn

import rayac
from api.app import create_app
from api.services.store import JobRecord
from api.settings import Settings
from tests.api.conftest import TOKEN, free_port, small_job

pytestmark = [pytest.mark.timeout(600)]

WRONG_TOKEN = "not-the-token"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1100"]  # fmt: skip


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "needs Debian's chromium and chromium-driver: run `make system-deps`"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium  # given explicitly, so Selenium Manager never downloads a browser
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(executable_path=chromedriver), options=opts)
    driver.requests = []  # every request the page made, from the DevTools performance log
    driver.console = []
    yield driver
    driver.quit()


def drain_logs(driver) -> None:
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            req = msg["params"]["request"]
            driver.requests.append(
                (req["method"], req["url"], req.get("headers", {}), msg["params"].get("documentURL"))
            )
    driver.console += driver.get_log("browser")


def wait(driver, predicate, timeout: float = 60, what: str = ""):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: predicate(d))
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what or predicate}") from None


def shot(driver, tmp_path: Path, name: str, focus: str | None = None) -> None:
    """A screenshot of the window, scrolled to the top or to ``focus`` (a CSS selector)."""
    if focus:
        driver.execute_script("document.querySelector(arguments[0]).scrollIntoView({block: 'center'})", focus)
    else:
        driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(tmp_path / f"{name}.png"))


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def set_field(driver, dotted: str, value: str) -> None:
    el = css(driver, f'[id="f-{dotted}"]')
    el.clear()
    el.send_keys(value)


def points(driver, job_id: str) -> int:
    """Records the job page has received (and handed to its charts) for this job."""
    return driver.execute_script("const d = window.rayacData; return d && d.jobId === arguments[0] ? d.x.length : 0",
                                 job_id)  # fmt: skip


def test_dashboard_in_a_real_browser(service, browser, tmp_path):
    d = browser
    d.get(f"{service.url}/")

    # -- the token: asked once, kept in sessionStorage
    wait(d, lambda d: css(d, "#token-dialog").is_displayed(), what="the token dialog")
    css(d, "#token-input").send_keys(WRONG_TOKEN)
    css(d, "#token-submit").click()
    wait(d, lambda d: "refused" in css(d, "#token-error").text, what="a wrong token refused, and asked again")
    css(d, "#token-input").send_keys(TOKEN)
    css(d, "#token-submit").click()
    wait(d, lambda d: not css(d, "#token-dialog").is_displayed(), what="the dialog to close")
    assert d.execute_script("return sessionStorage.getItem('rayac.token')") == TOKEN
    assert d.execute_script("return localStorage.length + document.cookie.length") == 0

    # -- submit: a preset fills the form; a bad field gets its error next to it; then a tiny job
    d.get(f"{service.url}/#/submit")
    wait(d, lambda d: css(d, '[id="f-algo.gamma"]').get_attribute("value") == "0.99", what="the preset")
    assert d.execute_script("return sessionStorage.getItem('rayac.token')") == TOKEN  # not asked again
    set_field(d, "algo.gamma", "1.5")
    gamma_error = '[data-error-for="algo.gamma"]'
    wait(d, lambda d: "less than 1" in css(d, gamma_error).text, what="gamma's error next to it")
    assert "invalid" in css(d, '[data-field="algo.gamma"]').get_attribute("class")
    shot(d, tmp_path, "1-submit-validation-error", focus=gamma_error)
    # a field of a few values of mixed types (true, false or "auto") is a dropdown that keeps their types
    atari = css(d, '[id="f-env.atari"]')
    assert atari.tag_name == "select" and atari.get_attribute("value") == '"auto"'
    options = d.execute_script("return [...arguments[0].options].map(o => [o.value, o.text])", atari)
    assert options == [["true", "true"], ["false", "false"], ['"auto"', "auto"]]
    shot(d, tmp_path, "1b-submit-choice-dropdown", focus='[id="f-env.atari"]')
    set_field(d, "algo.gamma", "0.99")
    set_field(d, "run.stop.total_env_steps", "4000")
    set_field(d, "run.eval_interval_steps", "1000")
    set_field(d, "resources.num_workers", "0")
    css(d, "#job-name").clear()
    css(d, "#job-name").send_keys("browser-tiny")
    wait(
        d, lambda d: css(d, gamma_error).text == "" and css(d, "#form-status").text == "Valid.", what="valid"
    )
    css(d, "#submit-job").click()

    # -- the job page: live curves gain points until the job ends
    wait(d, lambda d: "#/jobs/job-" in d.current_url, what="the new job's page")
    job_id = d.current_url.rsplit("/", 1)[1]
    counts = [wait(d, lambda d: points(d, job_id), 120, "a first point")]
    wait(d, lambda d: css(d, "#stream-state").text == "finished", 240, "the job to finish")
    counts.append(points(d, job_id))
    wait(d, lambda d: css(d, "#job-status").text == "succeeded", 30, "succeeded")
    with service.client() as c:
        records = c.get(f"/v1/jobs/{job_id}/metrics").json()["records"]
        assert c.get(f"/v1/jobs/{job_id}").json()["name"] == "browser-tiny"
    assert 1 <= counts[0] < counts[1] == len(records) >= 40, counts  # it grew while we watched
    wait(d, lambda d: css(d, "#points").text == f"{len(records)} records", 10, "the charts' redraw")
    assert d.execute_script("return rayacData.ids") == list(range(len(records)))
    evals = d.execute_script("return rayacData.series[1][0].filter(v => v !== null).length")
    assert evals == sum("eval/return_mean" in r for r in records) >= 4
    wait(d, lambda d: "ckpt_" in css(d, "#job-checkpoints").text, 30, "the checkpoint row")
    assert '"total_env_steps": 4000' in css(d, "#job-config").text
    assert '"atari": "auto"' in css(d, "#job-config").text  # the dropdown sent the string, not JSON text
    wait(d, lambda d: "done" in css(d, "#job-logs").text, 30, "the log tail")
    shot(d, tmp_path, "2-job-finished")
    shot(d, tmp_path, "2b-job-charts", focus="#chart-losses")
    check_charts(d, records)

    # -- a second, long job: its stream is dropped once and resumes without gaps; then the stop button
    with service.client() as c:
        long_job = c.post(
            "/v1/jobs", json=small_job(steps=2_000_000, run__stop={"total_env_steps": 2_000_000})
        ).json()
    d.get(f"{service.url}/#/jobs/{long_job['id']}")
    wait(d, lambda d: points(d, long_job["id"]) >= 3, 120, "the long job's first points")
    d.execute_script("rayacStream.drop()")
    before = points(d, long_job["id"])
    wait(d, lambda d: d.execute_script("return rayacStream.reconnects") >= 1, 30, "a reconnect")
    wait(d, lambda d: points(d, long_job["id"]) >= before + 3, 60, "points after it")
    wait(d, lambda d: css(d, "#stop-job").is_enabled(), 30, "the stop button")
    css(d, "#stop-job").click()
    wait(d, lambda d: css(d, "#job-status").text == "stopped", 60, "the job to stop")
    wait(d, lambda d: css(d, "#stream-state").text == "finished", 60, "its stream to end")
    ids = d.execute_script("return rayacData.ids")
    assert ids == list(range(len(ids))) and d.execute_script("return rayacStream.gaps") == 0
    assert not css(d, "#stop-job").is_enabled()
    shot(d, tmp_path, "3-job-stopped")

    # -- the jobs table lists both, newest first, with their numbers
    d.get(f"{service.url}/#/jobs")
    row = f'tr[data-job-id="{job_id}"]'
    wait(d, lambda d: d.find_elements("css selector", row), 30, "the job's row")
    cells = [td.text for td in d.find_elements("css selector", f"{row} td")]
    assert cells[0] == "browser-tiny" and cells[1] == "succeeded" and cells[2:4] == ["a2c", "CartPole-v1"]
    assert cells[4] == f"{records[-1]['time/env_steps']:,}" and "–" not in cells[5:7]  # steps, both returns
    long_row = f'tr[data-job-id="{long_job["id"]}"]'
    assert "stopped" in css(d, long_row).text
    order = [r.get_attribute("data-job-id") for r in d.find_elements("css selector", "#jobs-body tr")]
    assert order.index(long_job["id"]) < order.index(job_id)
    shot(d, tmp_path, "4-jobs")

    # -- policies: try it, and watch an episode
    d.get(f"{service.url}/#/policies")
    card = f'.policy[data-policy-id="{job_id}"]'
    wait(d, lambda d: d.find_elements("css selector", card), 30, "the policy card")
    assert css(d, f"{card} .policy-name").text == "browser-tiny"  # the job's name, its id beside it
    assert css(d, f"{card} .policy-id").text == job_id
    css(d, f"{card} .try-it").click()
    obs = [0.01, 0.2, -0.03, -0.3]
    area = css(d, f"{card} textarea.obs")
    area.clear()
    area.send_keys(json.dumps(obs))
    css(d, f"{card} button.act").click()
    wait(d, lambda d: css(d, f"{card} .action").text != "", 30, "the action")
    local = rayac.load_policy(service.storage / "runs" / job_id)
    x = np.asarray([obs], np.float32)
    assert css(d, f"{card} .action").text == str(int(local.act(x)[0]))
    assert float(css(d, f"{card} .value").text) == pytest.approx(float(local.values(x)[0]), abs=1e-3)
    meters = d.execute_script(f"return [...document.querySelectorAll('{card} meter')].map(m => m.value)")
    np.testing.assert_allclose(meters, local.action_probs(x)[0], atol=1e-5)
    css(d, f"{card} input.seed").clear()
    css(d, f"{card} input.seed").send_keys("3")
    css(d, f"{card} button.watch").click()
    img = f"{card} .gif img"
    wait(d, lambda d: d.execute_script(f"const i = document.querySelector('{img}'); return i && i.naturalWidth"),
         120, "the episode GIF")  # fmt: skip
    assert "steps" in css(d, f"{card} .gif .muted").text
    shot(d, tmp_path, "5-policies")

    # -- every request: this service only; the token only ever in the Authorization header
    drain_logs(d)
    origin = f"127.0.0.1:{service.port}"
    api_calls, sent = set(), {}
    for method, url, headers, doc in d.requests:
        parts = urlsplit(url)
        # nothing leaves for the network but this service (chrome:// pages are the browser's own files:
        # the new-tab page it shows before the test navigates)
        assert parts.scheme in ("data", "blob", "chrome", "chrome-untrusted") or parts.netloc == origin, url
        if (doc or "").startswith(service.url):  # what our page loaded: only from here
            assert parts.scheme in ("data", "blob") or parts.netloc == origin, url
        assert TOKEN not in url
        if parts.scheme == "http" and parts.path.startswith("/v1/"):
            api_calls.add((method, parts.path + (f"?{parts.query}" if parts.query else "")))
            # none before the token was entered, the wrong one while it was refused, then the right one
            assert headers.get("Authorization") in (None, f"Bearer {WRONG_TOKEN}", f"Bearer {TOKEN}"), headers
            sent[headers.get("Authorization")] = sent.get(headers.get("Authorization"), 0) + 1
    assert 0 < sent[f"Bearer {WRONG_TOKEN}"] < 5 < sent[f"Bearer {TOKEN}"], (
        sent
    )  # asked again once, then kept
    paths = {p.split("?")[0] for _, p in api_calls}
    assert {"/v1/jobs", "/v1/config/schema", "/v1/presets", "/v1/jobs/validate", "/v1/policies",
            f"/v1/jobs/{job_id}/metrics/stream", f"/v1/jobs/{long_job['id']}/stop",
            f"/v1/policies/{job_id}/act", f"/v1/policies/{job_id}/episode.gif"} <= paths  # fmt: skip
    with httpx.Client(base_url=service.url, timeout=30) as anon:
        for method, path in sorted(api_calls):
            resp = anon.request(method, path, json={} if method == "POST" else None)
            assert resp.status_code == 401, (method, path, resp.status_code)
        for public in ("/", "/static/app.js", "/static/vendor/uplot/uPlot.iife.min.js"):
            resp = anon.get(public)
            assert resp.status_code == 200 and "job-" not in resp.text  # the page itself carries no data
    errors = [
        e["message"]
        for e in d.console
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]
    assert not errors, errors  # no JavaScript errors


def legend_number(v: float) -> str:
    """What the charts' legends print (jobs.js legendNumber): separators from 1,000, else 3 significant digits."""
    return f"{round(v):,}" if abs(v) >= 1000 else f"{float(f'{v:.3g}'):g}".replace("e+", "e")


def check_charts(d, records: list[dict]) -> None:
    """Read at a glance: returns drawn from 0, the value loss on its own (right) axis so that it does not flatten
    the policy loss and the entropy, and every legend showing the newest value without hovering."""
    scales = d.execute_script(
        "return rayacPlots.map(p => Object.fromEntries(Object.entries(p.scales).map(([k, s]) => [k, [s.min, s.max]])))"
    )
    evals = [r["eval/return_mean"] for r in records if "eval/return_mean" in r]
    episode = [r["rollout/episode_return_mean"] for r in records if "rollout/episode_return_mean" in r]
    assert scales[1]["y"][0] == 0 and scales[1]["y"][1] >= max(
        evals
    )  # eval: from 0, not from the lowest eval
    assert scales[0]["y"][0] == 0 and scales[0]["y"][1] >= max(episode)
    losses = {
        k: [r[k] for r in records if k in r]
        for k in ("train/policy_loss", "train/value_loss", "train/entropy")
    }
    low, high = scales[2]["y"]
    assert low <= min(losses["train/policy_loss"] + losses["train/entropy"])
    assert high >= max(losses["train/policy_loss"] + losses["train/entropy"])
    assert max(losses["train/value_loss"]) > high  # on one axis it would have squashed the other two
    assert (
        scales[2]["right"][0]
        <= min(losses["train/value_loss"])
        <= max(losses["train/value_loss"])
        <= scales[2]["right"][1]
    )
    series_scales = d.execute_script("return rayacPlots[2].series.map(s => s.scale)")
    assert series_scales == ["x", "y", "right", "y"]
    legends = d.execute_script(
        "return rayacPlots.map(p => [...p.root.querySelectorAll('.u-legend .u-series')].map(r => r.textContent))"
    )
    last = records[-1]
    assert (
        legends[1][1] == f"return_mean{legend_number(evals[-1])}"
    )  # the newest eval, on a record without one
    assert legends[0][1] == f"episode_return_mean{legend_number(episode[-1])}"
    assert legends[2][2] == f"value_loss{legend_number(last['train/value_loss'])}"
    assert legends[0][0] == f"env steps{legend_number(last['time/env_steps'])}"


@pytest.fixture
def open_service(tmp_path):
    """The service without a token, on loopback, in this process (no Ray needed: no job is submitted)."""
    settings = Settings(storage_dir=tmp_path / "storage", host="127.0.0.1", port=free_port())
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port,
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{settings.port}", app
    server.should_exit = True
    thread.join(timeout=10)


def test_dashboard_without_a_token_just_works(open_service, browser, tmp_path):
    url, app = open_service
    d = browser
    d.get(f"{url}/")
    wait(d, lambda d: css(d, "#jobs-note").text == "No jobs yet.", 30, "the empty jobs list")
    now = time.time()  # a job appears (recorded directly: this service has no Ray): the table updates itself
    rec = JobRecord("job-appears", "appears", "failed", rayac.Config().model_dump(mode="json"),
                    str(tmp_path / "nowhere"), now, now, "boom")  # fmt: skip
    app.state.jobs.store.insert(rec)
    wait(d, lambda d: d.find_elements("css selector", 'tr[data-job-id="job-appears"]'), 30, "the new row")
    d.get(f"{url}/#/submit")
    wait(d, lambda d: css(d, '[id="f-env.id"]').get_attribute("value") == "CartPole-v1", 30, "the form")
    set_field(d, "env.id", "CartPol-v1")
    wait(
        d, lambda d: "did you mean 'CartPole-v1'" in css(d, '[data-error-for="env.id"]').text, 30, "the hint"
    )
    d.get(f"{url}/#/policies")
    wait(d, lambda d: "No trained policies yet" in css(d, "#policies").text, 30, "the empty policies list")
    assert not css(d, "#token-dialog").is_displayed()
    assert d.execute_script("return sessionStorage.length") == 0
    shot(d, tmp_path, "no-token-policies")
