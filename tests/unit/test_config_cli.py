import json

import pytest

from rayac.cli import main
from rayac.config import Config, ConfigError, build_config, list_presets


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        (["--env", "CartPol-v1"], "env.id", "did you mean 'CartPole-v1'"),
        (["--set", "algo.gamma=1.0"], "algo.gamma", "less than 1"),
        (["--set", "algo.gamma=-0.1"], "algo.gamma", "greater than or equal to 0"),
        (["--workers", "-1"], "resources.num_workers", "between 0 and 1024"),
        (["--set", "resources.num_workers=many"], "resources.num_workers", "auto"),
        (["--env", "Pendulum-v1", "--set", "algo.estimator=q"], "algo.estimator", "Discrete"),
        (["--set", "optim.lr=fast"], "optim.lr", "valid number"),
        (["--set", "algo.gamm=0.9"], "algo.gamm", "unknown field"),
        (
            ["--set", "model.architecture=shared", "--set", "optim.critic_lr=0.01"],
            "optim.critic_lr",
            "separate",
        ),
        (["--preset", "no-such-preset"], "preset", "no preset"),
        (["--set", "resources.device=cuda"], "resources.device", "CUDA"),
    ],
)
def test_bad_config_one_line_exit_2_no_run_dir(capsys, tmp_path, args, field, words):
    import torch

    if field == "resources.device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so the device is valid")  # never skipped on CI (no GPU)
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", *args, "--run-dir", str(run_dir), "--no-progress")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rayac: error: {field}:") and words in lines[0]
    assert not run_dir.exists()


def test_non_numeric_flag_is_refused_by_argparse(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--workers", "two", "--run-dir", str(tmp_path / "r")])
    assert exc.value.code == 2
    assert "--workers: must be an integer >= 0 or 'auto' (one per CPU), not 'two'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_existing_run_dir_is_not_overwritten(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", "--run-dir", str(tmp_path))
    # not a run: no --resume to suggest (that would fail with "no checkpoint to resume from")
    assert (
        code == 2
        and err
        == f"rayac: error: run.run_dir: {tmp_path} is not empty and holds no run; name a new or empty directory\n"
    )
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_overrides_parse_yaml_values():
    cfg = build_config(
        preset="a2c_cartpole",
        overrides=["model.hidden_sizes=[32, 16]", "algo.n_step=null", "run.stop.target_return=400"],
    )
    assert (
        cfg.model.hidden_sizes == [32, 16] and cfg.algo.n_step is None and cfg.run.stop.target_return == 400
    )


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_every_preset_is_valid(name):
    cfg = build_config(preset=name)
    assert isinstance(cfg, Config)


def test_mc_defaults_to_whole_episodes_and_refuses_fixed_steps():
    assert Config(algo={"estimator": "mc"}).algo.episodic
    with pytest.raises(ConfigError) as exc:
        build_config(overrides=["algo.estimator=mc", "algo.batch_mode=steps"])
    assert exc.value.field == "algo.batch_mode"


def test_every_field_has_a_description():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)

    walk(Config)


def test_presets_command_lists_them(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and "a2c_cartpole" in out and "td_cartpole" in out


def test_config_json_schema_is_serialisable():
    schema = Config.model_json_schema()
    assert "algo" in json.dumps(schema)


def test_auto_workers_is_one_per_cpu():
    import os

    assert build_config(preset="a3c_cartpole").resources.num_workers == os.cpu_count()


@pytest.mark.parametrize(("name", "text", "line"), [
    ("bad.yaml", "env: {id: CartPole-v1\nalgo: {name: a2c}\n",
     "preset: {path} is not valid YAML at line 2, column 5: expected ',' or '}}', but got ':'"),
    ("base.yaml", "preset: a2c_cartpole\nalgo: {gamma: 0.95}\n",
     "preset: {path}: 'preset' is not a config section (sections: env, model, optim, algo, resources, run); a file "
     "starts from the defaults, not from a preset: copy one from {presets}/ (e.g. a2c_cartpole.yaml) and edit it"),
    ("typo.yaml", "algos: {gamma: 0.9}\n", "preset: {path}: 'algos' is not a config section (did you mean 'algo'?)"),
    ("missing.yaml", None,
     "preset: {path} does not exist (a preset is a YAML file or a built-in name: see `rayac presets`)"),
])  # fmt: skip
def test_a_preset_file_that_cannot_be_used_is_one_line_naming_the_file(capsys, tmp_path, name, text, line):
    """A newcomer's own YAML got PyYAML's five-line report, `preset: unknown field` for a `preset:` key (read as the
    --preset option), or `no preset 'my.yaml'; known: …` for a file that was not there."""
    from rayac.config import PRESETS_DIR

    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    assert main(["train", "--preset", str(path), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == "rayac: error: " + line.format(path=path, presets=PRESETS_DIR) + "\n"
    assert not (tmp_path / "r").exists()
