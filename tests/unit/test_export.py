"""`rayac export`: ONNX (through onnxruntime) and TorchScript equal ``load_policy()`` on 1,000 raw observations
for a CartPole MLP, a HalfCheetah-shaped Gaussian policy with its observation normaliser, and a Pong Nature CNN
fed uint8 frames; the ONNX file runs in an interpreter that has only onnxruntime and numpy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rayac.checkpoint import load_policy, select_checkpoint
from rayac.cli import main
from rayac.config import build_config
from tests.constructed import CASES, make_run, observations

N_OBS = 1000
TOL = 1e-5


def expected(run_dir: Path, obs: np.ndarray) -> dict[str, np.ndarray]:
    policy = load_policy(run_dir)
    out = {"action": policy.act(obs, deterministic=True), "value": policy.values(obs)}
    if policy.spec.discrete:
        out["probs"] = policy.action_probs(obs)
    else:
        with torch.no_grad():
            out["mean"] = policy.policy.actions(torch.as_tensor(obs), deterministic=True).numpy()
    return out


def check_parity(got: dict[str, np.ndarray], want: dict[str, np.ndarray], discrete: bool) -> None:
    if discrete:
        assert got["action"].dtype == np.int64
        np.testing.assert_array_equal(got["action"], want["action"])
        np.testing.assert_allclose(got["probs"], want["probs"], rtol=0, atol=TOL)
        # the actions vary: a constant policy would pass the equality trivially
        assert len(np.unique(want["action"])) > 1
    else:  # float actions: the same clip of the same mean, up to the runtimes' matmul rounding
        np.testing.assert_allclose(got["action"], want["action"], rtol=0, atol=TOL)
        np.testing.assert_allclose(got["mean"], want["mean"], rtol=0, atol=TOL)
        assert (np.abs(want["action"]) == 1).any() and (np.abs(want["action"]) < 1).any()  # clipped and not
    np.testing.assert_allclose(got["value"], want["value"], rtol=0, atol=TOL)


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_and_torchscript_equal_load_policy(tmp_path, name):
    run = make_run(tmp_path / "run", name)
    obs = observations(name, N_OBS)
    want = expected(run, obs)
    discrete = CASES[name][1].discrete

    assert main(["export", str(run), "--format", "onnx", "-o", str(tmp_path / "p.onnx")]) == 0
    sidecar = json.loads((tmp_path / "p.onnx.json").read_text())
    session = ort.InferenceSession(str(tmp_path / "p.onnx"))
    names = [o["name"] for o in sidecar["outputs"]]
    assert names == [o.name for o in session.get_outputs()]
    assert (
        [i["name"] for i in sidecar["inputs"]] == [i.name for i in session.get_inputs()] == ["observations"]
    )
    assert sidecar["inputs"][0]["dtype"] == ("uint8" if name == "pong" else "float32")
    assert sidecar["inputs"][0]["shape"] == ["batch", *CASES[name][1].obs_shape]
    assert sidecar["env_id"] == build_config(preset=CASES[name][0]).env.id
    got = dict(zip(names, session.run(None, {"observations": obs}), strict=True))
    check_parity(got, want, discrete)
    if not discrete:
        np.testing.assert_allclose(got["std"], np.ones_like(got["std"]) * got["std"][0], rtol=0, atol=0)

    assert main(["export", str(run), "--format", "torchscript", "-o", str(tmp_path / "p.pt")]) == 0
    module = torch.jit.load(str(tmp_path / "p.pt"))
    with torch.no_grad():
        outs = module(torch.as_tensor(obs))
    got = {n: t.numpy() for n, t in zip(names, outs, strict=True)}
    check_parity(got, want, discrete)
    with torch.no_grad():  # any batch size, not only the traced one
        assert module(torch.as_tensor(obs[:1]))[0].shape[0] == 1


ISOLATED = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import onnxruntime as ort
for mod in ("torch", "rayac", "gymnasium"):
    try:
        __import__(mod)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"{mod} is importable here: the interpreter is not isolated")
for onnx_file, obs_file, out_file in zip(*[iter(sys.argv[2:])] * 3):
    session = ort.InferenceSession(onnx_file)
    outs = session.run(None, {"observations": np.load(obs_file)})
    np.savez(out_file, **{o.name: v for o, v in zip(session.get_outputs(), outs)})
loaded = sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names))
print(" ".join(m for m in loaded if not m.startswith("_")))
"""


