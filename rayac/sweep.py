"""Sweeps: Ray Tune trials of the same Runner, with early stopping (ASHA) or population-based training (PBT).

Each trial is a normal rayac run under ``SWEEP_DIR/trials/<trial id>`` (metrics.jsonl, checkpoints, TensorBoard),
so ``rayac evaluate`` and ``rayac plot`` work on it. ``SWEEP_DIR/sweep.json`` is rewritten as trials progress:

    {"metric", "mode", "scheduler", "search", "state": running|finished|interrupted, "best_trial",
     "trials": [{"id", "config", "config_history", "status", "best", "env_steps", "run_dir"}]}

PBT exploits through rayac's exact resume: the better trial's checkpoint is copied into the trial's run dir and
resumed with the perturbed values, which take effect (a resumed run's ``optim.lr`` is the configured one; the
optimiser's moments stay). Tune's own state lives in ``SWEEP_DIR/tune``; ``rayac sweep --resume SWEEP_DIR``
continues the unfinished trials from their latest rayac checkpoints and runs no finished trial again.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import logging
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from rayac.checkpoint import atomic_write_text, check_fresh_dir, make_dir
from rayac.config import Config, ConfigError, apply_overrides, parse_config

KINDS = ("choice", "uniform", "loguniform", "randint")
SPEC = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.S)
# What PBT may perturb mid-run: a resumed run takes these from its new config without rebuilding anything.
MUTABLE = ("optim.lr", "optim.actor_lr", "optim.critic_lr", "algo.ent_coef", "algo.vf_coef")
SCHEDULERS = ("none", "asha", "pbt")
SEARCH_ALGS = ("random", "grid", "optuna")
STATUSES = ("pending", "running", "succeeded", "stopped_early", "failed")
DONE_KEY = "rayac/done"  # the trial's last report: its Runner reached its own stop condition

# Tune's INFO lines from the trial actors ("Checkpoint successfully created at: …" at every PBT report, "Restored on
# … from checkpoint: …" at every exploit) reached the sweep's console as worker lines, after its summary too; the
# sweep table and each trial's run dir are the record. Set here: the trial actors import this module first.
for _name in ("ray.tune", "ray.train"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class SearchDim:
    """One searched config field: ``key`` (dotted), ``kind`` (one of KINDS) and its values or (lo, hi)."""

    key: str
    kind: str
    values: tuple[Any, ...]


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += config_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _split_args(text: str) -> list[str]:
    """``a, [1, 2], b`` → ['a', '[1, 2]', 'b']: commas inside brackets do not split."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip() or parts:
        parts.append(current)
    return [p.strip() for p in parts]


def _number(key: str, kind: str, raw: str) -> float | int:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(key, f"{kind}(lo,hi) takes two numbers; '{raw}' is not a number")
    return value


