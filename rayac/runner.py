"""Runner: drives an algorithm to its stop condition, evaluates, checkpoints and writes metrics.

The CLI, the service's jobs and the tests all go through ``Runner``. Everything that can be checked
is checked before the run directory is created, so a bad config never leaves a half-written run.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayac.algorithms.base import Algorithm, make_algorithm
from rayac.budget import check_machine
from rayac.checkpoint import (
    CKPT_PREFIX,
    atomic_write_text,
    check_fresh_dir,
    latest_checkpoint,
    load_checkpoint,
    make_dir,
    prune_checkpoints,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from rayac.config import Config, ConfigError
from rayac.envs import SpaceSpec, check_config_against_env
from rayac.evaluate import Evaluator
from rayac.learning.learner import resolve_device
from rayac.metrics import ConsoleSink, CsvSink, JsonlSink, MetricLogger, TensorBoardSink, WandbSink
from rayac.policy import build_policy
from rayac.runs import write_driver_file
from rayac.stopfile import stop_requested

log = logging.getLogger(__name__)

EPISODE_WINDOW = 100  # rollout/episode_return_mean is over the last 100 finished episodes, as in SB3


@dataclass
class RunResult:
    run_dir: str
    checkpoint: str | None
    stop_reason: str
    env_steps: int
    iterations: int
    episodes: int
    elapsed_s: float
    version: int
    eval_return: float | None
    best_eval_return: float | None
    solved: bool
    error: str | None = None  # stop_reason "error": the exception that ended the run


def default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    env = cfg.env.id.replace("/", "_").replace(":", "_")
    return Path("runs") / f"{cfg.algo.name}-{env}-{stamp}"


def prepare_run(
    cfg: Config, *, run_dir: str | Path | None = None, resume: bool = False
) -> tuple[Config, SpaceSpec]:
    """Validate everything that needs the env or the device, then (only then) create the run dir.

    Returns the config the run uses (``run.run_dir`` filled in) and the env's spaces."""
    spec = check_config_against_env(cfg)
    check_machine(cfg, spec)  # what the run would hold in memory, against this machine's
    resolve_device(cfg.resources.device)
    path = Path(run_dir or cfg.run.run_dir or default_run_dir(cfg))
    if resume:
        if latest_checkpoint(path) is None:
            raise ConfigError("run.run_dir", f"{path} has no checkpoint to resume from")
    else:
        check_fresh_dir(
            path, field="run.run_dir", kind="run", markers=("config.json", "checkpoints", "metrics.jsonl")
        )
    make_dir(path, field="run.run_dir")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_dir": str(path)})})
    if not resume:
        atomic_write_text(path / "config.json", cfg.model_dump_json(indent=2))
    return cfg, spec


