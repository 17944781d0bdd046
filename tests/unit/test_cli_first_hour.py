"""What a new user meets in the first hour of the CLI, on the exact text printed: --version, `rayac runs`,
hints for unknown keys and env ids, --workers auto, plot's metric names, presets and train --help."""

import json
import os
import re
import sys
import time

import pytest

from rayac import __version__
from rayac.cli import main
from rayac.config import build_config, list_presets


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"rayac {__version__}\n"


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("algo.gama=0.9", "rayac: error: algo.gama: unknown field (did you mean 'algo.gamma'?)"),
        ("algoo.gamma=0.9", "rayac: error: algoo: unknown field (did you mean 'algo'?)"),
        (
            "run.total_env_steps=5",
            "rayac: error: run.total_env_steps: unknown field (did you mean 'run.stop.total_env_steps'?)",
        ),
        (
            "optim.learning_rate=0.1",
            "rayac: error: optim.learning_rate: unknown field (did you mean 'optim.lr'?)",
        ),
        ("algo.zzzz=1", "rayac: error: algo.zzzz: unknown field"),
    ],
)
def test_unknown_key_suggests_the_nearest(capsys, tmp_path, override, line):
    code, _, err = run_cli(capsys, "train", "--set", override, "--run-dir", str(tmp_path / "r"))
    assert code == 2 and err == line + "\n"
    assert not (tmp_path / "r").exists()


def test_rest_api_field_names_keep_their_prefix():
    from api.errors import validation_body

    body = validation_body([{"type": "extra_forbidden", "loc": ("body", "config", "algo", "gama"),
                             "msg": "Extra inputs are not permitted", "input": 1}])  # fmt: skip
    assert body["detail"] == "config.algo.gama: unknown field (did you mean 'config.algo.gamma'?)"


def test_atari_name_without_namespace_suggests_ale(capsys, tmp_path):
    import ale_py  # noqa: F401 - the atari extra (make setup installs it): a missing one fails here, not skips

    code, _, err = run_cli(capsys, "train", "--env", "Pong-v5", "--run-dir", str(tmp_path / "r"))
    assert code == 2
    assert err == "rayac: error: env.id: unknown env id 'Pong-v5' (did you mean 'ALE/Pong-v5'?)\n"


def test_workers_auto_is_one_per_cpu(capsys, tmp_path, monkeypatch):
    from rayac import cli

    seen = {}
    monkeypatch.setattr(cli, "cmd_train", lambda args: seen.setdefault("cfg", cli._train_config(args)) and 0)
    assert main(["train", "--workers", "auto", "--run-dir", str(tmp_path / "r")]) == 0
    assert seen["cfg"].resources.num_workers == os.cpu_count()


def _write_run(root, name, *, algo="a2c", env="CartPole-v1", result=None, metrics=None, age_s=0.0):
    run = root / name
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"algo": {"name": algo}, "env": {"id": env}}))
    if result is not None:
        (run / "result.json").write_text(json.dumps(result))
    if metrics is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
        past = time.time() - age_s
        os.utime(run / "metrics.jsonl", (past, past))
    return run


def test_runs_lists_local_runs(capsys, tmp_path):
    _write_run(tmp_path, "a2c-solved", result={"stop_reason": "target_return", "env_steps": 15040,
                                                "best_eval_return": 500.0, "solved": True})  # fmt: skip
    time.sleep(0.01)
    _write_run(tmp_path, "a3c-budget", algo="a3c", env="ALE/Pong-v5",
               result={"stop_reason": "total_env_steps", "env_steps": 1_000_000, "best_eval_return": -20.25,
                       "solved": False})  # fmt: skip
    time.sleep(0.01)
    _write_run(tmp_path, "live", metrics=[{"time/env_steps": 4000}])
    time.sleep(0.01)
    _write_run(tmp_path, "crashed", metrics=[{"time/env_steps": 800}], age_s=3600)
    (tmp_path / "not-a-run").mkdir()
    code, out, _ = run_cli(capsys, "runs", str(tmp_path))
    assert code == 0
    assert out.splitlines() == [
        "RUN         ALGO  ENV          ENV STEPS  BEST EVAL  STATUS",
        "a2c-solved  a2c   CartPole-v1     15,040      500.0  solved",
        "a3c-budget  a3c   ALE/Pong-v5  1,000,000      -20.2  done (step budget)",
        "live        a2c   CartPole-v1      4,000          -  running",
        "crashed     a2c   CartPole-v1        800          -  unfinished (no result.json)",
    ]


