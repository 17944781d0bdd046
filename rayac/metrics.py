"""Metric sinks. One flat record per train step, namespaced keys (time/…, train/…, rollout/…, eval/…).

``metrics.jsonl`` is the source of truth: the SSE stream and the plots read the same records.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

log = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlSink:
    """Appends one JSON line per record and flushes it: a crash loses at most the line being written."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 (kept open for the run)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class CsvSink:
    """progress.csv, a row per record. When a new column appears (the first eval, say) the file is rewritten
    atomically with the wider header; rows are not kept in memory, so a run of 200k records costs no more than
    one of 20 (the rare rewrite reads the file back)."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] = []
        if path.exists():  # resume: append under the header that is there
            with open(path, newline="") as f:
                self.columns = next(csv.reader(f), [])
        self.file = None

    def _rewrite(self, new_columns: list[str]) -> None:
        """The file again under the wider header, streamed row by row into a temp file that replaces it."""
        if self.file:
            self.file.close()
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=self.columns + new_columns)
            writer.writeheader()
            if self.path.exists():
                with open(self.path, newline="") as f:
                    writer.writerows(csv.DictReader(f))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        self.columns += new_columns
        self.file = open(self.path, "a", newline="", buffering=1)  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        new = [k for k in record if k not in self.columns]
        if new or self.file is None:
            self._rewrite(new)
        csv.DictWriter(self.file, fieldnames=self.columns).writerow(record)
        self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


class TensorBoardSink:
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        step = int(record.get("time/env_steps", 0))
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Optional: used only when wandb is importable. ``WANDB_MODE=offline`` works without a network."""

    def __init__(self, run_dir: Path, config: dict[str, Any], name: str):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rayac"), name=name, config=config,
                              dir=str(run_dir), reinit=True)  # fmt: skip

    def write(self, record: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in record.items() if isinstance(v, (int, float))},
                     step=int(record.get("time/env_steps", 0)))  # fmt: skip

    def close(self) -> None:
        self.run.finish()


SUMMARY_PREFIXES = ("time/", "rollout/", "eval/", "train/", "a3c/", "workers/")


def summary_table(record: dict[str, Any], title: str) -> Table:
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="cyan")
    table.add_column(justify="right")
    for prefix in SUMMARY_PREFIXES:
        for key in sorted(k for k in record if k.startswith(prefix)):
            value = record[key]
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            table.add_row(key, text)
    return table


class ConsoleSink:
    """On a terminal: a rich progress bar plus a summary table every ``interval_s`` seconds. Piped (CI logs,
    ``nohup``, a Ray job's log): one plain progress line every ``interval_s`` seconds and one at the end, which
    read as text where a redrawn bar would be printed once, cut to the pipe's 80 columns."""

    def __init__(self, *, total_steps: int | None, interval_s: float, progress_bar: bool, title: str,
                 console: Console | None = None):  # fmt: skip
        self.console = console or Console(stderr=True)
        self.interval_s = interval_s
        self.title = title
        self.total_steps = total_steps
        self.last_table = -math.inf  # the first record is shown at once
        self.progress = None
        self.lines = not self.console.is_terminal
        self.last_record: dict[str, Any] | None = None
        self.best_eval: float | None = None
        self.last_eval: float | None = None
        self.printed: dict[str, Any] | None = None  # the record of the last progress line
        self.last_line: tuple[float, int] | None = None  # (elapsed_s, env_steps) of the last line printed
        if progress_bar and not self.lines:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f} steps"),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=False,
            )  # fmt: skip
            self.task = self.progress.add_task(title, total=total_steps, info="")
            self.progress.start()

    def progress_line(self, record: dict[str, Any]) -> str:
        """``run  12,000/200,000 steps (6%)  return 45.2  eval 116.7 (best 130.0)  2,310 steps/s  0:00:05  ~0:01:21
        left``: what the bar shows, as one line of text."""
        steps, elapsed = int(record.get("time/env_steps", 0)), float(record.get("time/elapsed_s", 0.0))
        parts = [self.title]
        if self.total_steps:
            parts.append(f"{steps:,}/{self.total_steps:,} steps ({100 * steps / self.total_steps:.0f}%)")
        else:
            parts.append(f"{steps:,} steps")
        if "rollout/episode_return_mean" in record:
            parts.append(f"return {record['rollout/episode_return_mean']:.1f}")
        if self.last_eval is not None:
            parts.append(self.eval_text())
        since_s, since_steps = self.last_line or (0.0, 0)
        rate = (steps - since_steps) / (elapsed - since_s) if elapsed > since_s else None
        if rate:
            parts.append(f"{rate:,.0f} steps/s")
        parts.append(_clock(elapsed))
        if rate and self.total_steps and steps < self.total_steps:
            parts.append(f"~{_clock((self.total_steps - steps) / rate)} left")
        self.last_line = (elapsed, steps)
        return "  ".join(parts)

    def eval_text(self) -> str:
        """``eval 116.7 (best 130.0)``: the last greedy evaluation, and the best when it was another."""
        last, best = self.last_eval, self.best_eval
        return f"eval {last:.1f}" + (f" (best {best:.1f})" if best is not None and best != last else "")

    def write(self, record: dict[str, Any]) -> None:
        self.last_record = record
        if "eval/return_mean" in record:
            self.last_eval = float(record["eval/return_mean"])
            self.best_eval = self.last_eval if self.best_eval is None else max(self.best_eval, self.last_eval)
        if self.progress is not None:
            info = []
            if "rollout/episode_return_mean" in record:
                info.append(f"return {record['rollout/episode_return_mean']:.1f}")
            if self.last_eval is not None:  # kept between evaluations, as the piped line keeps it
                info.append(self.eval_text())
            self.progress.update(self.task, completed=record.get("time/env_steps", 0), info="  ".join(info))
        now = time.monotonic()
        if now - self.last_table >= self.interval_s:
            self.last_table = now
            if self.lines:
                self.console.print(self.progress_line(record), markup=False, highlight=False, soft_wrap=True)
                self.printed = record
            else:
                self.console.print(summary_table(record, self.title))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        elif self.lines and self.last_record is not None and self.printed is not self.last_record:
            self.console.print(
                self.progress_line(self.last_record), markup=False, highlight=False, soft_wrap=True
            )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class MetricLogger:
    def __init__(self, sinks: list[Any]):
        self.sinks = sinks

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:  # a sink that fails to close must not hide the run's result
                log.warning("closing %s failed: %s", type(sink).__name__, err)


def read_metrics(path: Path, since: int = 0) -> list[dict[str, Any]]:
    """Records from ``metrics.jsonl`` starting at line ``since``; a partial last line is ignored."""
    records = []
    if not Path(path).exists():
        return records
    with open(path) as f:
        for i, line in enumerate(f):
            if i < since or not line.endswith("\n"):
                continue
            records.append(json.loads(line))
    return records


def last_record(path: Path, *, tail_bytes: int = 65_536) -> dict[str, Any] | None:
    """The last complete record of ``metrics.jsonl``, reading only the file's tail (records are < 64 KiB)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            tail = f.read()
    except FileNotFoundError:
        return None
    lines = tail.split(b"\n")[:-1]  # the part after the last newline is incomplete (or empty)
    return json.loads(lines[-1]) if lines and lines[-1] else None