class Every:
    """Work due every ``interval`` units of a counter (env steps or episodes); ``interval`` None or 0: never.

    ``due(n)`` is True once each time the counter reaches the next multiple (several multiples crossed in one
    step count once). Starting from ``start`` (a resumed run), the first one due is the next multiple."""

    def __init__(self, interval: int | None, start: int = 0):
        self.interval = interval or 0
        self.next = (start // self.interval + 1) * self.interval if self.interval else None

    def due(self, count: int) -> bool:
        if self.next is None or count < self.next:
            return False
        self.next = (count // self.interval + 1) * self.interval
        return True


class Runner:
    def __init__(self, cfg: Config, *, run_dir: str | Path | None = None, resume: bool = False,
                 console: Any = None, callbacks: list[Callable[[Runner, dict[str, Any]], None]] | None = None):  # fmt: skip
        """``resume=True`` continues the latest checkpoint in ``run_dir`` (see ``load_run_config``).

        ``callbacks`` are called as ``fn(runner, record)`` after each metrics record is written.
        """
        self.callbacks = list(callbacks or [])
        self.cfg, self.spec = prepare_run(cfg, run_dir=run_dir, resume=resume)
        self.run_dir = Path(self.cfg.run.run_dir or "")
        torch.set_num_threads(cfg.resources.learner_threads)
        self.console = console
        self.env_steps = self.iterations = self.episodes = 0
        self.elapsed_before = 0.0  # training time of earlier sessions of this run (resume)
        self.best_eval: float | None = None
        self.saved_version = 0  # the version of the last checkpoint written
        self.last_eval: float | None = None
        self.new_best = False  # the last evaluation beat every earlier one
        self.last_eval_steps: int | None = None  # the env steps of the last evaluation
        # the last EPISODE_WINDOW finished episodes (return, length): rollout/episode_*_mean, saved in checkpoints
        self.window: collections.deque[tuple[float, int]] = collections.deque(maxlen=EPISODE_WINDOW)
        self._span_steps, self._span_s = 0, 0.0  # env steps and train_step time since the last record written
        self.resumed_from = latest_checkpoint(self.run_dir) if resume else None
        ckpt = load_checkpoint(self.resumed_from) if resume else None
        seed_offset = 0
        if ckpt is not None:
            st = ckpt.state
            self.env_steps, self.iterations, self.episodes = st["env_steps"], st["iterations"], st["episodes"]
            self.elapsed_before = st.get("elapsed_s", 0.0)
            self.best_eval, self.last_eval = st.get("best_eval_return"), st.get("eval_return")
            self.last_eval_steps = st.get("eval_env_steps")
            self.window.extend((float(r), int(n)) for r, n in st.get("episode_window", []))
            seed_offset = self.iterations + 1  # fresh env seeds, unless the sampler state is restored below
            restore_rng_state(st.get("rng", {}))
        else:
            torch.manual_seed(self.cfg.env.seed)
        self.algo: Algorithm = make_algorithm(self.cfg, self.spec, seed_offset=seed_offset)
        if ckpt is not None:
            self.algo.restore(ckpt.weights, ckpt.optimizer_state(), ckpt.state["version"])
            self.algo.restore_counters(ckpt.state.get("counters", {}))
            try:
                exact = self.algo.restore_sampler(ckpt.sampler_state())
            except (
                Exception
            ) as err:  # e.g. an env class that no longer unpickles: resume anyway, on fresh episodes
                log.warning("could not restore the rollout workers' envs (%s: %s)", type(err).__name__, err)
                exact = False
            log.info("resumed %s at %d env steps (version %d); sampling %s", self.run_dir, self.env_steps,
                     self.algo.version, "continues exactly" if exact else "starts fresh episodes")  # fmt: skip
        policy = build_policy(self.spec, self.cfg.model, estimator=self.cfg.algo.estimator,
                              scale_rewards=self.cfg.algo.scale_rewards)  # fmt: skip
        self.evaluator = Evaluator(self.cfg.env, policy, episodes=self.cfg.run.eval_episodes)

    # ------------------------------------------------------------------ pieces
    def _sinks(self) -> MetricLogger:
        run = self.cfg.run
        sinks: list[Any] = [JsonlSink(self.run_dir / "metrics.jsonl"), CsvSink(self.run_dir / "progress.csv")]
        if run.tensorboard:
            sinks.append(TensorBoardSink(self.run_dir / "tb"))
        if run.wandb:
            try:
                sinks.append(WandbSink(self.run_dir, self.cfg.model_dump(), self.run_dir.name))
            except ImportError:
                log.warning("run.wandb is set but wandb is not installed; skipping it")
        sinks.append(ConsoleSink(total_steps=run.stop.total_env_steps, interval_s=run.log_interval_s,
                                 progress_bar=run.progress_bar, title=self.run_dir.name,
                                 console=self.console))  # fmt: skip
        return MetricLogger(sinks)

    def checkpoint(self, elapsed_s: float) -> Path:
        weights, optimizer_state, version = self.algo.checkpoint_state()
        state = {
            "env_steps": self.env_steps,
            "iterations": self.iterations,
            "episodes": self.episodes,
            "version": version,
            "elapsed_s": elapsed_s,
            "eval_return": self.last_eval,
            "eval_env_steps": self.last_eval_steps,  # == env_steps: these weights are the ones evaluated
            "best_eval_return": self.best_eval,
            "seed": self.cfg.env.seed,
            "rng": rng_state(),
            "episode_window": [list(e) for e in self.window],
            "counters": self.algo.counters(),
            "saved_at": time.time(),
        }
        path = self.run_dir / "checkpoints" / f"{CKPT_PREFIX}{self.env_steps:012d}"
        save_checkpoint(path, weights=weights, optimizer_state=optimizer_state, cfg=self.cfg, spec=self.spec,
                        state=state, sampler=self.algo.sampler_state())  # fmt: skip
        prune_checkpoints(self.run_dir, self.cfg.run.keep_checkpoints)
        # A3C's server runs ahead of algo.version (its last poll): the result names what was saved
        self.saved_version = version
        return path

    def evaluate(self) -> dict[str, float]:
        out = self.evaluator.evaluate(self.algo.get_weights(), at_step=self.env_steps)
        self.last_eval, self.last_eval_steps = out["eval/return_mean"], self.env_steps
        self.new_best = self.best_eval is None or self.last_eval > self.best_eval
        self.best_eval = self.last_eval if self.best_eval is None else max(self.best_eval, self.last_eval)
        return out

    def _train_record(self, started: float) -> dict[str, Any]:
        """One train step, counted, as a metrics record."""
        t0 = time.perf_counter()
        result = self.algo.train_step()
        dt = time.perf_counter() - t0
        # time/sps: steps over training time since the last record written (one update unless subsampled)
        self._span_steps += result.num_steps
        self._span_s += dt
        self.iterations += 1
        self.env_steps += result.num_steps
        self.episodes += len(result.episode_returns)
        self.window.extend(zip(result.episode_returns.tolist(), result.episode_lengths.tolist(), strict=True))
        record: dict[str, Any] = {
            "time/iteration": self.iterations,
            "time/env_steps": self.env_steps,
            "time/episodes": self.episodes,
            "time/elapsed_s": self.elapsed_before + time.perf_counter() - started,
            "time/sps": self._span_steps / self._span_s if self._span_s > 0 else 0.0,
            "time/version": self.algo.version,
        }
        if self.window:
            record["rollout/episode_return_mean"] = float(np.mean([r for r, _ in self.window]))
            record["rollout/episode_length_mean"] = float(np.mean([n for _, n in self.window]))
        return record | result.metrics

    def _stop_reason(self, started: float) -> str | None:
        # the service stopped this job (RAYAC_STOP_FILE): like SIGTERM, checkpoint and end
        if stop_requested():
            return "interrupted"
        stop = self.cfg.run.stop
        if stop.total_env_steps is not None and self.env_steps >= stop.total_env_steps:
            return "total_env_steps"
        if (
            stop.time_limit_s is not None
            and self.elapsed_before + time.perf_counter() - started >= stop.time_limit_s
        ):
            return "time_limit_s"
        return None

    def _reached_target(self, record: dict[str, Any]) -> bool:
        target = self.cfg.run.stop.target_return
        return target is not None and record.get("eval/return_mean", -np.inf) >= target

    # ------------------------------------------------------------------ loop
    def run(self) -> RunResult:
        run = self.cfg.run
        logger = self._sinks()
        write_driver_file(self.run_dir)  # `rayac runs` tells a live run from one whose process died
        eval_steps = Every(run.eval_interval_steps, self.env_steps)
        eval_episodes = Every(run.eval_interval_episodes, self.episodes)
        ckpt_steps = Every(run.checkpoint_interval_steps, self.env_steps)
        record_steps = Every(run.metrics_interval_steps, self.env_steps)
        started = time.perf_counter()
        stop_reason, ckpt_path, evaluated_at = self._stop_reason(started), None, -1
        failure: str | None = None
        unwritten: dict[str, Any] | None = None  # the newest record, until a sink has it

        def write(record: dict[str, Any]) -> None:
            nonlocal unwritten
            # cleared first: a stop that lands inside the sinks must not write this record again after a newer one
            unwritten, self._span_steps, self._span_s = None, 0, 0.0
            logger.write(record)
            for callback in self.callbacks:
                callback(self, record)

        try:
            while stop_reason is None:
                record = self._train_record(started)
                # a skipped record's one-off keys (a3c/ps_rollback_updates) carry on into this one
                if unwritten is not None:
                    record = {**{k: v for k, v in unwritten.items() if k not in record}, **record}
                unwritten = record  # until written: a stop during the evaluation below still writes it
                # both schedules advance, so a step due on both evaluates once
                evaluated = eval_steps.due(self.env_steps) | eval_episodes.due(self.episodes)
                if evaluated:
                    record.update(self.evaluate())
                    evaluated_at = self.env_steps
                stop_reason = self._stop_reason(started)
                if (record_steps.due(self.env_steps) or not run.metrics_interval_steps or evaluated
                        or stop_reason is not None):  # fmt: skip
                    write(record)
                # a new best evaluation is checkpointed at once (pruning keeps it): `--checkpoint best` is the best
                if ckpt_steps.due(self.env_steps) or (evaluated and self.new_best):
                    ckpt_path = self.checkpoint(record["time/elapsed_s"])
                if self._reached_target(record):
                    stop_reason = "target_return"
        except KeyboardInterrupt:
            stop_reason = "interrupted"
        except Exception as err:  # the run's files still say how it ended: result.json, stop_reason "error"
            failure = f"{type(err).__name__}: {err}"
            raise
        finally:
            elapsed = self.elapsed_before + time.perf_counter() - started
            try:
                if unwritten is not None:  # stopped (Ctrl-C, SIGTERM, an error) between written records
                    try:
                        write(unwritten)
                    except Exception as err:  # the final checkpoint below matters more than this record
                        log.error("could not write the last metrics record (%s: %s)", type(err).__name__, err)
                if failure is None and stop_reason != "interrupted" and evaluated_at != self.env_steps:
                    logger.write({"time/iteration": self.iterations, "time/env_steps": self.env_steps,
                                  "time/episodes": self.episodes, "time/elapsed_s": elapsed, **self.evaluate()})  # fmt: skip
                ckpt_path = self.checkpoint(elapsed)
            finally:
                logger.close()
                self.evaluator.close()
                self.algo.stop()
                if failure is not None:
                    try:
                        self._result("error", ckpt_path, elapsed, error=failure)
                    except Exception as err:  # the run's own error is the one to raise
                        log.error("could not write result.json (%s: %s)", type(err).__name__, err)
        return self._result(stop_reason or "interrupted", ckpt_path, elapsed)

    def _result(self, stop_reason: str, ckpt_path: Path | None, elapsed: float, *,
                error: str | None = None) -> RunResult:  # fmt: skip
        target = self.cfg.run.stop.target_return
        solved = target is not None and self.best_eval is not None and self.best_eval >= target
        result = RunResult(
            run_dir=str(self.run_dir), checkpoint=str(ckpt_path) if ckpt_path else None, stop_reason=stop_reason,
            env_steps=self.env_steps, iterations=self.iterations, episodes=self.episodes, elapsed_s=elapsed,
            version=self.saved_version if ckpt_path else self.algo.version, eval_return=self.last_eval, best_eval_return=self.best_eval, solved=solved, error=error,
        )  # fmt: skip
        atomic_write_text(self.run_dir / "result.json", json.dumps(asdict(result), indent=2))
        return result


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config a run was started with, as plain data (overrides go on top of it when resuming)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        if not Path(run_dir).exists():
            raise ConfigError("run.run_dir", f"{run_dir} does not exist")
        raise ConfigError("run.run_dir", f"{run_dir} is not a run directory (no config.json)")
    return json.loads(path.read_text())


def train(cfg: Config, **kwargs: Any) -> RunResult:
    """Train to the stop condition; the library entry point (``rayac.train``)."""
    return Runner(cfg, **kwargs).run()
