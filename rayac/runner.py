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
from rayac.checkpoint import (
    CKPT_PREFIX,
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from rayac.config import Config, ConfigError
from rayac.envs import SpaceSpec, check_config_against_env
from rayac.evaluate import Evaluator
from rayac.metrics import ConsoleSink, CsvSink, JsonlSink, MetricLogger, TensorBoardSink, WandbSink
from rayac.policy import build_policy
from rayac.workers.learner import resolve_device

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


def default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    env = cfg.env.id.replace("/", "_").replace(":", "_")
    return Path("runs") / f"{cfg.algo.name}-{env}-{stamp}"


def prepare_run(
    cfg: Config, *, run_dir: str | Path | None = None, resume: bool = False
) -> tuple[Path, SpaceSpec]:
    """Validate everything that needs the env or the device, then (only then) create the run dir."""
    spec = check_config_against_env(cfg)
    resolve_device(cfg.resources.device)
    path = Path(run_dir or cfg.run.run_dir or default_run_dir(cfg))
    if resume:
        if latest_checkpoint(path) is None:
            raise ConfigError("run.run_dir", f"{path} has no checkpoint to resume from")
    elif path.exists() and any(path.iterdir()):
        raise ConfigError("run.run_dir", f"{path} already holds a run; use --resume or another directory")
    path.mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_dir": str(path)})})
    if not resume:
        atomic_write_text(path / "config.json", cfg.model_dump_json(indent=2))
    return path, spec


class Runner:
    def __init__(self, cfg: Config, *, run_dir: str | Path | None = None, resume: bool = False,
                 console: Any = None, algorithm_kwargs: dict[str, Any] | None = None,
                 callbacks: list[Callable[[Runner, dict[str, Any]], None]] | None = None):  # fmt: skip
        """``resume=True`` continues the latest checkpoint in ``run_dir`` (see ``load_run_config``).

        ``callbacks`` are called as ``fn(runner, record)`` after each metrics record is written.
        """
        self.callbacks = list(callbacks or [])
        self.run_dir, self.spec = prepare_run(cfg, run_dir=run_dir, resume=resume)
        torch.set_num_threads(cfg.resources.learner_threads)
        self.cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_dir": str(self.run_dir)})})
        self.console = console
        self.env_steps = 0
        self.iterations = 0
        self.episodes = 0
        self.elapsed_before = 0.0  # training time of earlier sessions of this run (resume)
        self.best_eval: float | None = None
        self.last_eval: float | None = None
        ckpt = load_checkpoint(latest_checkpoint(self.run_dir)) if resume else None
        seed_offset = 0
        if ckpt is not None:
            st = ckpt.state
            self.env_steps, self.iterations, self.episodes = st["env_steps"], st["iterations"], st["episodes"]
            self.elapsed_before = st.get("elapsed_s", 0.0)
            self.best_eval, self.last_eval = st.get("best_eval_return"), st.get("eval_return")
            seed_offset = self.iterations + 1
            restore_rng_state(st.get("rng", {}))
        else:
            torch.manual_seed(self.cfg.env.seed)
        self.algo: Algorithm = make_algorithm(self.cfg, self.spec, seed_offset=seed_offset,
                                              **(algorithm_kwargs or {}))  # fmt: skip
        if ckpt is not None:
            self.algo.restore(ckpt.weights, ckpt.optimizer_state(), ckpt.state["version"])
            log.info(
                "resumed %s at %d env steps (version %d)", self.run_dir, self.env_steps, self.algo.version
            )
        self.evaluator = Evaluator(
            self.cfg.env,
            build_policy(
                self.spec,
                self.cfg.model,
                estimator=self.cfg.algo.estimator,
                scale_rewards=self.cfg.algo.scale_rewards,
            ),
            episodes=self.cfg.run.eval_episodes,
        )

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
            "best_eval_return": self.best_eval,
            "seed": self.cfg.env.seed,
            "rng": rng_state(),
            "saved_at": time.time(),
        }
        path = self.run_dir / "checkpoints" / f"{CKPT_PREFIX}{self.env_steps:012d}"
        save_checkpoint(path, weights=weights, optimizer_state=optimizer_state, cfg=self.cfg, spec=self.spec,
                        state=state)  # fmt: skip
        prune_checkpoints(self.run_dir, self.cfg.run.keep_checkpoints)
        return path

    def evaluate(self) -> dict[str, float]:
        out = self.evaluator.evaluate(self.algo.get_weights())
        self.last_eval = out["eval/return_mean"]
        self.best_eval = self.last_eval if self.best_eval is None else max(self.best_eval, self.last_eval)
        return out

    # ------------------------------------------------------------------ loop
    def run(self) -> RunResult:
        cfg = self.cfg
        stop = cfg.run.stop
        logger = self._sinks()
        window_returns: collections.deque[float] = collections.deque(maxlen=EPISODE_WINDOW)
        window_lengths: collections.deque[int] = collections.deque(maxlen=EPISODE_WINDOW)
        eval_every, eval_every_eps = cfg.run.eval_interval_steps, cfg.run.eval_interval_episodes
        ckpt_every = cfg.run.checkpoint_interval_steps
        next_eval = (self.env_steps // eval_every + 1) * eval_every if eval_every else None
        next_eval_eps = (self.episodes // eval_every_eps + 1) * eval_every_eps if eval_every_eps else None
        next_ckpt = (self.env_steps // ckpt_every + 1) * ckpt_every if ckpt_every else None
        start = time.perf_counter()
        stop_reason = "total_env_steps"
        ckpt_path: Path | None = None
        last_evaluated_at = -1
        try:
            while True:
                elapsed = time.perf_counter() - start
                if stop.total_env_steps is not None and self.env_steps >= stop.total_env_steps:
                    break
                if stop.time_limit_s is not None and self.elapsed_before + elapsed >= stop.time_limit_s:
                    stop_reason = "time_limit_s"
                    break
                t_iter = time.perf_counter()
                result = self.algo.train_step()
                dt = time.perf_counter() - t_iter
                self.iterations += 1
                self.env_steps += result.num_steps
                self.episodes += len(result.episode_returns)
                window_returns.extend(result.episode_returns.tolist())
                window_lengths.extend(result.episode_lengths.tolist())
                record: dict[str, Any] = {
                    "time/iteration": self.iterations,
                    "time/env_steps": self.env_steps,
                    "time/episodes": self.episodes,
                    "time/elapsed_s": self.elapsed_before + time.perf_counter() - start,
                    "time/sps": result.num_steps / dt if dt > 0 else 0.0,
                    "time/version": self.algo.version,
                }
                if window_returns:
                    record["rollout/episode_return_mean"] = float(np.mean(window_returns))
                    record["rollout/episode_length_mean"] = float(np.mean(window_lengths))
                record.update(result.metrics)
                due_steps = next_eval is not None and self.env_steps >= next_eval
                due_eps = next_eval_eps is not None and self.episodes >= next_eval_eps
                if due_steps or due_eps:
                    record.update(self.evaluate())
                    last_evaluated_at = self.env_steps
                    while next_eval is not None and next_eval <= self.env_steps:
                        next_eval += eval_every
                    while next_eval_eps is not None and next_eval_eps <= self.episodes:
                        next_eval_eps += eval_every_eps
                logger.write(record)
                for callback in self.callbacks:
                    callback(self, record)
                if next_ckpt is not None and self.env_steps >= next_ckpt:
                    ckpt_path = self.checkpoint(record["time/elapsed_s"])
                    while next_ckpt <= self.env_steps:
                        next_ckpt += ckpt_every
                if (stop.target_return is not None and "eval/return_mean" in record
                        and record["eval/return_mean"] >= stop.target_return):  # fmt: skip
                    stop_reason = "target_return"
                    break
        except KeyboardInterrupt:
            stop_reason = "interrupted"
        finally:
            elapsed = self.elapsed_before + time.perf_counter() - start
            try:
                if stop_reason != "interrupted" and last_evaluated_at != self.env_steps:
                    final = {"time/iteration": self.iterations, "time/env_steps": self.env_steps,
                             "time/episodes": self.episodes, "time/elapsed_s": elapsed, **self.evaluate()}  # fmt: skip
                    logger.write(final)
                ckpt_path = self.checkpoint(elapsed)
            finally:
                logger.close()
                self.evaluator.close()
                self.algo.stop()
        solved = (
            stop.target_return is not None
            and self.best_eval is not None
            and self.best_eval >= stop.target_return
        )
        result = RunResult(
            run_dir=str(self.run_dir), checkpoint=str(ckpt_path) if ckpt_path else None, stop_reason=stop_reason,
            env_steps=self.env_steps, iterations=self.iterations, episodes=self.episodes, elapsed_s=elapsed,
            version=self.algo.version, eval_return=self.last_eval, best_eval_return=self.best_eval, solved=solved,
        )  # fmt: skip
        atomic_write_text(self.run_dir / "result.json", json.dumps(asdict(result), indent=2))
        return result


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The config a run was started with, as plain data (overrides go on top of it when resuming)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError("run.run_dir", f"{run_dir} is not a run directory (no config.json)")
    return json.loads(path.read_text())


def train(cfg: Config, **kwargs: Any) -> RunResult:
    """Train to the stop condition; the library entry point (``rayac.train``)."""
    return Runner(cfg, **kwargs).run()
