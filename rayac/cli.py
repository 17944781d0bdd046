"""The ``rayac`` command: train | evaluate | presets | plot, and the service's serve | submit.

Bad input exits with code 2 and one line naming the field, before anything is written.

rayac never imports api: the service's commands (api/cli.py) plug in through the ``rayac.commands``
entry-point group of the installed package (pyproject.toml), each an object with ``help``,
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from rayac.config import (
    Config,
    ConfigError,
    apply_overrides,
    list_presets,
    load_preset,
    parse_config,
)

EXIT_BAD_INPUT = 2
COMMANDS_GROUP = "rayac.commands"
# Named here only so that a missing service says so in one line instead of argparse's "invalid choice".
SERVICE_COMMANDS = ("serve", "submit")


class Command(Protocol):
    """A subcommand plugged in through the ``rayac.commands`` entry points."""

    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def plugged_commands() -> dict[str, Command | str]:
    """The entry-point subcommands: name → the command, or → why it is not available."""
    found: dict[str, Command | str] = {}
    for ep in entry_points(group=COMMANDS_GROUP):
        try:
            found[ep.name] = ep.load()
        except ImportError as err:  # metadata says installed, the code is not there (or a dependency is not)
            found[ep.name] = f"{ep.value} cannot be imported ({err})"
    for name in SERVICE_COMMANDS:
        found.setdefault(name, f"no '{name}' in the {COMMANDS_GROUP} entry points")
    return found


def _unavailable(name: str, reason: str, _args: argparse.Namespace) -> int:
    return fail(f"`rayac {name}` comes with the service (the api package), which is not installed: {reason}; "
                "reinstall rayac so that its entry points are registered (make setup, or pip install -e .)")  # fmt: skip


def config_reference(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every config key with its default and description, for ``--help``."""
    lines = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines += config_reference(ann, f"{prefix}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        lines.append(f"  {prefix}{name} = {json.dumps(default)}\n      {field.description or ''}")
    return lines


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rayac", description="Actor-critic RL on Ray: train, evaluate, serve.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train", help="train an agent",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys for --set KEY=VALUE (values are YAML: 0.9, true, [64, 64], null):\n"
        + "\n".join(config_reference()),
    )  # fmt: skip
    t.add_argument("--preset", help="a preset name (see `rayac presets`) or a YAML file")
    t.add_argument("--algo", choices=["a2c", "a3c"], help="algorithm (algo.name)")
    t.add_argument("--env", help="gymnasium env id (env.id)")
    t.add_argument("--workers", type=int, help="rollout worker actors; 0 = no Ray (resources.num_workers)")
    t.add_argument("--seed", type=int, help="base seed (env.seed)")
    t.add_argument("--steps", type=int, help="stop after this many env steps (run.stop.total_env_steps)")
    t.add_argument("--run-dir", help="run directory (run.run_dir)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set algo.gamma=0.95 (repeatable)")  # fmt: skip
    t.add_argument("--no-progress", action="store_true", help="no progress bar (run.progress_bar=false)")

    e = sub.add_parser("evaluate", help="replay a trained policy greedily (and render a GIF)")
    e.add_argument("path", metavar="RUN_OR_CHECKPOINT")
    e.add_argument("--episodes", type=int, default=10, help="greedy episodes (default 10)")
    e.add_argument("--gif", metavar="FILE", help="render one episode to this GIF")
    e.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")

    sub.add_parser("presets", help="list the built-in presets")

    pl = sub.add_parser("plot", help="learning curves of one or more runs on one chart (PNG)")
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run directories (each with a metrics.jsonl)")
    pl.add_argument("--metric", default="eval/return_mean",
                    help="the metric to plot against env steps (default eval/return_mean; e.g. "
                    "rollout/episode_return_mean, train/value_loss, time/sps)")  # fmt: skip
    pl.add_argument("-o", "--output", default="curves.png", help="PNG file to write (default curves.png)")
    pl.add_argument("--title", help="chart title (default: the metric)")

    for name, command in plugged_commands().items():
        run: Callable[[argparse.Namespace], int]
        if isinstance(command, str):  # not installed: it takes any arguments, so that the one error is ours
            c = sub.add_parser(name, help=f"(not available: {command})", add_help=False)
            c.set_defaults(any_arguments=True)
            run = functools.partial(_unavailable, name, command)
        else:
            c = sub.add_parser(name, help=command.help)
            command.add_arguments(c)
            run = command.run
        c.set_defaults(plugged=run)
    return p


