"""IMPALA's config fields: a bad value stops the CLI with one line naming the field (exit 2) and gets a 422
naming it from the REST API; the V-trace fields reach the loss."""

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from rayac.config import build_config

from .test_config_cli import run_cli
from .test_dashboard_routes import AUTH, TOKEN, FakeCluster

BAD = [
    ("algo.rho_bar=0", "algo.rho_bar", "greater than 0"),
    ("algo.c_bar=-1", "algo.c_bar", "greater than 0"),
    ("algo.vtrace_lambda=1.5", "algo.vtrace_lambda", "less than or equal to 1"),
    ("algo.learner_batch_rollouts=0", "algo.learner_batch_rollouts", "greater than or equal to 1"),
    ("algo.max_lag=-1", "algo.max_lag", "greater than or equal to 0"),
    ("algo.rollout_queue_size=0", "algo.rollout_queue_size", "greater than or equal to 1"),
    ("algo.estimator=q", "algo.estimator", "does not apply to impala"),
    ("algo.batch_mode=episodes", "algo.batch_mode", "fixed-length rollouts"),
]


@pytest.mark.parametrize(("override", "field", "words"), BAD)
def test_bad_impala_fields_exit_2_naming_the_field(capsys, tmp_path, override, field, words):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--preset", "impala_cartpole", "--set", override,
                           "--run-dir", str(run_dir), "--no-progress")  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"rayac: error: {field}:") and words in lines[0], lines[0]
    assert not run_dir.exists()


def test_bad_impala_fields_get_422_naming_the_field(tmp_path):
    app = create_app(Settings(storage_dir=tmp_path / "storage", api_token=TOKEN), cluster=FakeCluster())
    with TestClient(app, headers=AUTH) as client:
        for override, field, words in BAD:
            key, value = override.split("=")
            value = {"q": "q", "episodes": "episodes"}.get(value) or float(value)
            if key in ("algo.learner_batch_rollouts", "algo.max_lag", "algo.rollout_queue_size"):
                value = int(value)
            config = {"algo": {"name": "impala", key.split(".")[1]: value}}
            resp = client.post("/v1/jobs/validate", json={"config": config})
            assert resp.status_code == 422, resp.text
            errors = {e["field"]: e["msg"] for e in resp.json()["errors"]}
            assert f"config.{field}" in errors and words in errors[f"config.{field}"], (override, errors)
        ok = client.post("/v1/jobs/validate", json={"config": {"algo": {"name": "impala", "max_lag": 3}}})
        assert ok.status_code == 200, ok.text


def test_good_impala_fields_are_kept():
    cfg = build_config(preset="impala_cartpole", overrides=["algo.rho_bar=2", "algo.c_bar=0.5",
                                                              "algo.vtrace_lambda=0.9", "algo.max_lag=4"])  # fmt: skip
    algo = cfg.algo
    assert (algo.name, algo.rho_bar, algo.c_bar, algo.vtrace_lambda, algo.max_lag) == (
        "impala",
        2,
        0.5,
        0.9,
        4,
    )
