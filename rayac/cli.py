"""The ``rayac`` command: train | evaluate | presets | runs | plot | sweep | export, and the service's serve | submit.

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


def config_reference(
    model: type[BaseModel] = Config, prefix: str = "", *, width: int | None = None
) -> list[str]:
    """Every config key with its default and description, for ``--help``: a heading per section (``algo: The
    algorithm and its estimator.``), each description wrapped to the terminal's width under its key."""
    import shutil
    import textwrap

    width = width or min(shutil.get_terminal_size().columns, 120)
    lines = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines += ["", f"{prefix}{name}: {field.description or ''}"] if not prefix else []
            lines += config_reference(ann, f"{prefix}{name}.", width=width)
            continue
        default = field.get_default(call_default_factory=True)
        lines.append(f"  {prefix}{name} = {json.dumps(default)}")
        lines += textwrap.wrap(field.description or "", width=width, initial_indent=" " * 6,
                               subsequent_indent=" " * 6, break_on_hyphens=False)  # fmt: skip
    return lines


def _workers_arg(value: str) -> int | str:
    """``--workers``: a count, or 'auto' (one per CPU), as resources.num_workers takes."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer >= 0 or 'auto' (one per CPU), not '{value}'"
        ) from None


def _parser() -> argparse.ArgumentParser:
    from rayac import __version__

    p = argparse.ArgumentParser(prog="rayac", description="Actor-critic RL on Ray: train, evaluate, serve.")
    p.add_argument("--version", action="version", version=f"rayac {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train", help="train an agent",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys for --set KEY=VALUE, by section\n(values are YAML: 0.9, true, [64, 64], null):\n"
        + "\n".join(config_reference()),
    )  # fmt: skip
    what = t.add_argument_group("what to train")
    res = t.add_argument_group("resources")
    run = t.add_argument_group("the run")
    set_ = t.add_argument_group("any config field (see the keys below)")
    what.add_argument("--preset", help="a preset name (see `rayac presets`) or a YAML file")
    what.add_argument("--algo", choices=["a2c", "a3c", "impala"], help="algorithm (algo.name)")
    what.add_argument("--env", help="gymnasium env id (env.id)")
    res.add_argument("--workers", type=_workers_arg,
                     help="rollout worker actors; 0 = no Ray, auto = one per CPU (resources.num_workers)")  # fmt: skip
    what.add_argument("--seed", type=int, help="base seed (env.seed)")
    run.add_argument("--steps", type=int, help="stop after this many env steps (run.stop.total_env_steps)")
    run.add_argument("--run-dir", help="run directory (run.run_dir)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    set_.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override any config field, e.g. --set algo.gamma=0.95 (repeatable)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bar (run.progress_bar=false)")

    e = sub.add_parser("evaluate", help="replay a trained policy greedily (and render a GIF)")
    e.add_argument("path", metavar="RUN_OR_CHECKPOINT",
                   help="a run directory (its --checkpoint) or one checkpoint directory (runs/NAME/checkpoints/ckpt_…)")  # fmt: skip
    e.add_argument("--checkpoint", default="latest",
                   help="of a run: best (highest evaluation), latest, or an env-step count (default latest)")  # fmt: skip
    e.add_argument("--episodes", type=int, default=10, help="greedy episodes (default 10)")
    e.add_argument("--gif", metavar="FILE", help="render one episode to this GIF")
    e.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")

    sub.add_parser("presets", help="list the built-in presets")
    r = sub.add_parser("runs", help="list local runs: algorithm, env, env steps, best evaluation, status")
    r.add_argument("dir", nargs="?", default=None, metavar="DIR", help="where the runs are (default ./runs)")

    pl = sub.add_parser("plot", help="learning curves of one or more runs on one chart (PNG)")
    pl.add_argument("runs", nargs="+", metavar="RUN",
                    help="run directories (each with a metrics.jsonl), or a sweep directory: its trials")  # fmt: skip
    pl.add_argument("--metric", default="eval/return_mean",
                    help="the metric to plot against env steps (default eval/return_mean; e.g. "
                    "rollout/episode_return_mean, train/value_loss, time/sps)")  # fmt: skip
    pl.add_argument("-o", "--output", default="curves.png", help="PNG file to write (default curves.png)")
    pl.add_argument("--title", help="chart title (default: the metric)")

    sw = sub.add_parser(
        "sweep", help="a hyperparameter sweep on Ray Tune (random / grid / optuna; ASHA or PBT)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="SPEC: choice(a,b,…) | uniform(lo,hi) | loguniform(lo,hi) | randint(lo,hi) (hi excluded).\n"
        "e.g. rayac sweep --preset a2c_cartpole --search 'optim.lr=loguniform(1e-5,1e-1)' --samples 6 "
        "--scheduler asha\nEach trial is a run under SWEEP_DIR/trials/; SWEEP_DIR/sweep.json holds the table.",
    )  # fmt: skip
    sw.add_argument("--preset", help="base config: a preset name or a YAML file")
    sw.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override the base config (repeatable)")  # fmt: skip
    sw.add_argument(
        "--search", action="append", default=[], metavar="KEY=SPEC", help="a searched field (repeatable)"
    )
    sw.add_argument(
        "--samples", type=int, default=8, help="trials to sample (grid: repeats of the grid; default 8)"
    )
    sw.add_argument("--concurrent", type=int, default=2, help="trials at once (default 2)")
    sw.add_argument(
        "--metric", default="eval/return_mean", help="what to optimise (default eval/return_mean)"
    )
    sw.add_argument("--mode", default="max", help="max or min (default max)")
    sw.add_argument("--scheduler", default="none", help="none | asha (early stopping) | pbt (default none)")
    sw.add_argument("--pbt-interval", type=int, default=10_000, help="PBT: env steps between perturbations")
    sw.add_argument("--search-alg", default="random", help="random | grid | optuna (default random)")
    sw.add_argument("--sweep-dir", help="where trials and sweep.json go (default sweeps/<preset>-<time>)")
    sw.add_argument("--resume", metavar="SWEEP_DIR", help="continue an interrupted sweep's unfinished trials")
    x = sub.add_parser("export", help="export a trained policy to ONNX or TorchScript (runs without rayac)")
    x.add_argument("path", metavar="RUN_OR_CHECKPOINT",
                   help="a run directory (its --checkpoint) or one checkpoint directory (runs/NAME/checkpoints/ckpt_…)")  # fmt: skip
    x.add_argument("--format", dest="fmt", choices=["onnx", "torchscript"],
                   help="onnx (run it with onnxruntime: rayac[export]) or torchscript (default: from FILE's name, "
                        "torchscript for .pt .pth .ts .jit, else onnx)")  # fmt: skip
    x.add_argument("--checkpoint", default="latest",
                   help="best (highest evaluation), latest, or an env-step count (default latest)")  # fmt: skip
    x.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="file to write; its JSON sidecar goes to FILE.json")  # fmt: skip

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

    from rayac.remote import ActorStartupError
    from rayac.stopfile import STOP_FILE_ENV, stop_requested

    console = Console(stderr=True)
    if stop_requested():  # stopped while Ray prepared this driver: build nothing, start no actor
        console.print(f"stopped before training started (${STOP_FILE_ENV} exists)")
        return 130
    try:
        cfg = _train_config(args)
        from rayac.runner import Runner

        runner = Runner(cfg, resume=bool(args.resume), console=console)
    except (ConfigError, ActorStartupError) as err:
        return fail(str(err))
    except KeyboardInterrupt:  # Ctrl-C while Ray starts the workers: nothing trained, nothing to save
        console.print("interrupted before training started")
        return 130
    if runner.resumed_from is not None:
        console.print(f"resuming {runner.run_dir} from {runner.resumed_from.name} ({runner.env_steps:,} env steps)",
                      markup=False, highlight=False, soft_wrap=True)  # fmt: skip
    # SIGTERM (a stopped Ray job, a container shutting down) ends the run like Ctrl-C: checkpoint, then exit.
    signal.signal(signal.SIGTERM, _interrupt)
    result = runner.run()
    print_summary(Console(soft_wrap=True), result)  # piped: whole lines, never cut at 80 columns
    return 130 if result.stop_reason == "interrupted" else 0


def print_summary(out: Any, result: Any) -> None:
    """What a finished ``train`` prints: how it ended, where the policy is, how to replay it (the best one, when
    an earlier checkpoint evaluated better than the last), and how to resume an interrupted run."""
    from rayac.checkpoint import best_checkpoint, checkpoint_dirs, checkpoint_eval_return

    out.print(f"[bold green]done[/] ({result.stop_reason}): {result.env_steps:,} env steps in "
              f"{result.elapsed_s:.1f}s, {result.version:,} updates")  # fmt: skip
    if result.eval_return is not None:
        out.print(f"greedy eval return: {result.eval_return:.1f} (best {result.best_eval_return:.1f})")
    out.print(f"run directory:  {result.run_dir}")
    out.print(f"trained policy: {result.checkpoint}")
    replay = f"{rayac_command()} evaluate {result.run_dir}"
    best = best_checkpoint(checkpoint_dirs(Path(result.run_dir)))
    if best is not None and result.checkpoint is not None and best.name != Path(result.checkpoint).name:
        # a newcomer replayed the last policy (eval -90.8) of a run whose best was -71.3, 48k steps earlier
        out.print(f"best policy:    {best} (greedy eval {checkpoint_eval_return(best):.1f}; evaluate and export "
                  "take --checkpoint best)")  # fmt: skip
        replay += " --checkpoint best"
    out.print(f"replay it:      {replay} --gif {Path(result.run_dir) / 'agent.gif'}")
    if result.stop_reason == "interrupted":
        out.print(f"resume it:      {rayac_command()} train --resume {result.run_dir}")


def rayac_command() -> str:
    """How to type ``rayac`` again from here: ``rayac`` when that is on PATH, else the path this was run by
    (``.venv/bin/rayac`` after ``make setup``, the venv not activated)."""
    import os
    import shutil

    ran = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if ran is None or ran.name != "rayac" or not ran.is_file():
        return "rayac"
    on_path = shutil.which("rayac")
    if on_path and os.path.realpath(on_path) == os.path.realpath(ran):
        return "rayac"
    shown = os.path.relpath(ran)
    if shown.startswith(".."):
        return str(ran.resolve())
    return shown if shown.startswith(".") else f"./{shown}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rayac.checkpoint import (
        NoSuchCheckpoint,
        load_checkpoint,
        parse_checkpoint_choice,
        select_checkpoint,
        why_unwritable,
    )
    from rayac.evaluate import Evaluator
    from rayac.render import render_episode

    if args.episodes < 1:
        return fail("--episodes: must be >= 1")
    try:
        choice = parse_checkpoint_choice(args.checkpoint)
    except ValueError as err:
        return fail(f"--checkpoint: {err}")
    path = Path(args.path)
    try:
        if not (path / "policy.safetensors").is_file():  # a run: the checkpoint --checkpoint names
            path = select_checkpoint(path, choice)
        ckpt = load_checkpoint(path)
    except NoSuchCheckpoint as err:
        return fail(f"--checkpoint: {err}")
    except (FileNotFoundError, OSError, ValueError) as err:
        return fail(f"RUN_OR_CHECKPOINT: {err}")
    env_cfg = ckpt.cfg.env.model_copy(update={"seed": args.seed})
    evaluator = Evaluator(env_cfg, ckpt.build_policy(), episodes=args.episodes)
    stats = evaluator.evaluate()
    evaluator.close()
    out = Console(soft_wrap=True)
    out.print(
        f"checkpoint {ckpt.path} ({ckpt.state['env_steps']:,} env steps, version {ckpt.state['version']})"
    )
    if args.episodes == 1:  # a spread and a minimum of one episode say nothing
        out.print(f"1 greedy episode on {ckpt.cfg.env.id}: return {stats['eval/return_mean']:.1f}, "
                  f"length {stats['eval/length_mean']:.0f}")  # fmt: skip
    else:
        out.print(f"{args.episodes} greedy episodes on {ckpt.cfg.env.id}: return {stats['eval/return_mean']:.1f} "
                  f"± {stats['eval/return_std']:.1f} (min {stats['eval/return_min']:.1f}), "
                  f"length {stats['eval/length_mean']:.1f}")  # fmt: skip
    if args.gif:
        try:  # in a process of its own, trying the headless GL backends where there is no display
            info = render_episode(ckpt.path, Path(args.gif), seed=args.seed, timeout_s=600)
        except OSError as err:
            return fail(f"--gif: cannot write {args.gif}: {why_unwritable(Path(args.gif), err)}")
        except RuntimeError as err:  # no GL backend renders it (naming each one's reason), a bug's tail
            return fail(f"--gif: {ckpt.cfg.env.id}: {err}")
        out.print(f"GIF: {args.gif} ({info['frames']} frames, return {info['return']:.1f})")
    return 0


def cmd_presets(_: argparse.Namespace) -> int:
    import shutil
    import textwrap

    width = max(60, min(shutil.get_terminal_size().columns, 120))
    presets = list_presets()
    pad = max(map(len, presets)) + 2
    for name, summary in presets.items():  # each summary a whole sentence, wrapped under its column
        print("\n".join(textwrap.wrap(summary, width=width, initial_indent=name.ljust(pad),
                                      subsequent_indent=" " * pad, break_on_hyphens=False)))  # fmt: skip
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rayac.runs import format_runs, list_runs

    root = args.dir or "runs"
    # ConfigError (not a directory) → exit 2; no ./runs yet is no error, only no runs
    runs = list_runs(root) if args.dir or Path(root).is_dir() else []
    if not runs:
        print(f"no runs in {root} (a run directory holds a config.json; start one with `rayac train`)")
        return 0
    print(format_runs(runs))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from rayac.plot import plot_runs

    plot_runs(args.runs, metric=args.metric, out=args.output, title=args.title)  # ConfigError → exit 2
    print(f"wrote {args.output} ({len(args.runs)} run{'s' if len(args.runs) > 1 else ''}, {args.metric})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.table import Table

    from rayac.sweep import SweepSpec, run_sweep, sweep_table

    if args.resume:
        spec, sweep_dir = None, Path(args.resume)
    else:
        base = load_preset(args.preset) if args.preset else {}
        spec = SweepSpec(base=apply_overrides(base, args.overrides), search=args.search, samples=args.samples,
                         concurrent=args.concurrent, metric=args.metric, mode=args.mode, scheduler=args.scheduler,
                         pbt_interval=args.pbt_interval, search_alg=args.search_alg)  # fmt: skip
        spec.validate()  # ConfigError → exit 2 before anything is written or started
        name = Path(args.preset).stem if args.preset else "sweep"
        sweep_dir = Path(args.sweep_dir or f"sweeps/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    signal.signal(signal.SIGTERM, _interrupt)
    doc = run_sweep(spec, sweep_dir, resume=bool(args.resume))  # type: ignore[arg-type]
    rows = sweep_table(doc)
    table = Table(*rows[0], title=f"sweep {sweep_dir} ({doc['state']}; * = best by {doc['metric']})")
    for row in rows[1:]:
        table.add_row(*row)
    out = Console()
    out.print(table)
    best = next((t for t in doc["trials"] if t["id"] == doc.get("best_trial")), None)
    lines = []
    if best:
        lines.append(f"best trial: {best['id']} {best['config']} → {doc['metric']} {best['best']:.1f}")
        lines.append(f"replay it:  {rayac_command()} evaluate {best['run_dir']}")
    lines.append(f"sweep.json: {Path(sweep_dir) / 'sweep.json'}")
    for line in lines:  # whole lines, also piped: a command cut at 80 columns does not paste
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0 if doc["state"] == "finished" else 130


def cmd_export(args: argparse.Namespace) -> int:
    from rayac.checkpoint import NoSuchCheckpoint, parse_checkpoint_choice
    from rayac.export import OutputNotWritable, export_policy

    try:
        choice = parse_checkpoint_choice(args.checkpoint)
    except ValueError as err:
        return fail(f"--checkpoint: {err}")
    if Path(args.output).is_dir():
        return fail(f"--output: {args.output} is a directory; name the file to write")
    try:
        sidecar = export_policy(args.path, args.output, fmt=args.fmt, checkpoint=choice)
    except NoSuchCheckpoint as err:
        return fail(f"--checkpoint: {err}")
    except OutputNotWritable as err:
        return fail(f"--output: {err}")
    except (OSError, ValueError) as err:  # no checkpoint at all (FileNotFoundError), an unreadable one
        return fail(f"RUN_OR_CHECKPOINT: {err}")
    print(f"wrote {args.output} ({sidecar['format']}, {sidecar['checkpoint']} of {sidecar['env_id']}; "
          f"inputs and outputs in {args.output}.json)")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "any_arguments", False):  # what parse_args does
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "presets": cmd_presets, "plot": cmd_plot,
                "sweep": cmd_sweep, "runs": cmd_runs, "export": cmd_export}  # fmt: skip
    handler = handlers.get(args.command) or args.plugged
    try:
        return handler(args)
    except ConfigError as err:
        return fail(str(err))


if __name__ == "__main__":
    sys.exit(main())
