import numpy as np
import torch

from rayac.config import AlgoConfig, Config
from rayac.envs import SpaceSpec, describe_env
from rayac.losses import actor_critic_loss
from rayac.policy import build_policy
from rayac.sampling.rollout import RolloutWorker
from rayac.types import Batch


def counter_cfg(**algo):
    return Config.model_validate(
        {"env": {"id": "rayac-test/Counter-v0", "num_envs": 2}, "algo": {"rollout_steps": 7, **algo}}
    )


def test_truncation_bootstraps_from_the_final_observation():
    cfg = counter_cfg()
    spec = describe_env(cfg.env)
    worker = RolloutWorker(cfg, spec)
    ro = worker.sample()
    # time limit 3: steps t=2 and t=5 are truncated, never terminated
    assert ro.truncated[:, 0].tolist() == [False, False, True, False, False, True, False]
    assert not ro.terminated.any()
    # obs after autoreset is the new episode's first observation, the final one (t=3) is bootstrapped
    assert ro.obs[3, 0, 0] == 0.0
    with torch.no_grad():
        v_final = worker.policy.value(torch.tensor([[3.0]])).item()
    np.testing.assert_allclose(ro.final_values[2, 0], v_final, rtol=1e-5)
    np.testing.assert_allclose(ro.final_values[5, 1], v_final, rtol=1e-5)
    assert ro.final_values[0, 0] == 0.0
    assert ro.episode_lengths.tolist() == [3, 3, 3, 3] and ro.episode_returns.tolist() == [3.0] * 4
    assert ro.env_steps == 14


def test_episode_mode_pads_after_each_envs_episode():
    cfg = counter_cfg(estimator="mc")
    worker = RolloutWorker(cfg, describe_env(cfg.env))
    ro = worker.sample()
    assert ro.obs.shape[0] == 3 and ro.mask.all() and ro.truncated[-1].all()
    assert len(ro.episode_returns) == 2


def _batch(policy, actions, advantages, returns):
    obs = torch.zeros(len(actions), *policy.spec.obs_shape)
    return Batch(
        obs,
        torch.as_tensor(actions),
        torch.as_tensor(advantages, dtype=torch.float32),
        torch.as_tensor(returns, dtype=torch.float32),
    )


def test_positive_advantage_raises_the_log_prob_of_its_action(cartpole_spec):
    cfg, spec = Config(), cartpole_spec
    torch.manual_seed(0)
    policy = build_policy(spec, cfg.model, estimator="gae")
    batch = _batch(policy, [1, 1], [1.0, 1.0], [0.0, 0.0])
    before, _, _ = policy.evaluate_actions(batch.obs, batch.actions)
    loss, _ = actor_critic_loss(policy, batch, AlgoConfig(vf_coef=0.0, ent_coef=0.0))
    loss.backward()
    with torch.no_grad():
        for p in policy.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    after, _, _ = policy.evaluate_actions(batch.obs, batch.actions)
    assert (after > before).all()


def test_entropy_bonus_lowers_the_loss_and_value_term_is_mse(cartpole_spec):
    cfg, spec = Config(), cartpole_spec
    policy = build_policy(spec, cfg.model, estimator="gae")
    batch = _batch(policy, [0, 1], [0.0, 0.0], [3.0, -1.0])
    _, ent, values = policy.evaluate_actions(batch.obs, batch.actions)
    l0, m0 = actor_critic_loss(policy, batch, AlgoConfig(ent_coef=0.0, vf_coef=1.0))
    l1, _ = actor_critic_loss(policy, batch, AlgoConfig(ent_coef=0.1, vf_coef=1.0))
    assert m0["train/entropy"] > 0
    np.testing.assert_allclose(l0.item() - l1.item(), 0.1 * ent.mean().item(), rtol=1e-5)
    expected_mse = ((values - batch.returns) ** 2).mean().item()
    np.testing.assert_allclose(m0["train/value_loss"], expected_mse, rtol=1e-5)
    assert m0["train/policy_loss"] == 0.0