def parse_search(items: list[str], base: dict[str, Any], *, scheduler: str = "none") -> list[SearchDim]:
    """``KEY=SPEC`` strings → validated dimensions. Every value a trial could get is checked against the schema
    first (choice values one by one, a range at both bounds), so a bad space fails before anything runs."""
    known = config_keys()
    dims: list[SearchDim] = []
    for item in items:
        if "=" not in item:
            raise ConfigError("--search", f"'{item}': expected KEY=SPEC, e.g. optim.lr=loguniform(1e-5,1e-1)")
        key, spec = (s.strip() for s in item.split("=", 1))
        if key not in known and not key.startswith("env.kwargs."):
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(key, "unknown field" + (f" (did you mean '{close[0]}'?)" if close else ""))
        if any(d.key == key for d in dims):
            raise ConfigError(key, "searched twice")
        match = SPEC.match(spec)
        if not match or match.group(1) not in KINDS:
            raise ConfigError(key, f"'{spec}': the search spec is one of choice(a,b,…), uniform(lo,hi), "
                              "loguniform(lo,hi), randint(lo,hi)")  # fmt: skip
        kind, args = match.group(1), _split_args(match.group(2))
        if kind == "choice":
            if not args or any(a == "" for a in args):
                raise ConfigError(key, "choice(…) needs at least one value")
            values: tuple[Any, ...] = tuple(yaml.safe_load(a) for a in args)
            candidates = list(values)
        else:
            if len(args) != 2:
                raise ConfigError(key, f"{kind}(lo,hi) takes two numbers, got {len(args)}")
            lo, hi = (_number(key, kind, a) for a in args)
            if not lo < hi:
                raise ConfigError(key, f"{kind}({lo},{hi}): lo must be below hi")
            if kind == "loguniform" and lo <= 0:
                raise ConfigError(key, f"loguniform({lo},{hi}): bounds must be > 0")
            if kind == "randint" and not (isinstance(lo, int) and isinstance(hi, int)):
                raise ConfigError(key, f"randint({lo},{hi}) takes two integers")
            values = (lo, hi)
            if kind == "randint":
                candidates = [lo, hi - 1]  # randint's hi is excluded (Tune's)
            else:  # and a value in between, which is no integer: uniform(2,8) cannot feed an integer field
                mid = lo * (hi / lo) ** 0.371 if kind == "loguniform" else lo + (hi - lo) * 0.371
                candidates = [lo, hi, mid if mid != int(mid) else mid + 0.5 * (hi - mid)]
        for (
            value
        ) in candidates:  # the schema names the field and the problem (a string for a number, a bound)
            parse_config(apply_overrides(base, [f"{key}={json.dumps(value)}"]))
        if scheduler == "pbt" and key not in MUTABLE:
            raise ConfigError(key, f"PBT perturbs only fields a resumed run can change: {', '.join(MUTABLE)}")
        dims.append(SearchDim(key, kind, values))
    if not dims:
        raise ConfigError("--search", "give at least one KEY=SPEC to search")
    return dims


def tune_space(dims: list[SearchDim], search_alg: str) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {}
    for d in dims:
        if search_alg == "grid":
            if d.kind != "choice":
                raise ConfigError(
                    d.key, "--search-alg grid takes choice(…) only (a grid needs listed values)"
                )
            space[d.key] = tune.grid_search(list(d.values))
        elif d.kind == "choice":
            space[d.key] = tune.choice(list(d.values))
        else:
            space[d.key] = getattr(tune, d.kind)(*d.values)
    return space


# ----------------------------------------------------------------------------- one trial


def trial_run_dir(sweep_dir: Path, trial_id: str) -> Path:
    return sweep_dir / "trials" / trial_id


def install_checkpoint(src: Path, run_dir: Path) -> Path:
    """Make ``src`` (one rayac checkpoint, e.g. a PBT donor's) the latest of ``run_dir``: the run's own
    checkpoints are set aside first, since a newer one of its own would otherwise be resumed instead."""
    from rayac.checkpoint import CKPT_PREFIX

    state = json.loads((src / "state.json").read_text())
    ckpts = run_dir / "checkpoints"
    if ckpts.exists():
        shutil.rmtree(ckpts)
    dst = ckpts / f"{CKPT_PREFIX}{int(state['env_steps']):012d}"
    shutil.copytree(src, dst)
    return dst


def trim_records(run_dir: Path, env_steps: int) -> None:
    """A trial killed between checkpoints (a Ctrl-C of the sweep) wrote records its checkpoint does not hold;
    resuming it would write those steps again. Drop them from metrics.jsonl and progress.csv (streamed, atomic)."""
    import csv

    for name in ("metrics.jsonl", "progress.csv"):
        path = run_dir / name
        if not path.is_file():
            continue
        tmp = path.with_name(f".{name}.trim.tmp")
        with open(path, newline="") as src, open(tmp, "w", newline="") as dst:
            if name == "metrics.jsonl":
                for line in src:
                    if line.endswith("\n") and json.loads(line).get("time/env_steps", 0) <= env_steps:
                        dst.write(line)
            else:
                reader = csv.DictReader(src)
                writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
                writer.writeheader()
                writer.writerows(r for r in reader if float(r.get("time/env_steps") or 0) <= env_steps)
        os.replace(tmp, path)


def trial_config(base: dict[str, Any], searched: dict[str, Any], run_dir: Path) -> Config:
    overrides = [f"{k}={json.dumps(v)}" for k, v in searched.items()]
    overrides += [f"run.run_dir={json.dumps(str(run_dir))}", "run.progress_bar=false"]
    return parse_config(apply_overrides(base, overrides))


