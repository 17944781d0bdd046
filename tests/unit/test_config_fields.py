"""Config fields that change what gets built: each test fails if its field were ignored.

Every config goes through ``build_config`` with ``--set``-style overrides, as the CLI and the service do.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rayac.advantages import compute_advantages
from rayac.algorithms.a2c import A2C
from rayac.config import build_config
from rayac.envs import describe_env, make_vector_env
from rayac.learning.learner import Learner
from rayac.policy import build_policy
from rayac.sampling.rollout import RolloutWorker


def linear_widths(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_critic_hidden_sizes_shape_the_critic_only():
    cfg = build_config(overrides=["model.hidden_sizes=[64, 64]", "model.critic_hidden_sizes=[32, 16]"])
    policy = build_policy(describe_env(cfg.env), cfg.model, estimator="gae")
    assert linear_widths(policy.actor_body) == [(4, 64), (64, 64)]
    assert linear_widths(policy.critic_body) == [(4, 32), (32, 16)]
    assert (policy.value_head.in_features, policy.policy_head.in_features) == (16, 64)
    default = build_policy(describe_env(cfg.env), build_config().model, estimator="gae")
    assert linear_widths(default.critic_body) == [(4, 64), (64, 64)]  # unset: the actor's widths


@pytest.mark.parametrize(("name", "module"), [("tanh", nn.Tanh), ("relu", nn.ReLU), ("elu", nn.ELU)])
def test_activation_is_the_one_configured(name, module):
    cfg = build_config(overrides=[f"model.activation={name}", "model.architecture=shared"])
    policy = build_policy(describe_env(cfg.env), cfg.model, estimator="gae")
    kinds = {type(m) for m in policy.actor_body.modules()} & {nn.Tanh, nn.ReLU, nn.ELU}
    assert kinds == {module}
    obs = torch.full((1, 4), -3.0)  # negative inputs tell the three apart
    hidden = policy.actor_body(obs)
    if name == "relu":
        assert (hidden >= 0).all()
    elif name == "elu":
        assert (hidden > -1).all() and (hidden < 0).any()
    else:
        assert (hidden.abs() < 1).all() and (hidden < 0).any()


def _gram(weight: torch.Tensor) -> torch.Tensor:
    """W Wᵀ for a wide matrix, Wᵀ W for a tall one: gain² · I exactly when W is a scaled orthogonal matrix."""
    w = weight.detach()
    return w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w


def test_ortho_init_gives_scaled_orthogonal_weights_and_zero_biases():
    spec = describe_env(build_config().env)
    torch.manual_seed(0)
    ortho = build_policy(spec, build_config(overrides=["model.ortho_init=true"]).model, estimator="gae")
    torch.manual_seed(0)
    plain = build_policy(spec, build_config(overrides=["model.ortho_init=false"]).model, estimator="gae")

    hidden = [m for m in ortho.actor_body.modules() if isinstance(m, nn.Linear)]
    for layer in hidden:  # gain √2 on the hidden layers
        eye = torch.eye(min(layer.weight.shape))
        torch.testing.assert_close(_gram(layer.weight), 2.0 * eye, atol=1e-5, rtol=0)
        assert not layer.bias.any()
    torch.testing.assert_close(_gram(ortho.policy_head.weight), 1e-4 * torch.eye(2), atol=1e-8, rtol=0)
    torch.testing.assert_close(_gram(ortho.value_head.weight), torch.eye(1), atol=1e-5, rtol=0)

    # torch's default (Kaiming-uniform) init is neither orthogonal nor bias-free
    first = next(m for m in plain.actor_body.modules() if isinstance(m, nn.Linear))
    assert not torch.allclose(_gram(first.weight), 2.0 * torch.eye(4), atol=1e-2)
    assert first.bias.abs().sum() > 0
    assert plain.policy_head.weight.abs().max() > 0.05  # not the 0.01-gain head


def test_rmsprop_builds_rmsprop_with_its_alpha_and_both_learning_rates():
    cfg = build_config(overrides=["optim.name=rmsprop", "optim.rmsprop_alpha=0.9", "optim.eps=0.001",
                                  "optim.actor_lr=0.0001", "optim.critic_lr=0.002"])  # fmt: skip
    learner = Learner(cfg, describe_env(cfg.env))
    opt = learner.optimizer
    assert isinstance(opt, torch.optim.RMSprop)
    assert [(g["name"], g["lr"], g["alpha"], g["eps"]) for g in opt.param_groups] == [
        ("actor", 1e-4, 0.9, 1e-3),
        ("critic", 2e-3, 0.9, 1e-3),
    ]
    assert isinstance(Learner(build_config(), describe_env(cfg.env)).optimizer, torch.optim.Adam)


def test_learner_threads_is_what_the_learner_runs_with(monkeypatch):
    """In-process A2C: the sampling worker shares the learner's process, and must not pin it to one thread."""
    seen = []
    update = Learner.update

    def spy(self, rollouts):
        seen.append(torch.get_num_threads())
        return update(self, rollouts)

    monkeypatch.setattr(Learner, "update", spy)
    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            cfg = build_config(overrides=[f"resources.learner_threads={threads}"])
            torch.set_num_threads(cfg.resources.learner_threads)  # what the Runner does for the driver
            algo = A2C(cfg, describe_env(cfg.env))
            try:
                algo.train_step()
            finally:
                algo.stop()
    finally:
        torch.set_num_threads(before)
    assert seen == [2, 1]


