"""``rayac runs [DIR]``: the local runs in a directory, one line each, read from the files each run wrote.

Only small files are read (``config.json``, ``result.json``, the latest checkpoint's ``state.json``, the tail of
``metrics.jsonl``), so listing a directory of million-step runs is quick.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayac.checkpoint import latest_checkpoint
from rayac.config import ConfigError
from rayac.metrics import last_record

RUNNING_WITHIN_S = 120.0  # no result.json and metrics written this recently: still training (another host)
DRIVER_FILE = "driver.json"  # the training process: host, pid and its start time


def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name may hold spaces and ")"


def write_driver_file(run_dir: Path) -> None:
    """Which process trains this run, so that `rayac runs` can tell a live run from one whose process died."""
    import os
    import socket

    from rayac.checkpoint import atomic_write_text

    pid = os.getpid()
    record = {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}
    atomic_write_text(run_dir / DRIVER_FILE, json.dumps(record))


def driver_alive(run_dir: Path) -> bool | None:
    """Whether the process that trains ``run_dir`` still runs; None when this host cannot tell (another host, no
    /proc, a run written before the file existed)."""
    import socket

    driver = _read_json(run_dir / DRIVER_FILE)
    if not driver or driver.get("host") != socket.gethostname() or driver.get("start") is None:
        return None
    try:
        return _process_start(int(driver["pid"])) == driver["start"]  # not another process that got the pid
    except (TypeError, ValueError):
        return None


STATUS = {  # result.json's stop_reason → what a person reads
    "target_return": "solved",
    "total_env_steps": "done (step budget)",
    "time_limit_s": "done (time limit)",
    "interrupted": "interrupted",
    "error": "failed",
}


@dataclass
class RunSummary:
    name: str
    algo: str
    env: str
    env_steps: int | None
    best_eval: float | None
    status: str
    started: float


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def summarize(run_dir: Path, *, now: float | None = None) -> RunSummary | None:
    """One run's line, or None when ``run_dir`` is not a run directory (no readable config.json)."""
    cfg = _read_json(run_dir / "config.json")
    if cfg is None:
        return None
    algo = str((cfg.get("algo") or {}).get("name", "?"))
    env = str((cfg.get("env") or {}).get("id", "?"))
    result = _read_json(run_dir / "result.json")
    ckpt = latest_checkpoint(run_dir)
    state = _read_json(ckpt / "state.json") if ckpt else None
    steps, best = None, None
    if result is not None:
        steps, best = result.get("env_steps"), result.get("best_eval_return")
        status = STATUS.get(str(result.get("stop_reason")), str(result.get("stop_reason")))
        if result.get("stop_reason") == "total_env_steps" and result.get("solved"):
            status = "solved"
    else:
        try:
            last = last_record(run_dir / "metrics.jsonl")
        except ValueError:  # a torn line: the run is being written or was cut off
            last = None
        steps = (last or {}).get("time/env_steps", (state or {}).get("env_steps"))
        best = (state or {}).get("best_eval_return")
        metrics = run_dir / "metrics.jsonl"
        written = metrics.stat().st_mtime if metrics.exists() else (run_dir / "config.json").stat().st_mtime
        alive = driver_alive(run_dir)
        if alive is None:
            alive = (now if now is not None else time.time()) - written < RUNNING_WITHIN_S
            status = "running" if alive else "unfinished (no result.json)"
        else:
            status = "running" if alive else "crashed (its process is gone, no result.json)"
    return RunSummary(name=run_dir.name, algo=algo, env=env, env_steps=steps, best_eval=best, status=status,
                      started=(run_dir / "config.json").stat().st_mtime)  # fmt: skip


def list_runs(root: str | Path) -> list[RunSummary]:
    """The runs in ``root`` (or ``root`` itself when it is a run), oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError("DIR", f"{root} is not a directory (runs are written to ./runs by default)")
    own = summarize(root)
    if own is not None:
        return [own]
    found = [s for p in root.iterdir() if p.is_dir() and (s := summarize(p)) is not None]
    return sorted(found, key=lambda s: (s.started, s.name))


def format_runs(runs: list[RunSummary]) -> str:
    """An aligned table with a header line; numbers with thousands separators, returns to one decimal."""
    header = ("RUN", "ALGO", "ENV", "ENV STEPS", "BEST EVAL", "STATUS")
    rows = [
        (r.name, r.algo, r.env, f"{r.env_steps:,}" if isinstance(r.env_steps, int) else "-",
         f"{r.best_eval:.1f}" if isinstance(r.best_eval, int | float) else "-", r.status)
        for r in runs
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {3, 4}  # numbers line up on the right

    def line(row: tuple[str, ...]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join(line(row) for row in [header, *rows])
