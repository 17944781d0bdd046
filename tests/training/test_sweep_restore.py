"""PBT's exploit, done the way a sweep trial does it: the donor's checkpoint installed in the trial's run dir and
resumed with the perturbed values, which must be the optimiser's after the restore (Ray #62173's bug)."""

from __future__ import annotations

import torch

from rayac.checkpoint import latest_checkpoint, load_checkpoint
from rayac.config import load_preset
from rayac.runner import Runner
from rayac.sweep import install_checkpoint, trial_config

BASE = load_preset("a2c_cartpole")
BASE["run"] = {"stop": {"total_env_steps": 1600}, "eval_interval_steps": 0, "checkpoint_interval_steps": 800,
               "tensorboard": False}  # fmt: skip


def _lrs(runner: Runner) -> list[float]:
    return [group["lr"] for group in runner.algo.checkpoint_state()[1]["param_groups"]]


def test_an_exploit_resumes_the_donors_checkpoint_with_the_perturbed_learning_rate(tmp_path) -> None:
    donor = Runner(trial_config(BASE, {"optim.lr": 0.002}, tmp_path / "donor"))
    donor.run()
    donor_ckpt = latest_checkpoint(tmp_path / "donor")
    saved = load_checkpoint(donor_ckpt)
    assert saved.optimizer_state()["param_groups"][0]["lr"] == 0.002

    # the exploiting trial has run further on its own: its newer checkpoint must not be the one resumed
    own = Runner(trial_config({**BASE, "run": {**BASE["run"], "stop": {"total_env_steps": 2400}}},
                              {"optim.lr": 0.0001}, tmp_path / "trial"))  # fmt: skip
    own.run()
    install_checkpoint(donor_ckpt, tmp_path / "trial")
    resumed = Runner(trial_config(BASE, {"optim.lr": 0.0123}, tmp_path / "trial"), resume=True)
    assert (
        resumed.env_steps == saved.state["env_steps"] == 1600
    )  # the donor's point, not the trial's own 2400
    assert set(_lrs(resumed)) == {0.0123}  # the perturbed rate, not the donor's 0.002
    moments = resumed.algo.checkpoint_state()[1]["state"]
    assert all(
        torch.equal(moments[k]["exp_avg"], saved.optimizer_state()["state"][k]["exp_avg"]) for k in moments
    )
    weights = resumed.algo.checkpoint_state()[0]
    assert all(torch.equal(torch.as_tensor(weights[k]), torch.as_tensor(saved.weights[k])) for k in weights)
