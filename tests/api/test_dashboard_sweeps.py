"""The dashboard's sweep page in headless Chromium: the trial table sorted by the metric (and by any column on a
click), every trial's curve on one chart with the best drawn thick and the early-stopped ones dashed and named
so, and a link from each trial to its job page. The service runs in this process with a fake Ray (no jobs run);
the sweep is its sweep.json and one run dir of metrics per trial, as `rayac sweep` leaves them."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pytest

import rayac
from api.services.sweeps import SweepRecord
from rayac.sweep import SweepSpec
from tests.api.test_dashboard import browser, css, shot, wait  # noqa: F401 - browser is a fixture
from tests.api.test_dashboard_deployments import page_service, text  # noqa: F401 - page_service is a fixture

pytestmark = [pytest.mark.timeout(300)]

SWEEP = "sweep-0123456789ab"
# trial -> (learning rate, status, eval returns every 2,000 env steps)
TRIALS = {
    "t_good": (0.002, "succeeded", [30.0, 120.0, 300.0, 480.0, 500.0]),
    "t_slow": (1e-05, "stopped_early", [20.0, 22.0]),
    "t_mid": (0.05, "succeeded", [40.0, 90.0, 150.0, 200.0, 210.0]),
}


def write_sweep(app, storage: Path) -> None:
    base = rayac.build_config(preset="a2c_cartpole").model_dump(mode="json")
    spec = SweepSpec(base=base, search=["optim.lr=loguniform(1e-5,1e-1)"], samples=3, scheduler="asha")
    sweep_dir = storage / "sweeps" / SWEEP
    trials = []
    for trial, (lr, status, evals) in TRIALS.items():
        run_dir = sweep_dir / "trials" / trial
        run_dir.mkdir(parents=True)
        steps = [2000 * (i + 1) for i in range(len(evals))]
        lines = []
        for step, ret in zip(steps, evals, strict=True):  # a training record, then one with the evaluation
            lines.append({"time/env_steps": step - 1000, "rollout/episode_return_mean": ret / 2})
            lines.append({"time/env_steps": step, "eval/return_mean": ret})
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        trials.append({"id": trial, "config": {"optim.lr": lr}, "config_history": [], "status": status,
                       "best": max(evals), "env_steps": steps[-1], "run_dir": str(run_dir)})  # fmt: skip
    doc = {"state": "finished", "metric": "eval/return_mean", "mode": "max", "best_trial": "t_good",
           "trials": trials}  # fmt: skip
    (sweep_dir / "sweep.json").write_text(json.dumps(doc))
    now = time.time()
    app.state.sweeps.store.insert(
        SweepRecord(SWEEP, "lr-sweep", "succeeded", asdict(spec), str(sweep_dir), now, now, None)
    )


def rows(driver) -> list[list[str]]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#trials-body tr')].map(r => [r.dataset.trial, r.className])"
    )


def test_the_sweep_page_in_a_real_browser(page_service, browser, tmp_path):  # noqa: F811
    url, app = page_service
    write_sweep(app, Path(app.state.settings.storage_dir))
    d = browser

    # -- the list: the sweep, its status and its best value; a click opens it
    d.get(f"{url}/#/sweeps")
    row = f'[data-sweep-id="{SWEEP}"]'
    wait(d, lambda d: text(d, row) is not None and "500" in text(d, row), 30, "the sweep in the list")
    assert "lr-sweep" in text(d, row) and "3/3" in text(d, row) and "asha" in text(d, row)
    css(d, row).click()
    wait(
        d, lambda d: d.current_url.endswith(f"#/sweeps/{SWEEP}") and len(rows(d)) == 3, 30, "the trial table"
    )

    # -- the table: best first by the metric, the best row marked, the searched value and statuses shown
    assert [t for t, _ in rows(d)] == ["t_good", "t_mid", "t_slow"]
    assert dict(rows(d))["t_good"] == "best" and dict(rows(d))["t_slow"] != "best"
    slow = '#trials-body tr[data-trial="t_slow"]'
    assert "stopped_early" in text(d, slow) and "1.00e-5" in text(d, slow) and "4,000" in text(d, slow)
    assert "Best eval/return_mean" in text(d, "table.trials thead")

    # -- the chart: one series per trial, every evaluation on it, the best thick, early-stopped dashed
    wait(
        d, lambda d: d.execute_script("return window.rayacSweep.plot()?.series.length") == 4, 30, "the chart"
    )
    series = d.execute_script("return window.rayacSweep.plot().series.slice(1).map(s => "
                              "({label: s.label, width: s.width, dash: s.dash || null}))")  # fmt: skip
    by_label = {s["label"]: s for s in series}
    assert set(by_label) == {"★ t_good", "t_slow (stopped early)", "t_mid"}
    assert by_label["★ t_good"]["width"] > by_label["t_mid"]["width"] and by_label["t_mid"]["dash"] is None
    assert by_label["t_slow (stopped early)"]["dash"]
    data = d.execute_script("return window.rayacSweep.plot().data")
    assert data[0] == [2000, 4000, 6000, 8000, 10000]  # evaluations only: training records carry no metric
    labels = [s["label"] for s in series]
    assert data[1 + labels.index("★ t_good")] == [30, 120, 300, 480, 500]
    assert data[1 + labels.index("t_slow (stopped early)")] == [20, 22, None, None, None]
    assert d.execute_script("return document.querySelector('#stop-sweep').disabled")  # a finished sweep
    assert "best: t_good" in text(d, "#sweep-summary")
    legend = text(d, ".u-legend").replace(" ", "")  # each trial's newest value, without hovering
    assert "★t_good500" in legend and "t_slow(stoppedearly)22" in legend and "t_mid210" in legend
    shot(d, tmp_path, "sweep-page")

    # -- sorting: a click on the searched key sorts by it (largest first), a second click flips it
    css(d, 'th[data-sort="config.optim.lr"]').click()
    assert [t for t, _ in rows(d)] == ["t_mid", "t_good", "t_slow"]
    css(d, 'th[data-sort="config.optim.lr"]').click()
    assert [t for t, _ in rows(d)] == ["t_slow", "t_good", "t_mid"]
    assert "▲" in text(d, 'th[data-sort="config.optim.lr"]')

    # -- each trial's id opens its job page: the trial is a job, its metrics stream there
    css(d, f'{slow} a[href="#/jobs/{SWEEP}-t_slow"]').click()
    wait(d, lambda d: "trial t_slow" in (text(d, "h1") or ""), 30, "the trial's job page")
    wait(d, lambda d: d.execute_script("return window.rayacData?.x.length") == 4, 30, "the trial's records")
    assert not [e for e in d.get_log("browser") if e["level"] == "SEVERE"], "errors in the page's console"