def run_trial(searched: dict[str, Any], *, base: dict[str, Any], sweep_dir: str, metric: str,
              checkpoint_every_report: bool) -> None:  # fmt: skip
    """The Tune trainable: one rayac run, reporting each record that carries ``metric`` (and its last one)."""
    from ray import tune
    from rich.console import Console

    from rayac.checkpoint import latest_checkpoint
    from rayac.runner import Runner

    run_dir = trial_run_dir(Path(sweep_dir), tune.get_context().get_trial_id())
    given = tune.get_checkpoint()  # a PBT exploit (the donor's), or this trial's own on a restore
    if given is not None:
        with given.as_directory() as folder:
            install_checkpoint(Path(folder), run_dir)
    cfg = trial_config(base, searched, run_dir)
    own = latest_checkpoint(run_dir)  # also a trial restarted by `--resume`, which has no Tune checkpoint
    if given is None and own is not None:
        trim_records(run_dir, json.loads((own / "state.json").read_text())["env_steps"])
    resume = own is not None

    def report(runner: Runner, record: dict[str, Any]) -> None:
        if metric not in record:
            return
        metrics = {k: v for k, v in record.items() if isinstance(v, int | float) and math.isfinite(v)}
        if checkpoint_every_report:
            path = runner.checkpoint(record["time/elapsed_s"])
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(path)))
        else:
            tune.report(metrics)

    quiet = Console(
        file=io.StringIO(), quiet=True
    )  # the sweep's table is the console; each run logs to its files
    runner = Runner(cfg, resume=resume, console=quiet, callbacks=[report])
    result = runner.run()
    final = {"time/env_steps": result.env_steps, DONE_KEY: 1}
    if runner.last_eval is not None:
        final["eval/return_mean"] = runner.last_eval
    tune.report(final)


# ----------------------------------------------------------------------------- sweep.json


class SweepRecorder:
    """A Tune callback that keeps ``sweep.json`` current: written atomically on every trial event."""

    def __init__(self, sweep_dir: Path, *, metric: str, mode: str, budget: int, info: dict[str, Any]):
        self.path, self.metric, self.mode, self.info = sweep_dir / "sweep.json", metric, mode, info
        self.budget = budget  # a trial's step budget: one that ASHA stopped at its max_t ran in full
        self.trials: dict[str, dict[str, Any]] = {}

    def load(self) -> None:
        """The file is the state: Tune restores its own pickled copy of this callback on ``--resume``, and
        both copies must see every trial."""
        self.trials = {}
        if self.path.is_file():
            with contextlib.suppress(ValueError, OSError):
                self.trials = {t["id"]: t for t in json.loads(self.path.read_text()).get("trials", [])}

    def _entry(self, trial: Any) -> dict[str, Any]:
        entry = self.trials.setdefault(trial.trial_id, {
            "id": trial.trial_id, "config": dict(trial.config), "config_history": [], "status": "pending",
            "best": None, "env_steps": 0, "run_dir": str(trial_run_dir(self.path.parent, trial.trial_id)),
        })  # fmt: skip
        config = dict(trial.config)
        if not entry["config_history"] or entry["config_history"][-1]["config"] != config:
            entry["config_history"].append({"env_steps": entry["env_steps"], "config": config})
        entry["config"] = config
        return entry

    def best_trial(self) -> str | None:
        scored = [t for t in self.trials.values() if t["best"] is not None]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda t: t["best"])["id"]

    def write(self, state: str = "running") -> dict[str, Any]:
        doc = {**self.info, "metric": self.metric, "mode": self.mode, "state": state,
               "best_trial": self.best_trial(), "trials": sorted(self.trials.values(), key=lambda t: t["id"])}  # fmt: skip
        atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")
        return doc

    def started(self, trial: Any) -> None:
        self.load()
        self._entry(trial)["status"] = "running"
        self.write()

    def result(self, trial: Any, result: dict[str, Any]) -> None:
        self.load()
        entry = self._entry(trial)
        entry["status"] = "running"
        entry["env_steps"] = int(result.get("time/env_steps", entry["env_steps"]))
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            better = entry["best"] is None or (
                value > entry["best"] if self.mode == "max" else value < entry["best"]
            )
            entry["best"] = value if better else entry["best"]
        self.write()

    def ended(self, trial: Any, *, failed: bool = False) -> None:
        self.load()
        entry = self._entry(trial)
        last = trial.last_result or {}
        full = last.get(DONE_KEY) or entry["env_steps"] >= self.budget
        entry["status"] = "failed" if failed else ("succeeded" if full else "stopped_early")
        self.write()