def fail(message: str) -> int:
    """Prints ``rayac: error: MESSAGE`` on stderr; returns the bad-input exit code."""
    print(f"rayac: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _train_config(args: argparse.Namespace) -> Config:
    from rayac.runner import load_run_config

    if args.resume:
        if args.preset:
            raise ConfigError("preset", "--resume continues a run with its own config; drop --preset")
        data: dict[str, Any] = load_run_config(args.resume)
    else:
        data = load_preset(args.preset) if args.preset else {}
    shortcuts = {
        "algo.name": args.algo, "env.id": args.env, "resources.num_workers": args.workers, "env.seed": args.seed,
        "run.stop.total_env_steps": args.steps, "run.run_dir": args.resume or args.run_dir,
        "run.progress_bar": False if args.no_progress else None,
    }  # fmt: skip
    overrides = [f"{k}={json.dumps(v)}" for k, v in shortcuts.items() if v is not None] + args.overrides
    return parse_config(apply_overrides(data, overrides))


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rayac.stopfile import STOP_FILE_ENV, stop_requested

    console = Console(stderr=True)
    if stop_requested():  # stopped while Ray prepared this driver: build nothing, start no actor
        console.print(f"stopped before training started (${STOP_FILE_ENV} exists)")
        return 130
    try:
        cfg = _train_config(args)
        from rayac.runner import Runner

        runner = Runner(cfg, resume=bool(args.resume), console=console)
    except ConfigError as err:
        return fail(str(err))
    # SIGTERM (a stopped Ray job, a container shutting down) ends the run like Ctrl-C: checkpoint, then exit.
    signal.signal(signal.SIGTERM, _interrupt)
    result = runner.run()
    out = Console()
    out.print(f"[bold green]done[/] ({result.stop_reason}): {result.env_steps:,} env steps in "
              f"{result.elapsed_s:.1f}s, {result.version:,} updates")  # fmt: skip
    if result.eval_return is not None:
        out.print(f"greedy eval return: {result.eval_return:.1f} (best {result.best_eval_return:.1f})")
    out.print(f"run directory:  {result.run_dir}")
    out.print(f"trained policy: {result.checkpoint}")
    out.print(f"replay it:      rayac evaluate {result.run_dir} --gif {Path(result.run_dir) / 'agent.gif'}")
    return 0 if result.stop_reason != "interrupted" else 130


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rayac.checkpoint import load_checkpoint
    from rayac.evaluate import Evaluator, render_gif

    if args.episodes < 1:
        return fail("--episodes: must be >= 1")
    try:
        ckpt = load_checkpoint(args.path)
    except (FileNotFoundError, OSError, ValueError) as err:
        return fail(f"RUN_OR_CHECKPOINT: {err}")
    env_cfg = ckpt.cfg.env.model_copy(update={"seed": args.seed})
    evaluator = Evaluator(env_cfg, ckpt.build_policy(), episodes=args.episodes)
    stats = evaluator.evaluate()
    evaluator.close()
    out = Console()
    out.print(
        f"checkpoint {ckpt.path} ({ckpt.state['env_steps']:,} env steps, version {ckpt.state['version']})"
    )
    out.print(f"{args.episodes} greedy episodes on {ckpt.cfg.env.id}: return {stats['eval/return_mean']:.1f} "
              f"± {stats['eval/return_std']:.1f} (min {stats['eval/return_min']:.1f}), "
              f"length {stats['eval/length_mean']:.1f}")  # fmt: skip
    if args.gif:
        try:
            info = render_gif(ckpt.build_policy(), env_cfg, Path(args.gif), seed=args.seed)
        except Exception as err:  # no display and no headless GL, most often: one line, and the setting
            return fail(f"--gif: could not render {ckpt.cfg.env.id} ({type(err).__name__}: {err}); without a display "
                        "set MUJOCO_GL=egl (or osmesa) for MuJoCo envs")  # fmt: skip
        out.print(f"GIF: {args.gif} ({info['frames']} frames, return {info['return']:.1f})")
    return 0


def cmd_presets(_: argparse.Namespace) -> int:
    for name, summary in list_presets().items():
        print(f"{name:28s} {summary}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from rayac.plot import plot_runs

    plot_runs(args.runs, metric=args.metric, out=args.output, title=args.title)  # ConfigError → exit 2
    print(f"wrote {args.output} ({len(args.runs)} run{'s' if len(args.runs) > 1 else ''}, {args.metric})")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "any_arguments", False):  # what parse_args does
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "presets": cmd_presets, "plot": cmd_plot}
    handler = handlers.get(args.command) or args.plugged
    try:
        return handler(args)
    except ConfigError as err:
        return fail(str(err))


if __name__ == "__main__":
    sys.exit(main())
