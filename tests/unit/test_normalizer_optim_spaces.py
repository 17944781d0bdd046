"""Policy-owned normalisers, TF-style RMSprop, image / action space rules, missing extras."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from rayac.a3c.flat import shared_tensor
from rayac.checkpoint import load_policy, save_checkpoint
from rayac.config import ConfigError, build_config
from rayac.envs import SpaceSpec, check_config_against_env, image_layout
from rayac.evaluate import Evaluator
from rayac.learning.learner import Learner
from rayac.normalizer import Moments, combine, moments
from rayac.optimizers import RMSpropTF, fused_adam_step
from rayac.policy import build_policy
from rayac.sampling.rollout import RolloutWorker


def test_combined_moments_equal_the_moments_of_all_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 2, size=(50, 3)), rng.normal(-1, 0.5, size=(7, 3))
    merged = combine(moments(a, (3,)), moments(b, (3,)))
    both = np.concatenate([a, b])
    np.testing.assert_allclose(merged.mean, both.mean(0))
    np.testing.assert_allclose(merged.var, both.var(0))
    assert merged.count == 57


def test_learner_merges_every_workers_statistics_and_workers_sample_with_them():
    cfg = build_config(overrides=["env.id=Pendulum-v1", "env.num_envs=2", "model.normalize_obs=true",
                                  "algo.scale_rewards=true", "algo.rollout_steps=16"])  # fmt: skip
    spec = check_config_against_env(cfg)
    learner = Learner(cfg, spec)
    workers = [RolloutWorker(cfg, spec, worker_index=i) for i in range(2)]
    rollouts = [w.sample() for w in workers]
    learner.update(rollouts)
    all_obs = np.concatenate([r.obs.reshape(-1, 3) for r in rollouts]).astype(np.float64)
    norm = learner.policy.obs_norm
    # the prior count (1e-4) at mean 0 / var 1 moves the result by ~1e-6 only
    np.testing.assert_allclose(norm.mean.numpy(), all_obs.mean(0), atol=1e-4)
    np.testing.assert_allclose(norm.var.numpy(), all_obs.var(0), rtol=1e-3, atol=1e-4)
    assert float(learner.policy.return_norm.count) == pytest.approx(64, abs=1e-3)

    # the merged statistics travel with the weights, and scale the next rollout's rewards
    weights = learner.get_weights()
    assert {"obs_norm.mean", "obs_norm.var", "return_norm.var"} <= set(weights)
    workers[0].set_weights(weights, 1)
    scale = workers[0].policy.return_norm.std()
    raw_rewards = []
    original_step = workers[0].envs.step

    def recording_step(actions):
        out = original_step(actions)
        raw_rewards.append(out.rewards.copy())
        return out

    workers[0].envs.step = recording_step
    ro = workers[0].sample()
    np.testing.assert_allclose(ro.rewards, np.clip(np.stack(raw_rewards) / scale, -10, 10), rtol=1e-5)
    assert scale > 1.5  # Pendulum's returns are large: scaling is not the identity here


def test_normaliser_is_saved_loaded_applied_by_act_and_frozen_in_evaluation(tmp_path):
    cfg = build_config(overrides=["env.id=Pendulum-v1", "model.normalize_obs=true", "run.eval_episodes=2"])
    spec = check_config_against_env(cfg)
    policy = build_policy(spec, cfg.model, estimator="gae")
    policy.obs_norm.merge([Moments(np.array([0.5, -0.2, 3.0]), np.array([0.1, 0.2, 4.0]), 1000.0)])
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    save_checkpoint(tmp_path / "ckpt", weights=policy.state_dict(), optimizer_state=None, cfg=cfg, spec=spec,
                    state={"env_steps": 0})  # fmt: skip

    loaded = load_policy(tmp_path / "ckpt")
    torch.testing.assert_close(loaded.policy.obs_norm.mean, state["obs_norm.mean"])
    obs = np.array([[1.0, 0.0, 2.0], [-0.5, 0.3, -4.0]], dtype=np.float32)
    with torch.no_grad():  # by hand: normalise, clip, then the actor
        x = torch.clamp((torch.tensor(obs) - state["obs_norm.mean"]) / torch.sqrt(state["obs_norm.var"] + 1e-8),
                        -10, 10)  # fmt: skip
        expected = policy.policy_head(policy.actor_body(x)).numpy()
    np.testing.assert_allclose(loaded.act(obs), np.clip(expected, -2, 2), rtol=1e-5)

    evaluator = Evaluator(cfg.env, build_policy(spec, cfg.model, estimator="gae"), episodes=2, max_steps=50)
    evaluator.evaluate({k: v.numpy() for k, v in state.items()})
    torch.testing.assert_close(evaluator.policy.obs_norm.mean, state["obs_norm.mean"])  # never updated
    evaluator.close()


def test_rmsprop_tf_puts_eps_inside_the_square_root():
    p = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = RMSpropTF([p], lr=0.1, alpha=0.9, eps=1e-5)
    v = np.ones(2)  # TF starts the mean square at 1
    theta = np.ones(2)
    for g in ([1e-5, 2.0], [3e-6, -1.0]):
        p.grad = torch.tensor(g)
        opt.step()
        v = 0.9 * v + 0.1 * np.square(g)
        theta = theta - 0.1 * np.asarray(g) / np.sqrt(v + 1e-5)
    np.testing.assert_allclose(p.detach().numpy(), theta, rtol=1e-6)

    cfg = build_config(overrides=["optim.name=rmsprop_tf"])
    learner = Learner(cfg, check_config_against_env(cfg))
    assert isinstance(learner.optimizer, RMSpropTF)
    assert [g["lr"] for g in learner.optimizer.param_groups] == [cfg.optim.lr, cfg.optim.lr]


class GridActionEnv(gym.Env):
    """A (2, 2) Box action; reward −|a − target|."""

    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (2, 2), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        assert action.shape == (2, 2), action.shape
        self.t += 1
        return np.zeros(3, np.float32), -float(np.abs(action - 0.5).sum()), False, self.t >= 10, {}


if "rayac-test/GridAction-v0" not in gym.registry:
    gym.register("rayac-test/GridAction-v0", entry_point=GridActionEnv)


@pytest.mark.parametrize("critic_lr", [5e-3, 1e-3])  # 1e-3: both groups with the same settings
@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_adam_step_is_torchs_fused_adam_bit_for_bit(weight_decay, explicit, critic_lr):
    """The parameter server's shortcut around ``Adam.step()`` gives the same bits, step after step, with two groups
    at different or equal learning rates, reading ``p.grad`` or gradients handed over read-only (never written);
    it declines (False, nothing changed) where it does not apply."""
    torch.manual_seed(0)
    init = [torch.randn(300), torch.randn(70)]
    pairs = []
    for _ in range(2):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = torch.optim.Adam([{"params": [params[0]], "lr": 1e-3}, {"params": [params[1]], "lr": critic_lr}],
                               eps=1e-5, weight_decay=weight_decay, fused=True)  # fmt: skip
        pairs.append((params, opt))
    (ref, ref_opt), (fast, fast_opt) = pairs
    for step in range(6):
        grads = [torch.randn_like(t) for t in init]
        for p, g in zip(ref, grads, strict=True):
            p.grad = g.clone()
        ref_opt.step()
        if step == 0:
            for p, g in zip(fast, grads, strict=True):
                p.grad = g.clone()
            assert not fused_adam_step(fast_opt)  # no state yet: torch's own first step creates it
            fast_opt.step()
        elif explicit:
            arrays = [g.numpy().copy() for g in grads]
            for a in arrays:
                a.flags.writeable = False  # as Ray hands a pushed buffer over
            for p in fast:
                p.grad = None
            assert fused_adam_step(fast_opt, {p: shared_tensor(a) for p, a in zip(fast, arrays, strict=True)})
            assert all(np.array_equal(a, g.numpy()) for a, g in zip(arrays, grads, strict=True))
        else:
            for p, g in zip(fast, grads, strict=True):
                p.grad = g.clone()
            assert fused_adam_step(fast_opt)
    for a, b in zip(ref, fast, strict=True):
        assert torch.equal(a, b)
    for pa, pb in zip(ref, fast, strict=True):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(ref_opt.state[pa][key], fast_opt.state[pb][key]), key
    assert not torch.equal(ref[0], init[0])  # it did train
    foreach = torch.optim.Adam([torch.nn.Parameter(torch.randn(4))], foreach=True)
    amsgrad = torch.optim.Adam([torch.nn.Parameter(torch.randn(4))], fused=True, amsgrad=True)
    for opt in (foreach, amsgrad, RMSpropTF([torch.nn.Parameter(torch.randn(4))])):
        opt.param_groups[0]["params"][0].grad = torch.ones(4)
        opt.step()
        assert not fused_adam_step(opt)


def test_multi_dimensional_box_actions_keep_their_shape(tmp_path):
    cfg = build_config(
        overrides=["env.id=rayac-test/GridAction-v0", "env.num_envs=3", "algo.rollout_steps=4"]
    )
    spec = check_config_against_env(cfg)
    assert spec.action_shape == (2, 2)
    worker, learner = RolloutWorker(cfg, spec), Learner(cfg, spec)
    ro = worker.sample()
    assert ro.actions.shape == (4, 3, 2, 2)
    assert np.isfinite(learner.update([ro])["train/loss"])
    save_checkpoint(tmp_path / "c", weights=learner.policy.state_dict(), optimizer_state=None, cfg=cfg, spec=spec,
                    state={"env_steps": 12})  # fmt: skip
    assert load_policy(tmp_path / "c").act(np.zeros((5, 3), np.float32)).shape == (5, 2, 2)


def test_only_uint8_images_bounded_0_255_go_to_the_cnn_and_bad_layouts_name_the_shape():
    as_float = SpaceSpec.from_spaces(gym.spaces.Box(0, 1, (4, 84, 84), np.float32), gym.spaces.Discrete(2))
    assert not as_float.is_image  # float images are never divided by 255
    assert SpaceSpec.from_spaces(
        gym.spaces.Box(0, 255, (84, 84, 3), np.uint8), gym.spaces.Discrete(2)
    ).is_image
    assert not SpaceSpec.from_spaces(
        gym.spaces.Box(0, 9, (4, 84, 84), np.uint8), gym.spaces.Discrete(2)
    ).is_image
    assert image_layout((4, 84, 84)) == "chw" and image_layout((84, 84, 3)) == "hwc"
    with pytest.raises(ConfigError, match=r"\(84, 84, 84\)"):
        image_layout((84, 84, 84))
    with pytest.raises(ConfigError, match=r"\(4, 20, 20\)"):
        image_layout((4, 20, 20))


@pytest.mark.parametrize(
    ("module", "env_id", "extra"),
    [
        ("ale_py", "ALE/Pong-v5", "atari"),
        ("mujoco", "HalfCheetah-v5", "mujoco"),
        ("Box2D", "LunarLander-v3", "box2d"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it_and_exit_2(module, env_id, extra):
    # a fresh interpreter where the extra's package cannot be imported
    code = (f"import sys; sys.modules[{module!r}] = None; from rayac.cli import main; "
            f"sys.exit(main(['train', '--env', {env_id!r}]))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and f"pip install 'rayac[{extra}]'" in lines[0] and "env.id" in lines[0], (
        proc.stderr
    )


def test_linear_lr_schedule_anneals_to_zero_and_survives_a_checkpoint():
    cfg = build_config(overrides=["optim.lr_schedule=linear", "optim.lr=0.01", "run.stop.total_env_steps=400",
                                  "env.num_envs=4", "algo.rollout_steps=25"])  # fmt: skip
    spec = check_config_against_env(cfg)
    learner, worker = Learner(cfg, spec), RolloutWorker(cfg, spec)
    lrs = [learner.update([worker.sample()])["train/lr"] for _ in range(2)]
    assert lrs == pytest.approx([0.01 * 0.75, 0.01 * 0.5])  # 100 steps per update of 400
    resumed = Learner(cfg, spec)
    resumed.optimizer.load_state_dict(learner.optimizer.state_dict())
    assert resumed.update([worker.sample()])["train/lr"] == pytest.approx(0.01 * 0.25)
    with pytest.raises(ConfigError, match="optim.lr_schedule"):
        build_config(overrides=["optim.lr_schedule=linear", "algo.name=a3c"])