def test_gaussian_policy_log_prob_matches_torch_normal():
    spec = describe_env(Config(env={"id": "Pendulum-v1"}).env)
    policy = build_policy(spec, Config().model, estimator="gae")
    obs = torch.randn(5, 3)
    actions, _, log_prob = policy.rollout_step(obs)
    mean = policy.policy_head(policy.actor_body(obs))
    ref = torch.distributions.Normal(mean, policy.log_std.exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(log_prob, ref)
    _, entropy, _ = policy.evaluate_actions(obs, actions)
    torch.testing.assert_close(
        entropy, torch.distributions.Normal(mean, policy.log_std.exp()).entropy().sum(-1)
    )


def test_q_critic_value_is_policy_weighted_q():
    cfg = Config(algo={"estimator": "q"})
    policy = build_policy(describe_env(cfg.env), cfg.model, estimator="q")
    obs = torch.randn(4, 4)
    probs = policy.action_probs(obs)
    q = policy.value_head(policy.critic_body(obs))
    torch.testing.assert_close(policy.value(obs), (probs * q).sum(-1))


def test_cnn_encoder_for_image_observations():
    spec = SpaceSpec(
        obs_shape=(84, 84, 4),
        obs_dtype="uint8",
        obs_low=None,
        obs_high=None,
        action_kind="discrete",
        action_n=6,
        action_shape=(),
        action_low=None,
        action_high=None,
    )
    policy = build_policy(spec, Config().model, estimator="gae")
    actions, values, log_prob = policy.rollout_step(torch.randint(0, 255, (2, 84, 84, 4), dtype=torch.uint8))
    assert actions.shape == (2,) and values.shape == (2,) and log_prob.shape == (2,)
    assert policy.actor_body.channels_last


def test_bfloat16_encoder_trains_float32_weights_and_serves_as_it_trained(tmp_path):
    """model.encoder_dtype=bfloat16: the CNN trunk runs in bfloat16 (its outputs differ from float32's, a little),
    the weights and their gradients stay float32, and a saved policy acts with the trunk it trained with."""
    from rayac.checkpoint import load_policy, save_checkpoint

    spec = SpaceSpec(obs_shape=(4, 84, 84), obs_dtype="uint8", obs_low=None, obs_high=None, action_kind="discrete",
                     action_n=6, action_shape=(), action_low=None, action_high=None)  # fmt: skip
    cfg = Config(model={"architecture": "shared", "encoder_dtype": "bfloat16"})
    torch.manual_seed(0)
    bf16 = build_policy(spec, cfg.model, estimator="gae")
    fp32 = build_policy(spec, Config(model={"architecture": "shared"}).model, estimator="gae")
    fp32.load_state_dict(bf16.state_dict())
    obs = torch.randint(0, 255, (8, 4, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, 6, (8,))
    log_p, entropy, values = bf16.evaluate_actions(obs, actions)
    ref_log_p, _, ref_values = fp32.evaluate_actions(obs, actions)
    assert log_p.dtype == values.dtype == torch.float32
    assert not torch.equal(values, ref_values)  # it did compute in bfloat16
    torch.testing.assert_close(values, ref_values, rtol=0.05, atol=0.05)
    torch.testing.assert_close(log_p, ref_log_p, rtol=0.01, atol=0.01)
    (values.sum() - log_p.sum()).backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
               for p in bf16.parameters())  # fmt: skip
    save_checkpoint(tmp_path / "ckpt", weights=bf16.state_dict(), optimizer_state=None, cfg=cfg, spec=spec,
                    state={"env_steps": 0})  # fmt: skip
    loaded = load_policy(tmp_path / "ckpt")
    with torch.no_grad():
        expected = bf16.policy_head(bf16._encode(bf16.actor_body, obs)).argmax(-1).numpy()
    np.testing.assert_array_equal(loaded.act(obs.numpy()), expected)