def test_runs_empty_and_missing_dirs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a new user, before the first run: no ./runs yet is not an error
    assert run_cli(capsys, "runs") == (0, "no runs in runs (a run directory holds a config.json; start one with "
                                          "`rayac train`)\n", "")  # fmt: skip
    code, out, _ = run_cli(capsys, "runs", str(tmp_path))
    assert code == 0
    assert (
        out == f"no runs in {tmp_path} (a run directory holds a config.json; start one with `rayac train`)\n"
    )
    code, _, err = run_cli(capsys, "runs", str(tmp_path / "nope"))
    assert code == 2
    assert (
        err
        == f"rayac: error: DIR: {tmp_path / 'nope'} is not a directory (runs are written to ./runs by default)\n"
    )


def test_plot_unknown_metric_names_the_ones_there(capsys, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        json.dumps({"time/env_steps": 80, "train/value_loss": 1.5, "train/entropy": 0.69}) + "\n"
    )
    code, _, err = run_cli(
        capsys, "plot", str(run), "--metric", "train/valueloss", "-o", str(tmp_path / "c.png")
    )
    assert code == 2
    assert err == (f"rayac: error: --metric: {run}: no records with 'train/valueloss'; did you mean "
                   "'train/value_loss'? its metrics: train/entropy, train/value_loss\n")  # fmt: skip
    assert not (tmp_path / "c.png").exists()
    (run / "metrics.jsonl").write_text(json.dumps({"time/env_steps": 80, "eval/return_std": 1.0,
                                                   "eval/return_mean": 9.0}) + "\n")  # fmt: skip
    assert main(["plot", str(run), "--metric", "eval/return", "-o", str(tmp_path / "c.png")]) == 2
    assert "did you mean 'eval/return_mean'?" in capsys.readouterr().err