def test_exported_onnx_runs_with_only_onnxruntime_and_numpy(tmp_path):
    """`python -I -S`: no site-packages, no PYTHONPATH; sys.path gets one folder holding onnxruntime and numpy."""
    import numpy
    import onnxruntime

    only = tmp_path / "site"
    only.mkdir()
    for package in (numpy, onnxruntime):
        src = Path(package.__file__).parent
        (only / src.name).symlink_to(src)
        libs = src.with_name(src.name + ".libs")  # the wheels' bundled shared libraries, if any
        if libs.is_dir():
            (only / libs.name).symlink_to(libs)
    args, wants = [], {}
    for name in CASES:
        run = make_run(tmp_path / name, name)
        obs = observations(name, 200)
        np.save(tmp_path / f"{name}.npy", obs)
        assert main(["export", str(run), "-o", str(tmp_path / f"{name}.onnx")]) == 0
        args += [str(tmp_path / f"{name}.onnx"), str(tmp_path / f"{name}.npy"), str(tmp_path / f"{name}.npz")]
        wants[name] = expected(run, obs)
    (tmp_path / "run_isolated.py").write_text(ISOLATED)
    proc = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "run_isolated.py"), str(only), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == {"numpy", "onnxruntime"}, proc.stdout  # nothing else was imported
    for name in CASES:
        got = dict(np.load(tmp_path / f"{name}.npz"))
        check_parity(got, wants[name], CASES[name][1].discrete)


def test_checkpoint_choice_best_latest_step(tmp_path, capsys):
    run = make_run(tmp_path / "run", "cartpole", steps=(1000, 2000, 3000), evals=(10.0, 50.0, 20.0))
    assert select_checkpoint(run, "latest").name == "ckpt_000000003000"
    assert select_checkpoint(run, "best").name == "ckpt_000000002000"
    assert select_checkpoint(run, 1000).name == "ckpt_000000001000"
    assert main(["export", str(run), "--checkpoint", "best", "-o", str(tmp_path / "b.onnx")]) == 0
    assert json.loads((tmp_path / "b.onnx.json").read_text())["checkpoint"] == "ckpt_000000002000"
    assert main(["export", str(run), "--checkpoint", "1000", "--format", "torchscript",
                 "-o", str(tmp_path / "s.pt")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "s.pt.json").read_text())["env_steps"] == 1000
    capsys.readouterr()

    for bad, says in (("4000", "no checkpoint at step 4000"), ("worst", "must be 'best', 'latest'")):
        assert main(["export", str(run), "--checkpoint", bad, "-o", str(tmp_path / "x.onnx")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("rayac: error: --checkpoint: ") and says in err and err.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()

    unevaluated = make_run(tmp_path / "noeval", "cartpole")
    assert main(["export", str(unevaluated), "--checkpoint", "best", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "has an evaluation yet" in capsys.readouterr().err


def test_export_of_a_run_without_checkpoint_is_one_line_and_exit_2(tmp_path):
    run = tmp_path / "empty-run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    proc = subprocess.run([sys.executable, "-m", "rayac.cli", "export", str(run), "-o", str(tmp_path / "p.onnx")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == f"rayac: error: RUN_OR_CHECKPOINT: no checkpoint in {run}\n"
    assert not (tmp_path / "p.onnx").exists()
    assert list(tmp_path.iterdir()) == [run]  # no temp file left behind either


def test_the_file_name_picks_the_format_unless_format_says(tmp_path, capsys):
    """A newcomer's `-o policy.pt` without --format got an ONNX file named .pt, which torch.jit.load refuses."""
    run = make_run(tmp_path / "run", "cartpole")
    assert main(["export", str(run), "-o", str(tmp_path / "p.pt")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'p.pt'} (torchscript, ckpt_")
    assert json.loads((tmp_path / "p.pt.json").read_text())["format"] == "torchscript"
    torch.jit.load(str(tmp_path / "p.pt"))
    assert main(["export", str(run), "-o", str(tmp_path / "p.model")]) == 0  # no torchscript suffix: ONNX
    ort.InferenceSession(str(tmp_path / "p.model"))
    assert main(["export", str(run), "--format", "onnx", "-o", str(tmp_path / "q.pt")]) == 0  # --format wins
    ort.InferenceSession(str(tmp_path / "q.pt"))


def test_an_output_that_cannot_be_written_is_named_as_output_and_leaves_nothing(tmp_path, capsys):
    """It said `RUN_OR_CHECKPOINT: [Errno 17] File exists: …`: the run was fine, the output path was not."""
    run = make_run(tmp_path / "run", "cartpole")
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "p.onnx"
    assert main(["export", str(run), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"rayac: error: --output: cannot write {out}: {tmp_path / 'afile'} is a file, not a directory\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "run"]
