"""``rayac plot``: learning curves of one or more runs (their metrics.jsonl) on one chart, as a PNG."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from rayac.checkpoint import atomic_write_file, why_unwritable
from rayac.config import ConfigError
from rayac.metrics import read_metrics

X_KEY = "time/env_steps"


def load_curve(run: str | Path, metric: str) -> tuple[list[float], list[float]]:
    """(env steps, values) of ``metric`` in a run directory; records without the metric are skipped.

    A metric the run never wrote is a ConfigError that lists the numeric metrics it did write."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError("RUN", f"{run}: no metrics.jsonl (is it a run directory?)")
    xs, ys, seen = [], [], set()
    for record in read_metrics(path):
        seen.update(k for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool))
        if metric in record and X_KEY in record:
            xs.append(float(record[X_KEY]))
            ys.append(float(record[metric]))
    if not xs:
        # a name cut short (eval/return) means its mean first, then the nearest spelling
        longer = sorted((k for k in seen if k.startswith(metric)), key=lambda k: (not k.endswith("_mean"), k))
        close = longer[:1] or difflib.get_close_matches(metric, sorted(seen), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        have = ", ".join(sorted(seen - {X_KEY})) or "none"
        raise ConfigError("--metric", f"{run}: no records with '{metric}'; {hint}its metrics: {have}")
    return xs, ys


def expand_sweeps(runs: list[str | Path]) -> tuple[list[str | Path], set[str]]:
    """A sweep directory (with sweep.json) stands for its trials' runs; returns (runs, the best trials' runs)."""
    out: list[str | Path] = []
    best: set[str] = set()
    for run in runs:
        doc_path = Path(run) / "sweep.json"
        if not doc_path.is_file():
            out.append(run)
            continue
        doc = json.loads(doc_path.read_text())
        trials = [t for t in doc.get("trials", []) if (Path(t["run_dir"]) / "metrics.jsonl").is_file()]
        if not trials:
            raise ConfigError("RUN", f"{run}: a sweep with no trial that has written metrics yet")
        out += [t["run_dir"] for t in trials]
        best |= {t["run_dir"] for t in trials if t["id"] == doc.get("best_trial")}
    return out, best


def _from_zero(metric: str) -> bool:
    """Returns and rates are drawn from 0 when none is negative; losses, entropies and the like are not."""
    return "return" in metric or metric.endswith(("sps", "/s"))


def plot_runs(runs: list[str | Path], *, metric: str, out: str | Path, title: str | None = None) -> Any:
    """Draw one line per run (labelled with the run's directory name) and write the PNG atomically.

    Returns the matplotlib Figure (closed: its data stays readable, it holds no window)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    runs, best = expand_sweeps(runs)
    names = [Path(run).resolve().name for run in runs]
    # a run is labelled by its directory name, or by the path given when two names are the same
    labels = [name if names.count(name) == 1 else str(run) for name, run in zip(names, runs, strict=True)]
    curves = []
    for run, label in zip(runs, labels, strict=True):
        xs, ys = load_curve(run, metric)
        curves.append((label, xs, ys))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for (label, xs, ys), run in zip(curves, runs, strict=True):
        top = str(run) in best
        ax.plot(xs, ys, label=label + (" (best)" if top else ""), linewidth=3.0 if top else 1.6,
                marker="o" if len(xs) < 30 else None, markersize=3, zorder=3 if top else 2)  # fmt: skip
    ys_all = [y for _, _, ys in curves for y in ys]
    if _from_zero(metric) and ys_all and min(ys_all) >= 0:
        ax.set_ylim(bottom=0)  # as the dashboard: a drop from 500 to 427 is the 15 % it is, not a crash
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out = Path(out)
    try:
        atomic_write_file(out, lambda tmp: fig.savefig(tmp, format="png"))
    except OSError as err:
        raise ConfigError("--output", f"cannot write {out}: {why_unwritable(out, err)}") from None
    finally:
        plt.close(fig)
    return fig