def test_presets_are_whole_sentences_wrapped_under_their_column(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    summaries = list_presets()
    assert summaries["a2c_halfcheetah"] == ("A2C on HalfCheetah-v5, tuned for the 1M-env-step budget of "
                                            "benchmarks/bench_learning.py (greedy return of the final policy).")  # fmt: skip
    assert all(s.endswith(".") for s in summaries.values()), summaries
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    start = lines.index(next(line for line in lines if line.startswith("a2c_halfcheetah ")))
    block = [lines[start]] + [ln for ln in lines[start + 1 : start + 4] if ln.startswith(" ")]
    assert (
        " ".join(ln.split(None, 1)[1] if i == 0 else ln.strip() for i, ln in enumerate(block))
        == (summaries["a2c_halfcheetah"])
    )


def test_train_help_groups_flags_and_config_keys_by_section(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for heading in ("what to train:", "resources:", "the run:", "env: The environment.",
                    "algo: The algorithm and its estimator.", "run: Stop, evaluation, checkpoints, logging."):  # fmt: skip
        assert f"\n{heading}" in out, heading
    assert all(len(line) <= 80 for line in out.splitlines()), max(out.splitlines(), key=len)
    # a long description continues under its key, indented, not as one 300-character line
    i = out.splitlines().index('  model.encoder_dtype = "float32"')
    assert out.splitlines()[i + 1].startswith("      What the encoder")
    assert out.splitlines()[i + 2].startswith("      ")


def test_demo_preset_splits_its_envs_over_the_workers():
    """a2c_cartpole's 16 envs are the run's, not each worker's: the batch is 80 with 0, 2 or 4 workers."""
    for workers, per_worker in [(0, 16), (1, 16), (2, 8), (4, 4), (3, 6)]:
        cfg = build_config(preset="a2c_cartpole", overrides=[f"resources.num_workers={workers}"])
        assert (cfg.env.num_envs, cfg.env.num_envs_total) == (per_worker, 16)
    # the saved config reads back the same, also with another worker count (the dashboard edits a full config)
    saved = build_config(preset="a2c_cartpole", overrides=["resources.num_workers=2"]).model_dump(mode="json")
    assert build_config(base=saved).env.num_envs == 8
    saved["resources"]["num_workers"] = 4
    assert build_config(base=saved).env.num_envs == 4
    # asking for envs per worker drops the split
    cfg = build_config(preset="a2c_cartpole", overrides=["resources.num_workers=2", "env.num_envs=4"])
    assert (cfg.env.num_envs, cfg.env.num_envs_total) == (4, None)
    assert build_config(overrides=["resources.num_workers=2"]).env.num_envs == 8  # the default: per worker


def test_piped_train_and_evaluate_lines_are_whole(capsys, tmp_path):
    """Piped, rich wrapped at 80 columns: `version` went on a line of its own under a long checkpoint path."""
    run = tmp_path / ("a-long-run-directory-name-" * 3)
    assert main(["train", "--steps", "80", "--run-dir", str(run), "--set", "run.tensorboard=false"]) == 0
    out = capsys.readouterr().out
    assert f"\nreplay it:      rayac evaluate {run} --gif {run / 'agent.gif'}\n" in out
    assert main(["evaluate", str(run), "--episodes", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"checkpoint {run / 'checkpoints' / 'ckpt_000000000080'} (80 env steps, version 2)"


def test_the_replay_hint_is_a_command_that_runs_from_here(capsys, tmp_path, monkeypatch):
    """After `make demo` the venv is not activated: `rayac evaluate …` was 'command not found' when pasted."""
    from rayac.cli import rayac_command

    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    exe = venv_bin / "rayac"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(exe), "train"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv is not on PATH
    assert rayac_command() == ".venv/bin/rayac"
    run = tmp_path / "runs" / "r"
    assert main(["train", "--steps", "80", "--run-dir", str(run), "--set", "run.tensorboard=false"]) == 0
    assert f"\nreplay it:      .venv/bin/rayac evaluate {run} --gif" in capsys.readouterr().out
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")  # activated: the plain name works
    assert rayac_command() == "rayac"
    monkeypatch.setattr(sys, "argv", ["/somewhere/else/python", "-m"])  # python -m rayac.cli, pytest, …
    assert rayac_command() == "rayac"


@pytest.mark.parametrize(
    ("args", "need"),
    [
        (["--preset", "a2c_cartpole", "--workers", "100"], "100 workers need 100 CPUs (num_workers × worker_cpus)"),
        (["--preset", "a3c_cartpole", "--workers", "12"],
         "12 workers need 13 CPUs (num_workers × worker_cpus + learner_cpus)"),
    ],
)  # fmt: skip
def test_more_workers_than_this_machine_can_start_is_one_line_before_ray(
    capsys, tmp_path, monkeypatch, args, need
):
    """A newcomer's `--workers 100` on 2 cores: raylet warnings, a 2-minute hang, then a traceback."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    started = []
    monkeypatch.setattr("rayac.remote.init_ray", lambda **kw: started.append(kw))
    code, out, err = run_cli(capsys, "train", *args, "--run-dir", str(tmp_path / "r"))
    assert code == 2 and out == ""
    assert err == (f"rayac: error: resources.num_workers: {need}, and the local Ray a run starts on this machine "
                   "runs at most 8 (4 per each of its 2 CPUs). Use fewer ('auto' is one per CPU), or set "
                   "RAY_ADDRESS to a Ray cluster that has them\n")  # fmt: skip
    assert not (tmp_path / "r").exists()
    assert started == []  # refused before Ray was started


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        ("startup", 2, "rayac: error: A2C rollout workers did not start within 120s: they need 3 CPUs …\n"),
        ("interrupt", 130, "interrupted before training started\n"),
    ],
)
def test_workers_that_never_start_or_a_ctrl_c_while_they_start_is_one_line(
    capsys, monkeypatch, raised, code, line
):
    from rayac import runner
    from rayac.remote import ActorStartupError

    def never_starts(*args, **kwargs):
        if raised == "startup":
            raise ActorStartupError("A2C rollout workers did not start within 120s: they need 3 CPUs …")
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "Runner", never_starts)
    assert run_cli(capsys, "train", "--preset", "a2c_cartpole")[0::2] == (code, line)


def test_a_cluster_takes_what_this_machine_could_not(monkeypatch, tmp_path):
    from rayac.budget import check_local_workers

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    check_local_workers(build_config(overrides=["resources.num_workers=8"]))  # 4 per CPU is still let through
    cfg = build_config(overrides=["resources.num_workers=9"])
    with pytest.raises(ValueError, match="resources.num_workers: 9 workers need 9 CPUs"):
        check_local_workers(cfg)
    from rayac.budget import check_machine
    from rayac.envs import describe_env

    # the workers run on the cluster: not this machine's CPUs
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    check_machine(cfg, describe_env(cfg.env))


def test_a_ctrl_c_says_how_to_resume_and_the_resume_says_from_which_checkpoint(capsys, tmp_path, monkeypatch):
    from rayac.runner import Runner

    real_init = Runner.__init__

    def init(self, *args, **kwargs):  # Ctrl-C on the third update of the first session
        real_init(self, *args, **kwargs)
        step, calls = self.algo.train_step, []

        def train_step():
            calls.append(1)
            if len(calls) == 3 and self.resumed_from is None:
                raise KeyboardInterrupt
            return step()

        self.algo.train_step = train_step

    monkeypatch.setattr(Runner, "__init__", init)
    run = tmp_path / "r"
    assert main(["train", "--steps", "400", "--run-dir", str(run), "--set", "run.tensorboard=false"]) == 130
    out = capsys.readouterr().out
    assert out.startswith("done (interrupted): 80 env steps")
    assert out.endswith(f"\nresume it:      rayac train --resume {run}\n")
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"resuming {run} from ckpt_000000000080 (80 env steps)\n")


def test_piped_sweep_summary_lines_are_whole(capsys, tmp_path, monkeypatch):
    """Piped, the sweep's replay command wrapped at 80 columns and did not paste."""
    import rayac.sweep

    run_dir = tmp_path / ("a-long-sweep-directory-name-" * 3) / "trial_00001"
    doc = {"state": "finished", "metric": "eval/return_mean", "best_trial": "t1",
           "trials": [{"id": "t1", "config": {"optim.lr": 0.001}, "best": 500.0, "run_dir": str(run_dir)}]}  # fmt: skip
    monkeypatch.setattr(rayac.sweep, "run_sweep", lambda spec, sweep_dir, resume: doc)
    monkeypatch.setattr(rayac.sweep, "sweep_table", lambda doc: [("trial", "best"), ("t1", "500.0")])
    assert main(["sweep", "--resume", str(tmp_path / "s")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:] == [
        "best trial: t1 {'optim.lr': 0.001} → eval/return_mean 500.0",
        f"replay it:  rayac evaluate {run_dir}",
        f"sweep.json: {tmp_path / 's' / 'sweep.json'}",
    ]


def test_runs_tells_a_live_run_from_one_whose_process_died(capsys, tmp_path):
    """A newcomer's crashed run was listed as `running` for two minutes: only its file times were read."""
    import subprocess

    from rayac.runs import write_driver_file

    fresh = [{"time/env_steps": 800}]
    write_driver_file(_write_run(tmp_path, "alive", metrics=fresh))  # this process: alive
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _write_run(tmp_path, "killed", metrics=fresh)  # written seconds ago, but by a process that is gone
    (tmp_path / "killed" / "driver.json").write_text(json.dumps({"host": os.uname().nodename,
                                                                 "pid": int(dead.stdout), "start": 1}))  # fmt: skip
    _write_run(
        tmp_path, "raised", result={"stop_reason": "error", "error": "RuntimeError: boom", "env_steps": 400}
    )
    code, out, _ = run_cli(capsys, "runs", str(tmp_path))
    assert code == 0 and out.splitlines()[1:] == [
        "alive   a2c   CartPole-v1        800          -  running",
        "killed  a2c   CartPole-v1        800          -  crashed (its process is gone, no result.json)",
        "raised  a2c   CartPole-v1        400          -  failed",
    ]


def test_a_run_that_raises_writes_result_json_saying_so(tmp_path, monkeypatch):
    from rayac.runner import Runner
    from tests.runs import tiny_config

    runner = Runner(tiny_config(steps=400), run_dir=tmp_path / "run")
    calls = []

    def fails_on_the_third_update():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the env crashed")
        return step()

    step, runner.algo.train_step = runner.algo.train_step, fails_on_the_third_update
    with pytest.raises(RuntimeError, match="the env crashed"):
        runner.run()
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert (result["stop_reason"], result["error"], result["env_steps"]) == ("error", "RuntimeError: the env crashed",
                                                                             160)  # fmt: skip
    assert result["checkpoint"].endswith("ckpt_000000000160")  # what it had trained is kept


def test_evaluate_takes_a_checkpoint_choice_and_names_a_missing_path(capsys, tmp_path):
    from tests.constructed import make_run

    run = make_run(tmp_path / "run", "cartpole", steps=(1000, 2000, 3000), evals=(10.0, 50.0, 20.0))
    assert main(["evaluate", str(run), "--checkpoint", "best", "--episodes", "1"]) == 0
    assert capsys.readouterr().out.startswith(
        f"checkpoint {run / 'checkpoints' / 'ckpt_000000002000'} (2,000 env"
    )
    assert main(["evaluate", str(run), "--checkpoint", "1000", "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"checkpoint {run / 'checkpoints' / 'ckpt_000000001000'} (1,000 env")
    assert re.search(
        r"^1 greedy episode on CartPole-v1: return \d+\.\d, length \d+$", out, re.M
    )  # no "± 0.0"
    assert main(["evaluate", str(run), "--episodes", "2"]) == 0
    assert re.search(r"^2 greedy episodes on CartPole-v1: return [\d.]+ ± [\d.]+ \(min [\d.]+\), length [\d.]+$",
                     capsys.readouterr().out, re.M)  # fmt: skip
    for args, line in [
        ([str(tmp_path / "nonexistent")], f"RUN_OR_CHECKPOINT: {tmp_path / 'nonexistent'} does not exist"),
        ([str(run), "--checkpoint", "4000"],
         f"--checkpoint: no checkpoint at step 4000 in {run} (there are: 1000, 2000, 3000)"),
        ([str(run), "--checkpoint", "worst"], "--checkpoint: must be 'best', 'latest' or an env-step count (a "
         "checkpoint's step), got 'worst'"),
    ]:  # fmt: skip
        assert main(["evaluate", *args]) == 2
        assert capsys.readouterr().err == f"rayac: error: {line}\n"


def test_a_mujoco_gl_that_does_not_work_is_named_not_a_traceback(tmp_path):
    """`MUJOCO_GL=osmesa rayac evaluate RUN` (a setting rayac's own --gif error suggested) ended in a traceback
    from inside `import mujoco`; train said only "'NoneType' object has no attribute 'glGetError'"."""
    import subprocess

    from tests.constructed import make_run

    run = make_run(tmp_path / "hc", "halfcheetah")
    env = {**os.environ, "MUJOCO_GL": "bogus"}  # fails at `import mujoco` as an uninstalled backend does
    proc = subprocess.run([sys.executable, "-m", "rayac.cli", "evaluate", str(run), "--episodes", "1"],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == ("rayac: error: env.id: cannot make 'HalfCheetah-v5': invalid value for environment "
                           "variable MUJOCO_GL: bogus (MUJOCO_GL=bogus is set: unset it, or install that GL "
                           "backend)\n")  # fmt: skip


def test_a_path_that_cannot_be_written_is_one_line_naming_its_option(capsys, tmp_path):
    """`--run-dir` naming a file ended in a NotADirectoryError traceback, `plot -o` under a file in a
    FileExistsError one; a non-empty directory that was not a run was said to 'hold a run'."""
    from tests.constructed import make_run

    run = make_run(tmp_path / "run", "cartpole")
    (run / "metrics.jsonl").write_text('{"time/env_steps": 1000, "eval/return_mean": 20.0}\n')
    (tmp_path / "afile").write_text("")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    afile, notes = tmp_path / "afile", tmp_path / "notes"
    for args, line in [
        (["train", "--run-dir", str(afile)], f"run.run_dir: {afile} is a file, not a directory"),
        (["train", "--run-dir", str(afile / "r")],
         f"run.run_dir: cannot create {afile / 'r'}: {afile} is a file, not a directory"),
        (["train", "--run-dir", str(notes)],
         f"run.run_dir: {notes} is not empty and holds no run; name a new or empty directory"),
        (["train", "--run-dir", str(run)], f"run.run_dir: {run} already holds a run; use --resume or another directory"),
        (["train", "--resume", str(tmp_path / "nope")], f"run.run_dir: {tmp_path / 'nope'} does not exist"),
        (["train", "--resume", str(notes)], f"run.run_dir: {notes} is not a run directory (no config.json)"),
        (["sweep", "--preset", "a2c_cartpole", "--search", "optim.lr=choice(1e-3,2e-3)", "--sweep-dir", str(afile)],
         f"--sweep-dir: {afile} is a file, not a directory"),
        (["sweep", "--preset", "a2c_cartpole", "--search", "optim.lr=choice(1e-3,2e-3)", "--sweep-dir", str(notes)],
         f"--sweep-dir: {notes} is not empty and holds no sweep; name a new or empty directory"),
        (["plot", str(run), "--metric", "eval/return_mean", "-o", str(afile / "c.png")],
         f"--output: cannot write {afile / 'c.png'}: {afile} is a file, not a directory"),
    ]:  # fmt: skip
        code, out, err = run_cli(capsys, *args, *(["--steps", "80"] if args[0] == "train" else []))
        assert (code, out, err) == (2, "", f"rayac: error: {line}\n"), args
    assert main(["evaluate", str(run), "--episodes", "1", "--gif", str(afile / "a.gif")]) == 2
    assert capsys.readouterr().err == (
        f"rayac: error: --gif: cannot write {afile / 'a.gif'}: {afile} is a file, not a directory\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "notes", "run"]
    assert [p.name for p in notes.iterdir()] == ["a.txt"] and afile.read_text() == ""


@pytest.mark.parametrize(("cores", "asked", "line"), [
    (2, 3, "rayac: started a local Ray on 127.0.0.1 (3 CPUs for the run's actors, on 2 cores; set RAY_ADDRESS to use a cluster)\n"),
    (4, 2, "rayac: started a local Ray on 127.0.0.1 (4 CPUs; set RAY_ADDRESS to use a cluster)\n"),
])  # fmt: skip
def test_the_embedded_ray_line_says_why_it_has_more_cpus_than_cores(monkeypatch, capsys, cores, asked, line):
    """An A3C newcomer read `(3 CPUs; …)` on a 2-core machine: the 2 workers and the parameter server reserve 3."""
    import ray

    import rayac.remote

    inits: list[dict] = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: inits.append(kw))
    monkeypatch.setattr(rayac.remote.os, "cpu_count", lambda: cores)
    monkeypatch.setenv("RAY_COLOR_PREFIX", "")  # recorded, so the delenv below is undone too
    monkeypatch.delenv("RAY_COLOR_PREFIX")
    assert rayac.remote.init_ray(num_cpus=asked) is True
    assert inits[0]["num_cpus"] == max(cores, asked) and capsys.readouterr().err == line
    assert (
        os.environ["RAY_COLOR_PREFIX"] == "0"
    )  # stderr is no terminal here: worker lines without colour codes


def test_the_summary_points_at_the_best_policy_when_the_last_one_evaluated_worse(tmp_path):
    """A newcomer's Acrobot run ended at eval -90.8 (best -71.3, 110k steps earlier); the summary's replay command
    replayed the last policy, not the best."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from rayac.cli import print_summary

    run = tmp_path / "acro"
    for step, value in ((90112, -71.3), (150016, -77.4), (200064, -90.8)):
        ckpt = run / "checkpoints" / f"ckpt_{step:012d}"
        ckpt.mkdir(parents=True)
        (ckpt / "state.json").write_text(
            json.dumps({"env_steps": step, "eval_env_steps": step, "eval_return": value})
        )
    last = run / "checkpoints" / "ckpt_000000200064"
    result = SimpleNamespace(stop_reason="total_env_steps", env_steps=200064, elapsed_s=25.2, version=1563,
                             eval_return=-90.8, best_eval_return=-71.3, run_dir=str(run), checkpoint=str(last))  # fmt: skip

    def summary() -> list[str]:
        buf = io.StringIO()
        print_summary(Console(file=buf, soft_wrap=True), result)
        return buf.getvalue().splitlines()

    lines = summary()
    assert lines[3:] == [
        f"trained policy: {last}",
        f"best policy:    {run / 'checkpoints' / 'ckpt_000000090112'} (greedy eval -71.3; evaluate and export take "
        "--checkpoint best)",
        f"replay it:      rayac evaluate {run} --checkpoint best --gif {run / 'agent.gif'}",
    ]
    # the last policy is the best (a solved run): no best line, the replay command as before
    (last / "state.json").write_text(
        json.dumps({"env_steps": 200064, "eval_env_steps": 200064, "eval_return": -50.0})
    )
    assert summary()[3:] == [
        f"trained policy: {last}",
        f"replay it:      rayac evaluate {run} --gif {run / 'agent.gif'}",
    ]
