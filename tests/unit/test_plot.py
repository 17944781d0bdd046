"""`rayac plot`: several runs' curves on one PNG, one line per run, read from their metrics.jsonl."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import numpy as np
import pytest

from rayac.cli import main
from rayac.plot import plot_runs

# matplotlib's default colour cycle: run i is drawn in CYCLE[i]
CYCLE = [(0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (0x2C, 0xA0, 0x2C), (0xD6, 0x27, 0x28)]


def fake_run(root, name: str, slope: float, *, records: int = 40, eval_every: int = 4):
    run = root / name
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as f:
        for i in range(records):
            rec = {"time/env_steps": (i + 1) * 1000, "rollout/episode_return_mean": 10 + slope * i}
            if i % eval_every == 0:
                rec["eval/return_mean"] = 20 + slope * i
            f.write(json.dumps(rec) + "\n")
        f.write('{"time/env_steps": 99')  # a line still being written: ignored
    return run


def colour_pixels(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    return int((np.abs(img[..., :3].astype(int) - np.array(rgb)).max(-1) <= tol).sum())


def test_plot_draws_one_line_per_run(tmp_path):
    runs = [fake_run(tmp_path, f"run{i}", slope) for i, slope in enumerate((1.0, 3.0, -0.5))]
    out = tmp_path / "out" / "curves.png"
    assert main(["plot", *map(str, runs), "--metric", "eval/return_mean", "-o", str(out)]) == 0

    img = imageio.imread(out)
    assert img.shape[:2] == (450, 800)  # 8 x 4.5 in at 100 dpi
    assert img[..., :3].std() > 10  # not blank
    counts = [colour_pixels(img, c) for c in CYCLE]
    assert all(n > 150 for n in counts[:3]), counts  # a line (and its legend entry) in each run's colour
    assert counts[3] < 20, counts  # and no fourth line

    fig = plot_runs(runs, metric="eval/return_mean", out=tmp_path / "again.png")
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["run0", "run1", "run2"]
    for line, slope in zip(lines, (1.0, 3.0, -0.5), strict=True):
        xs = np.arange(0, 40, 4)
        np.testing.assert_allclose(line.get_xdata(), (xs + 1) * 1000)  # only the records with an eval
        np.testing.assert_allclose(line.get_ydata(), 20 + slope * xs)


def test_plot_other_metric_and_bad_input(tmp_path, capsys):
    run = fake_run(tmp_path, "only", 2.0)
    fig = plot_runs([run], metric="rollout/episode_return_mean", out=tmp_path / "c.png")
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == 40

    assert main(["plot", str(run), "--metric", "train/nope", "-o", str(tmp_path / "x.png")]) == 2
    assert "no records with 'train/nope'" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "missing"), "-o", str(tmp_path / "x.png")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("n", [1, 4])
def test_plot_legend_names_every_run(tmp_path, n):
    runs = [fake_run(tmp_path, f"r{i}", float(i)) for i in range(n)]
    fig = plot_runs(runs, metric="eval/return_mean", out=tmp_path / "c.png")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [f"r{i}" for i in range(n)]


def test_runs_with_the_same_directory_name_get_their_own_lines(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runs = [fake_run(tmp_path / "a", "run", 1.0), fake_run(tmp_path / "b", "run", 2.0)]
    fig = plot_runs(runs, metric="eval/return_mean", out=tmp_path / "c.png")
    assert [line.get_label() for line in fig.axes[0].get_lines()] == [str(r) for r in runs]


def test_a_sweep_directory_plots_every_trial_with_the_best_one_marked(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "trials").mkdir(parents=True)
    trials = []
    for i, slope in enumerate((0.5, 3.0, 1.0)):
        run = fake_run(sweep / "trials", f"t{i}", slope)
        trials.append(
            {"id": f"t{i}", "run_dir": str(run), "config": {}, "status": "succeeded", "best": slope}
        )
    (sweep / "sweep.json").write_text(
        json.dumps({"metric": "eval/return_mean", "best_trial": "t1", "trials": trials})
    )
    fig = plot_runs([sweep], metric="eval/return_mean", out=tmp_path / "s.png")
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["t0", "t1 (best)", "t2"]
    assert lines[1].get_linewidth() > lines[0].get_linewidth()
    assert main(["plot", str(sweep), "-o", str(tmp_path / "cli.png")]) == 0
    (sweep / "sweep.json").write_text(
        json.dumps({"trials": [{"id": "x", "run_dir": str(tmp_path / "none")}]})
    )
    assert main(["plot", str(sweep), "-o", str(tmp_path / "x.png")]) == 2


def test_returns_are_drawn_from_zero_unless_one_is_negative(tmp_path):
    """`rayac plot` of the demo started its axis at ~170: a dip from 500 to 427 filled the chart like a crash."""
    run = tmp_path / "dip"
    run.mkdir()
    evals = [180.0, 500.0, 427.0, 500.0]
    run.joinpath("metrics.jsonl").write_text(
        "".join(
            json.dumps({"time/env_steps": (i + 1) * 5000, "eval/return_mean": v, "train/value_loss": 50 + i})
            + "\n"
            for i, v in enumerate(evals)
        )  # fmt: skip
    )
    fig = plot_runs([run], metric="eval/return_mean", out=tmp_path / "a.png")
    low, high = fig.axes[0].get_ylim()
    assert low == 0 and high >= 500
    fig = plot_runs([run], metric="train/value_loss", out=tmp_path / "b.png")  # a loss keeps its own range
    assert fig.axes[0].get_ylim()[0] > 40
    pong = tmp_path / "pong"  # returns from -21: the automatic range
    pong.mkdir()
    pong.joinpath("metrics.jsonl").write_text(
        "".join(
            json.dumps({"time/env_steps": (i + 1) * 10**5, "eval/return_mean": v}) + "\n"
            for i, v in enumerate([-21.0, -15.0, 3.0])
        )  # fmt: skip
    )
    assert plot_runs([pong], metric="eval/return_mean", out=tmp_path / "c.png").axes[0].get_ylim()[0] < -21