def test_async_vectorization_steps_in_subprocesses_with_the_same_results():
    sync_cfg = build_config(overrides=["env.num_envs=3", "env.vectorization=sync"])
    async_cfg = build_config(overrides=["env.num_envs=3", "env.vectorization=async"])
    envs = make_vector_env(async_cfg.env, seed=5)
    try:
        assert isinstance(envs, gym.vector.AsyncVectorEnv)
    finally:
        envs.close()
    spec = describe_env(sync_cfg.env)
    rollouts = []
    for cfg in (sync_cfg, async_cfg):
        torch.manual_seed(0)
        worker = RolloutWorker(cfg, spec)
        try:
            rollouts.append(worker.sample(40))
        finally:
            worker.close()
    sync_ro, async_ro = rollouts
    assert sync_ro.terminated.any()  # episodes ended and were reset inside the window
    for field in ("obs", "actions", "rewards", "terminated", "truncated", "values"):
        np.testing.assert_array_equal(getattr(sync_ro, field), getattr(async_ro, field), err_msg=field)


def test_n_step_from_the_config_sets_the_target_horizon():
    """Counter env: reward 1 per step, a time limit of 3. With n=2 a step two or more before its episode's end
    bootstraps R_t = 1 + γ + γ² V(s_{t+2}); the default (n=None) runs to the rollout's end instead."""
    overrides = [
        "env.id=rayac-test/Counter-v0",
        "env.num_envs=2",
        "algo.rollout_steps=7",
        "algo.estimator=nstep",
    ]
    cfg2 = build_config(overrides=[*overrides, "algo.n_step=2"])
    default = build_config(overrides=overrides)
    assert cfg2.algo.n_step == 2 and default.algo.n_step is None
    torch.manual_seed(0)
    ro = RolloutWorker(cfg2, describe_env(cfg2.env)).sample()
    gamma, v = cfg2.algo.gamma, ro.values
    _, returns = compute_advantages(ro, cfg2.algo)
    _, default_returns = compute_advantages(ro, default.algo)
    done = ro.terminated | ro.truncated
    # episodes are steps 0-2 and 3-5: t=0 and t=3 are two steps from their end, so n=2 bootstraps at t+2
    for t in (0, 3):
        assert not done[t : t + 2].any()
        np.testing.assert_allclose(returns[t], 1 + gamma + gamma**2 * v[t + 2], rtol=1e-6)
    # the default runs on to the episode's end: R_0 = 1 + γ + γ² + γ³ V(final obs of step 2)
    np.testing.assert_allclose(
        default_returns[0], 1 + gamma + gamma**2 + gamma**3 * ro.final_values[2], rtol=1e-6
    )
    assert not np.allclose(returns[[0, 3]], default_returns[[0, 3]])
    # steps one from their episode's end (and the rollout's last step) reach the same bootstrap either way
    np.testing.assert_allclose(returns[[1, 2, 4, 5, 6]], default_returns[[1, 2, 4, 5, 6]], rtol=1e-6)
