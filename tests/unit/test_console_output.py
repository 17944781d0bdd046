"""What `rayac train` prints when its output is piped (CI logs, nohup, a Ray job's log): plain progress lines."""

import io

from rich.console import Console

from rayac.metrics import ConsoleSink


def _records():
    yield {"time/env_steps": 40, "time/elapsed_s": 0.02, "train/value_loss": 9.0}
    yield {"time/env_steps": 10_000, "time/elapsed_s": 4.0, "rollout/episode_return_mean": 42.64}
    yield {"time/env_steps": 20_000, "time/elapsed_s": 8.0, "rollout/episode_return_mean": 90.0,
           "eval/return_mean": 438.5}  # fmt: skip
    yield {"time/env_steps": 40_000, "time/elapsed_s": 12.0, "rollout/episode_return_mean": 215.0,
           "eval/return_mean": 418.25}  # fmt: skip


def test_piped_output_is_one_readable_line_per_interval():
    out = io.StringIO()
    sink = ConsoleSink(total_steps=40_000, interval_s=0, progress_bar=True, title="cp",
                       console=Console(file=out, width=80))  # fmt: skip
    assert sink.progress is None  # no bar: it would be printed once, at the end, cut to the pipe's width
    for record in _records():
        sink.write(record)
    sink.close()
    assert out.getvalue().splitlines() == [
        "cp  40/40,000 steps (0%)  2,000 steps/s  0:00:00  ~0:00:19 left",
        "cp  10,000/40,000 steps (25%)  return 42.6  2,503 steps/s  0:00:04  ~0:00:11 left",
        "cp  20,000/40,000 steps (50%)  return 90.0  eval 438.5  2,500 steps/s  0:00:08  ~0:00:08 left",
        "cp  40,000/40,000 steps (100%)  return 215.0  eval 418.2 (best 438.5)  5,000 steps/s  0:00:12",
    ]


def test_piped_output_at_a_long_interval_still_ends_with_the_last_record():
    out = io.StringIO()
    sink = ConsoleSink(total_steps=None, interval_s=3600, progress_bar=True, title="cp",
                       console=Console(file=out, width=80))  # fmt: skip
    for record in _records():
        sink.write(record)
    sink.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "cp  40 steps  2,000 steps/s  0:00:00",
        "cp  40,000 steps  return 215.0  eval 418.2 (best 438.5)  3,336 steps/s  0:00:12",
    ]


def test_a_terminal_gets_the_bar_and_tables():
    out = io.StringIO()
    sink = ConsoleSink(total_steps=40_000, interval_s=0, progress_bar=True, title="cp",
                       console=Console(file=out, width=100, force_terminal=True))  # fmt: skip
    assert sink.progress is not None
    for record in _records():
        sink.write(record)
    sink.close()
    assert "train/value_loss" in out.getvalue() and "steps/s" not in out.getvalue()


def test_the_terminal_bar_keeps_the_last_and_best_eval_between_evaluations():
    """A newcomer's bar showed `eval …` only on the update that evaluated, then lost it: it never showed the
    return the run was solving for."""
    sink = ConsoleSink(total_steps=40_000, interval_s=3600, progress_bar=True, title="cp",
                       console=Console(file=io.StringIO(), width=100, force_terminal=True))  # fmt: skip
    info = []
    for record in [*_records(), {"time/env_steps": 40_080, "time/elapsed_s": 12.1}]:
        sink.write(record)
        info.append(sink.progress.tasks[0].fields["info"])
    sink.close()
    assert info == ["", "return 42.6", "return 90.0  eval 438.5", "return 215.0  eval 418.2 (best 438.5)",
                    "eval 418.2 (best 438.5)"]  # fmt: skip


def test_result_and_console_name_the_checkpoints_version(tmp_path, monkeypatch, capsys):
    """A3C's parameter server runs ahead of the version the driver last polled: result.json and the console
    must name the version of the checkpoint they point at (they said 1,508 where it held 1,524)."""
    import json

    from rayac.cli import main
    from rayac.runner import Runner

    real_init = Runner.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        real_state = self.algo.checkpoint_state

        def ahead():  # the server applied 16 more pushes since the last poll
            weights, optimizer_state, version = real_state()
            return weights, optimizer_state, version + 16

        self.algo.checkpoint_state = ahead

    monkeypatch.setattr(Runner, "__init__", init)
    run = tmp_path / "r"
    assert main(["train", "--steps", "400", "--run-dir", str(run), "--set", "run.tensorboard=false"]) == 0
    state = json.loads(next((run / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert state["version"] == 400 // 40 + 16  # 8 envs x 5 steps an update
    assert json.loads((run / "result.json").read_text())["version"] == state["version"]
    assert f"{state['version']:,} updates" in capsys.readouterr().out
