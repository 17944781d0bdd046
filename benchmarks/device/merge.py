"""Fold one device-suite run (suite.sh's result files) into benchmarks/RESULTS.md and the README.

    python benchmarks/device/merge.py OUTDIR [--results FILE] [--readme FILE] [--date YYYY-MM-DD]

Writes the ``device_suite`` section of RESULTS.md (every table) and the ``device_latest`` block of the README's
"Measured at scale" section (the headline figures), each marked with the machine and the date. A smoke run
(``suite.sh --smoke``) is refused for the repository's own files: it measures this machine with tiny budgets.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import RESULTS, write_section  # noqa: E402

README = HERE.parent.parent / "README.md"
FILES = ("env", "suite", "a3c", "ps", "atari", "pong")


def load(outdir: Path) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for name in FILES:
        path = outdir / f"{name}.json"
        if path.is_file():
            try:
                runs[name] = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                runs[name] = {"error": f"{path.name} is not JSON ({err})"}
    return runs


def _num(value: Any, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def machine(env: dict[str, Any]) -> str:
    gpu = env.get("gpu") or ("no GPU" if not env.get("cuda") else "GPU")
    ray = env.get("ray", "?") if env.get("ray_ok") else f"Ray did not start ({env.get('ray_error', '?')})"
    return (f"{env.get('nproc', '?')} cores, {gpu}; Python {env.get('python', '?')}, torch {env.get('torch', '?')}, "
            f"Ray {ray}, envpool {env.get('envpool', '?')}; rayac {env.get('bundle', {}).get('rayac_commit', '?')}")  # fmt: skip


def a3c_table(a3c: dict[str, Any]) -> list[str]:
    if not a3c.get("cells"):
        return [f"A3C: not measured ({a3c.get('error', 'no cells')})."]
    lines = [f"A3C, `{a3c.get('preset')}` (MLP), {a3c.get('seconds')} s per cell after a warm-up; "
             "× = env steps/s over the row with half the workers (target ≥ 1.6):", "",
             "| workers | K shards | env steps/s | × | pushes/s | staleness mean / max |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    by = {(c["workers"], c["shards"]): c for c in a3c["cells"]}
    for (w, k), c in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if "error" in c:
            lines.append(f"| {w} | {k} | error: {c['error']} | | | |")
            continue
        half = by.get((w // 2, k), {}).get("env_steps_per_s") if w > 1 else None
        ratio = f"{c['env_steps_per_s'] / half:.2f}" if half else ""
        lines.append(f"| {w} | {k} | {_num(c['env_steps_per_s'])} | {ratio} | {_num(c['pushes_per_s'])} | "
                     f"{c['staleness_mean']:.2f} / {c['staleness_max']:.0f} |")  # fmt: skip
    return lines


def ps_table(ps: dict[str, Any]) -> list[str]:
    cells = ps.get("cells") or []
    if not cells:
        return [f"A3C parameter server: not measured ({ps.get('error', 'no cells')})."]
    lines = [f"A3C parameter server alone (`benchmarks/bench_a3c.py`'s measurement): pushes/s of K shards against the "
             f"floor of K bare Ray calls carrying the same slices, medians of {ps.get('rounds', '?')} alternating "
             f"rounds of {ps.get('seconds')} s (target: push ÷ floor ≥ 0.9 for every K):", "",
             "| payload | shards K | pushes in flight | floor/s | pushes/s | push ÷ floor |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for c in cells:
        lines.append(f"| {c['payload']} | {c['shards']} | {c['in_flight']} | {_num(c['floor_per_s'])} | "
                     f"{_num(c['pushes_per_s'])} | {c['ratio']:.2f} |")  # fmt: skip
    if ps.get("error"):
        lines += ["", f"Stopped early: {ps['error']}."]
    return lines


def atari_table(atari: dict[str, Any]) -> list[str]:
    rows = atari.get("rows") or {}
    if not rows:
        return ["Atari: not measured."]
    lines = [f"Atari, {atari.get('env')}, {atari.get('num_envs')} envs in all, {atari.get('seconds')} s each, "
             f"learner on {atari.get('device')} (`{atari.get('preset', '?')}`):", "",
             "| row | agent steps/s | × raw engine |", "| --- | --- | --- |"]  # fmt: skip
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {name} | error: {row['error']} | |")
        else:
            lines.append(f"| {name} | {_num(row['steps_per_s'])} | {row.get('x_raw', 0):.2f} |")
    return lines


def pong_lines(pong: dict[str, Any]) -> list[str]:
    if not pong:
        return ["Pong learning: not run."]
    head = (f"Pong learning, `{pong.get('preset')}`, {pong.get('workers')} workers × {pong.get('envs_per_worker')} "
            f"envs, learner on {pong.get('device')}, {pong.get('seconds')} s budget: {_num(pong.get('env_steps'))} "
            f"agent steps, {_num(pong.get('frames_per_s'))} frames/s, best training score "
            f"{_num(pong.get('best_score'), 1)}, time to ≥ +18: "
            + (f"{pong['time_to_18_s']:.0f} s" if pong.get("time_to_18_s") is not None else "not reached"))  # fmt: skip
    if pong.get("error"):
        head += f" (ended with {pong['error']})"
    lines = [head]
    curve = [c for c in pong.get("curve") or [] if c[2] is not None]
    if curve:
        step = max(1, len(curve) // 12)
        points = curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else [])
        lines += ["", "| wall s | agent steps | training score |", "| --- | --- | --- |"]
        lines += [f"| {c[0]:.0f} | {c[1]:,} | {c[2]:.1f} |" for c in points]
    return lines


def headline(runs: dict[str, Any]) -> str:
    atari, pong, a3c = runs.get("atari", {}), runs.get("pong", {}), runs.get("a3c", {})
    parts = []
    best = max(
        (r.get("x_raw", 0) for n, r in (atari.get("rows") or {}).items() if n != "raw-envpool"), default=None
    )
    if best is not None:
        parts.append(
            f"Atari: rayac's best Pong row at {best:.2f}× the raw envpool engine ({atari.get('num_envs')} envs)"
        )
    if pong:
        reached = pong.get("time_to_18_s")
        parts.append("Pong: " + (f"+18 in {reached:.0f} s" if reached is not None else
                     f"best training score {_num(pong.get('best_score'), 1)} in {pong.get('seconds')} s"))  # fmt: skip
    cells = [c for c in a3c.get("cells") or [] if "pushes_per_s" in c]
    if cells:
        top = max(cells, key=lambda c: c["pushes_per_s"])
        parts.append(
            f"A3C: up to {_num(top['pushes_per_s'])} pushes/s ({top['workers']} workers, K = {top['shards']})"
        )
    ratios = [c["ratio"] for c in runs.get("ps", {}).get("cells") or []]
    if ratios:
        parts.append(f"A3C parameter server: {min(ratios):.2f}–{max(ratios):.2f} of the bare-call floor")
    return "; ".join(parts) + "." if parts else "No figures."


def render(runs: dict[str, Any], day: str) -> tuple[str, str]:
    env = runs.get("env", {})
    smoke = any(r.get("smoke") for r in runs.values() if isinstance(r, dict))
    tag = " — SMOKE RUN (tiny budgets on a CPU machine, not a device measurement)" if smoke else ""
    statuses = ", ".join(f"{k} rc={v.get('rc')} ({v.get('seconds')} s)"
                         for k, v in (runs.get("suite", {}).get("rows") or {}).items())  # fmt: skip
    body = [f"## At scale: the device suite (benchmarks/device/suite.sh){tag}", "",
            f"Machine: {machine(env)}. Run on {day}: `bash benchmarks/device/suite.sh` "
            f"(rows: {statuses or 'unknown'}).", ""]  # fmt: skip
    for table in (
        a3c_table(runs.get("a3c", {})),
        ps_table(runs.get("ps", {})),
        atari_table(runs.get("atari", {})),
    ):
        body += [*table, ""]
    body += pong_lines(runs.get("pong", {}))
    latest = (f"Latest device run ({day}, {env.get('nproc', '?')} cores, {env.get('gpu', 'no GPU')}){tag}: "
              f"{headline(runs)} Tables: benchmarks/RESULTS.md, section \"At scale\".")  # fmt: skip
    return "\n".join(body) + "\n", latest


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir", type=Path)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--date", default=date.today().isoformat())
    args = p.parse_args()
    runs = load(args.outdir)
    if not runs:
        print(
            f"merge.py: OUTDIR: no suite results (env.json, a3c.json, ...) in {args.outdir}", file=sys.stderr
        )
        return 2
    smoke = any(r.get("smoke") for r in runs.values() if isinstance(r, dict))
    if smoke and (args.results.resolve() == RESULTS.resolve() or args.readme.resolve() == README.resolve()):
        print("merge.py: OUTDIR: these are smoke results; merge them only into copies (--results, --readme)",
              file=sys.stderr)  # fmt: skip
        return 2
    body, latest = render(runs, args.date)
    write_section("device_suite", body, path=args.results)
    write_section("device_latest", latest, path=args.readme)
    print(f"merged {args.outdir} into {args.results} and {args.readme}: {latest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