def _callback(recorder: SweepRecorder) -> Any:
    from ray import tune

    class Recorder(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recorder.started(trial)

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            recorder.result(trial, result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recorder.ended(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            recorder.ended(trial, failed=True)

    return Recorder()


# ----------------------------------------------------------------------------- the sweep


@dataclass
class SweepSpec:
    """What ``rayac sweep`` (and ``POST /v1/sweeps``) asks for; saved as SWEEP_DIR/spec.json for --resume."""

    base: dict[str, Any]
    search: list[str]
    samples: int = 8
    concurrent: int = 2
    metric: str = "eval/return_mean"
    mode: str = "max"
    scheduler: str = "none"
    pbt_interval: int = 10_000
    search_alg: str = "random"
    grace_steps: int | None = None

    def validate(self) -> list[SearchDim]:
        if self.mode not in ("max", "min"):
            raise ConfigError("--mode", f"'{self.mode}': must be max or min")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError("--scheduler", f"'{self.scheduler}': must be one of {', '.join(SCHEDULERS)}")
        if self.search_alg not in SEARCH_ALGS:
            raise ConfigError("--search-alg", f"'{self.search_alg}': must be one of {', '.join(SEARCH_ALGS)}")
        for name, value in (("--samples", self.samples), ("--concurrent", self.concurrent),
                            ("--pbt-interval", self.pbt_interval)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"must be an integer >= 1, got {value!r}")
        cfg = parse_config(self.base)
        if cfg.run.stop.total_env_steps is None:
            raise ConfigError(
                "run.stop.total_env_steps", "a sweep's trials need a step budget (ASHA's max_t)"
            )
        if self.metric.startswith("eval/") and not (
            cfg.run.eval_interval_steps or cfg.run.eval_interval_episodes
        ):
            raise ConfigError("--metric", f"'{self.metric}' needs evaluations: set run.eval_interval_steps")
        dims = parse_search(self.search, self.base, scheduler=self.scheduler)
        if self.search_alg == "optuna":
            try:
                import optuna  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "--search-alg", "optuna needs the optuna extra: pip install 'rayac[optuna]'"
                ) from None
        tune_space(dims, self.search_alg)  # grid's own rule
        return dims


def trial_bundles(cfg: Config) -> list[dict[str, float]]:
    """The placement group of one trial: the run's driver (with the learner in it), then one bundle per worker."""
    res = cfg.resources
    head = 1.0 + (res.learner_cpus if cfg.algo.name == "a3c" and res.num_workers else 0.0)
    return [{"CPU": head}] + [{"CPU": res.worker_cpus} for _ in range(res.num_workers)]


def run_sweep(spec: SweepSpec, sweep_dir: str | Path, *, resume: bool = False,
              reuse_actors: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run (or continue) a sweep; returns the final sweep.json document. ``reuse_actors``: whether a trial may go
    on in an actor another trial (or its own paused self) used (bench_sweep.py --pbt measures it)."""
    from ray import tune

    from rayac.remote import init_ray

    sweep_dir = Path(sweep_dir).resolve()
    # Tune's own per-trial result.json/progress.csv/TensorBoard copies: each trial's run dir has these already, and
    # their loggers warned 'Remote file not found' each time a PBT trial resumed before its first result
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    spec_path = sweep_dir / "spec.json"
    if resume:
        if not spec_path.is_file():
            raise ConfigError("--resume", f"{sweep_dir} holds no sweep (no spec.json)")
        spec = SweepSpec(**json.loads(spec_path.read_text()))
    else:
        check_fresh_dir(
            sweep_dir, field="--sweep-dir", kind="sweep", markers=("spec.json", "sweep.json", "trials")
        )
    dims = spec.validate()
    cfg = parse_config(spec.base)
    make_dir(sweep_dir, field="--resume" if resume else "--sweep-dir")
    if not resume:
        atomic_write_text(spec_path, json.dumps(asdict(spec), indent=1) + "\n")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    init_ray()
    recorder = SweepRecorder(sweep_dir, metric=spec.metric, mode=spec.mode, budget=cfg.run.stop.total_env_steps,
                             info={"scheduler": spec.scheduler, "search": spec.search, "search_alg": spec.search_alg})  # fmt: skip
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            base=spec.base,
            sweep_dir=str(sweep_dir),
            metric=spec.metric,
            checkpoint_every_report=spec.scheduler == "pbt",
        ),  # fmt: skip
        tune.PlacementGroupFactory(trial_bundles(cfg)),
    )
    if resume and tune.Tuner.can_restore(str(sweep_dir / "tune")):
        tuner = tune.Tuner.restore(
            str(sweep_dir / "tune"), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=tune_space(dims, spec.search_alg),
            tune_config=tune.TuneConfig(
                metric=spec.metric,
                mode=spec.mode,
                num_samples=spec.samples,
                max_concurrent_trials=spec.concurrent,
                scheduler=_scheduler(spec, cfg, dims),
                # Tune's default, a new actor per resume. Warm actors make PBT 7x faster (bench_sweep.py --pbt), but a
                # paused trial's Runner still writes its final evaluation and checkpoint after Tune's 2 s wait, and
                # on a loaded machine the resumed trial then found its run dir changing under it (RESULTS.md)
                reuse_actors=reuse_actors,
                search_alg=_search_alg(spec),
            ),  # fmt: skip
            run_config=tune.RunConfig(
                name="tune", storage_path=str(sweep_dir), verbose=0, callbacks=[_callback(recorder)]
            ),  # fmt: skip
        )
    try:
        tuner.fit()  # a Ctrl-C makes Tune save its state and return early, its trials left unfinished
        recorder.load()
        unfinished = any(t["status"] in ("pending", "running") for t in recorder.trials.values())
        state = "interrupted" if unfinished else "finished"
    except KeyboardInterrupt:
        recorder.load()
        state = "interrupted"
    return recorder.write(state)


def _scheduler(spec: SweepSpec, cfg: Config, dims: list[SearchDim]) -> Any:
    from ray import tune

    total = int(cfg.run.stop.total_env_steps or 0)
    if spec.scheduler == "asha":
        grace = spec.grace_steps or max(1, total // 8)
        return tune.schedulers.ASHAScheduler(time_attr="time/env_steps", max_t=total, grace_period=grace,
                                             reduction_factor=2)  # fmt: skip
    if spec.scheduler == "pbt":
        mutations = {
            d.key: (list(d.values) if d.kind == "choice" else getattr(tune, d.kind)(*d.values)) for d in dims
        }
        return tune.schedulers.PopulationBasedTraining(time_attr="time/env_steps", perturbation_interval=spec.pbt_interval,
                                                       hyperparam_mutations=mutations, quantile_fraction=0.5,
                                                       synch=True)  # all at each interval: every bottom trial exploits  # fmt: skip
    return None


def _search_alg(spec: SweepSpec) -> Any:
    if spec.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch()
    return None


def sweep_table(doc: dict[str, Any]) -> list[list[str]]:
    """The console's table: one row per trial, the searched values, status, steps and the best metric."""
    keys = sorted({k for t in doc["trials"] for k in t["config"]})
    rows = [["trial", *keys, "status", "env steps", f"best {doc['metric']}"]]
    for t in doc["trials"]:
        mark = " *" if t["id"] == doc.get("best_trial") else ""
        values = [f"{t['config'].get(k):.4g}" if isinstance(t["config"].get(k), float) else str(t["config"].get(k))
                  for k in keys]  # fmt: skip
        best = "–" if t["best"] is None else f"{t['best']:.1f}"
        rows.append([t["id"] + mark, *values, t["status"], f"{t['env_steps']:,}", best])
    return rows
