"""Helpers shared by the benchmark scripts: greedy evaluation for any policy, RESULTS.md sections."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "RESULTS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout.strip().splitlines()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        gpu = []
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB" + (f", GPU: {gpu[0]}" if gpu else ", no GPU")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_rows(
    script: str, rows: list[str], seconds: float, show: Callable[[str, dict], str]
) -> dict[str, dict]:
    """Each row timed in its own process (``script --one ROW --seconds S`` prints ``RESULT {json}``); a row that
    fails is reported and left out. ``show`` makes the line printed for a row's result."""
    results: dict[str, dict] = {}
    for row in rows:
        proc = subprocess.run([sys.executable, script, "--one", row, "--seconds", str(seconds)],
                              capture_output=True, text=True, timeout=seconds * 10 + 300)  # fmt: skip
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{row}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results[row] = json.loads(line[7:])
        print(show(row, results[row]), flush=True)
    return results


def greedy_eval(act: Callable[[np.ndarray], np.ndarray], env_id: str, *, episodes: int, seed: int) -> float:
    """Mean return of ``episodes`` greedy episodes, all at once in a vector env: the same check for every system."""
    import gymnasium as gym

    envs = gym.make_vec(env_id, num_envs=episodes, vectorization_mode="sync")
    obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
    returns = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    while alive.any():
        obs, rewards, terminated, truncated, _ = envs.step(act(obs))
        returns += np.where(alive, rewards, 0.0)
        alive &= ~(terminated | truncated)
    envs.close()
    return float(returns.mean())


def no_sb3_log_dir(model):  # noqa: ANN001, ANN201 - an SB3 model, returned
    """An SB3 model that logs nowhere: by default each ``learn()`` makes a /tmp/SB3-<time> folder."""
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def read_section(name: str) -> str:
    """This script's section of RESULTS.md as it stands ('' if none)."""
    if not RESULTS.exists():
        return ""
    found = re.search(f"<!-- {name}:start -->(.*?)<!-- {name}:end -->", RESULTS.read_text(), re.S)
    return found.group(1) if found else ""


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace this script's section of RESULTS.md, or of ``path`` (other sections are kept)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmark results\n\nWritten by the scripts in benchmarks/.\n"
    )
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
