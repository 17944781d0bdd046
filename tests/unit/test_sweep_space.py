"""Sweep search spaces are checked against the config schema before anything runs: every error names the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rayac.config import ConfigError, load_preset
from rayac.sweep import SearchDim, SweepSpec, parse_search, sweep_table, tune_space

BASE = load_preset("a2c_cartpole")


def test_specs_parse_into_dimensions_of_each_kind() -> None:
    dims = parse_search(["optim.lr=loguniform(1e-5,1e-1)", "algo.gamma=uniform(0.9, 0.999)",
                         "algo.rollout_steps=randint(4,17)", "model.hidden_sizes=choice([64, 64], [128])",
                         "optim.name=choice(adam,rmsprop)"], BASE)  # fmt: skip
    assert dims == [
        SearchDim("optim.lr", "loguniform", (1e-5, 0.1)),
        SearchDim("algo.gamma", "uniform", (0.9, 0.999)),
        SearchDim("algo.rollout_steps", "randint", (4, 17)),
        SearchDim("model.hidden_sizes", "choice", ([64, 64], [128])),
        SearchDim("optim.name", "choice", ("adam", "rmsprop")),
    ]


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        ("algo.gama=uniform(0.9,0.99)", "algo.gama", "unknown field (did you mean 'algo.gamma'?)"),
        ("optim.lr=loguniform(0,0.1)", "optim.lr", "bounds must be > 0"),
        ("optim.lr=uniform(0.1,0.01)", "optim.lr", "lo must be below hi"),
        ("optim.lr=loguniform(1e-5,5)", "optim.lr", "less than or equal to 1"),  # the schema's own bound
        ("optim.lr=uniform(a,b)", "optim.lr", "'a' is not a number"),
        ("optim.lr=choice(fast,slow)", "optim.lr", "valid number"),
        ("algo.rollout_steps=randint(1.5,8)", "algo.rollout_steps", "two integers"),
        ("algo.rollout_steps=uniform(2,8)", "algo.rollout_steps", "valid integer"),
        ("optim.lr=normal(0,1)", "optim.lr", "choice(a,b,…), uniform(lo,hi)"),
        ("optim.lr", "--search", "expected KEY=SPEC"),
        ("optim.lr=choice()", "optim.lr", "at least one value"),
    ],
)
def test_a_bad_search_space_names_the_field(item: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_search([item], BASE)
    assert err.value.field == field and words in err.value.message, str(err.value)


def test_pbt_perturbs_only_what_a_resumed_run_can_change() -> None:
    parse_search(["optim.lr=loguniform(1e-4,1e-2)", "algo.ent_coef=uniform(0,0.05)"], BASE, scheduler="pbt")
    with pytest.raises(ConfigError, match="PBT perturbs only") as err:
        parse_search(["env.num_envs=choice(8,16)"], BASE, scheduler="pbt")
    assert err.value.field == "env.num_envs"


def test_grid_takes_listed_values_only() -> None:
    space = tune_space(parse_search(["optim.lr=choice(0.001,0.002)"], BASE), "grid")
    assert space["optim.lr"] == {"grid_search": [0.001, 0.002]}
    with pytest.raises(ConfigError, match="grid takes choice"):
        tune_space(parse_search(["optim.lr=uniform(0.001,0.002)"], BASE), "grid")


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"scheduler": "hyperband"}, "--scheduler"), ({"mode": "maximum"}, "--mode"), ({"samples": 0}, "--samples"),
     ({"search_alg": "bayes"}, "--search-alg"), ({"search": []}, "--search"),
     ({"base": {**BASE, "run": {**BASE["run"], "eval_interval_steps": 0}}}, "--metric")],
)  # fmt: skip
def test_sweep_options_are_checked(changes: dict, field: str) -> None:
    spec = SweepSpec(base=BASE, search=["optim.lr=loguniform(1e-4,1e-2)"])
    for key, value in changes.items():
        setattr(spec, key, value)
    with pytest.raises(ConfigError) as err:
        spec.validate()
    assert err.value.field == field


@pytest.mark.parametrize(
    ("item", "line"),
    [
        # a non-numeric value, an unknown key, a bad bound
        ("optim.lr=uniform(x,0.1)", "optim.lr: uniform(lo,hi) takes two numbers; 'x' is not a number"),
        ("optim.lrx=uniform(0.01,0.1)", "optim.lrx: unknown field (did you mean 'optim.lr'?)"),
        ("optim.lr=loguniform(0,0.1)", "optim.lr: loguniform(0,0.1): bounds must be > 0"),
    ],
)
def test_the_cli_refuses_a_bad_space_with_one_line_and_exit_2(tmp_path, item: str, line: str) -> None:
    done = subprocess.run([sys.executable, "-m", "rayac.cli", "sweep", "--preset", "a2c_cartpole", "--search",
                           item, "--sweep-dir", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"rayac: error: {line}"]
    assert not (tmp_path / "s").exists()  # nothing written, nothing started


def test_the_console_table_marks_the_best_trial() -> None:
    doc = {"metric": "eval/return_mean", "best_trial": "b",
           "trials": [{"id": "a", "config": {"optim.lr": 1e-5}, "status": "stopped_early", "env_steps": 4000, "best": 9.0},
                      {"id": "b", "config": {"optim.lr": 2e-3}, "status": "succeeded", "env_steps": 20000, "best": 500.0}]}  # fmt: skip
    rows = sweep_table(json.loads(json.dumps(doc)))
    assert rows[0] == ["trial", "optim.lr", "status", "env steps", "best eval/return_mean"]
    assert rows[1] == ["a", "1e-05", "stopped_early", "4,000", "9.0"]
    assert rows[2] == ["b *", "0.002", "succeeded", "20,000", "500.0"]


def test_optuna_without_its_extra_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna → ImportError
    spec = SweepSpec(base=BASE, search=["optim.lr=loguniform(1e-4,1e-2)"], search_alg="optuna")
    with pytest.raises(ConfigError, match=r"pip install 'rayac\[optuna\]'") as err:
        spec.validate()
    assert err.value.field == "--search-alg"


def test_a_config_error_survives_tunes_copy_of_a_failed_trials_error() -> None:
    """Tune copies a trial's exception (copy.copy, then pickles it to the driver). ConfigError's two arguments made
    that copy raise a TypeError, and the sweep hung with its other trial 'running' after the failure."""
    import copy
    import pickle

    err = ConfigError("run.run_dir", "/x has no checkpoint to resume from")
    for again in (copy.copy(err), pickle.loads(pickle.dumps(err))):
        assert type(again) is ConfigError and str(again) == "run.run_dir: /x has no checkpoint to resume from"
        assert (again.field, again.message) == (err.field, err.message)
