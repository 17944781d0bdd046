"""A3C with the policy's normalisers: the leader shard merges what every push measured and hands the totals out
with its replies; the driver's checkpoint, a resume and a restarted shard keep them."""

import numpy as np
import pytest
import torch

from rayac.a3c.driver import A3C
from rayac.a3c.messages import ShardState
from rayac.a3c.store import ShardStore
from rayac.config import build_config
from rayac.envs import describe_env
from rayac.normalizer import Moments

PRIOR = 1e-4  # RunningNorm's prior count


def pendulum(*overrides):
    return build_config(overrides=[
        "algo.name=a3c", "env.id=Pendulum-v1", "env.num_envs=4", "algo.rollout_steps=8", "model.normalize_obs=true",
        "algo.scale_rewards=true", "resources.num_workers=0", "run.progress_bar=false", *overrides,
    ])  # fmt: skip


@pytest.mark.parametrize("shards", [1, 2])
def test_the_leader_merges_every_push_and_the_worker_samples_with_the_totals(shards):
    cfg = pendulum(f"algo.ps_shards={shards}")
    algo = A3C(cfg, describe_env(cfg.env))
    try:
        steps = sum(algo.train_step().num_steps for _ in range(6))
        lead = algo.shards[0].norms
        assert steps == 6 * 4 * 8 and float(lead["obs_norm"].count) == pytest.approx(PRIOR + steps)
        assert float(lead["obs_norm"].mean.abs().sum()) > 0 and float(lead["return_norm"].count) > PRIOR
        assert all(not s.norms for s in algo.shards[1:])  # only the leader keeps statistics
        worker = algo.local_worker.policy.normalizers()
        for name, norm in lead.items():  # the last push's reply carried them to the worker
            assert torch.equal(worker[name].mean, norm.mean) and torch.equal(worker[name].var, norm.var)

        weights, _, version = algo.checkpoint_state()
        assert torch.equal(torch.as_tensor(weights["obs_norm.mean"]), lead["obs_norm"].mean)
        assert float(weights["obs_norm.count"]) == pytest.approx(PRIOR + steps)
        assert torch.equal(torch.as_tensor(algo.get_weights()["obs_norm.var"]), lead["obs_norm"].var)
    finally:
        algo.stop()

    # a resume with another shard count hands the statistics to the new leader
    other = A3C(pendulum(f"algo.ps_shards={3 - shards}"), describe_env(cfg.env))
    try:
        other.restore(weights, None, version)
        assert torch.equal(other.shards[0].norms["obs_norm"].mean, torch.as_tensor(weights["obs_norm.mean"]))
        assert float(other.shards[0].norms["return_norm"].count) == float(weights["return_norm.count"])
    finally:
        other.stop()


def test_a_shard_checkpoint_keeps_the_statistics_and_a_rollback_restores_them(tmp_path):
    cfg = pendulum()
    algo = A3C(cfg, describe_env(cfg.env))
    try:
        algo.train_step()
        lead = algo.shards[0]
        saved = lead.get_state()
        assert set(saved.norms) == {"obs_norm", "return_norm"}
        store = ShardStore(tmp_path, 0, 1)
        store.save(saved)
        loaded = store.load(saved.version)
        for name, m in saved.norms.items():
            np.testing.assert_array_equal(loaded.norms[name].mean, m.mean)
            assert loaded.norms[name].count == m.count
        algo.train_step()
        assert float(lead.norms["obs_norm"].count) > saved.norms["obs_norm"].count
        lead._load(loaded)  # what a rollback or a restarted leader does with its checkpoint
        assert float(lead.norms["obs_norm"].count) == pytest.approx(saved.norms["obs_norm"].count)
    finally:
        algo.stop()


def test_a_state_without_statistics_leaves_them_alone():
    cfg = pendulum()
    algo = A3C(cfg, describe_env(cfg.env))
    try:
        algo.train_step()
        lead = algo.shards[0]
        before = lead.norms["obs_norm"].moments()
        state = lead.get_state()
        lead._load(ShardState(state.lo, state.hi, state.version, state.params, state.optimizer, None))
        assert lead.norms["obs_norm"].moments().count == before.count
        assert isinstance(before, Moments)
    finally:
        algo.stop()


def test_an_a3c_run_saves_its_statistics_and_a_resume_continues_them(tmp_path):
    import rayac
    from tests.runs import resume_run

    cfg = pendulum("run.stop.total_env_steps=640", "run.eval_interval_steps=0", "run.eval_episodes=1",
                   "run.tensorboard=false")  # fmt: skip
    first = rayac.train(cfg, run_dir=tmp_path / "run")
    norm = rayac.load_policy(first.run_dir).policy.obs_norm
    assert float(norm.count) == pytest.approx(
        PRIOR + first.env_steps
    )  # in process: one push per step, all kept
    second = resume_run(tmp_path / "run", "run.stop.total_env_steps=1280")
    norm = rayac.load_policy(second.run_dir).policy.obs_norm
    assert second.env_steps == 1280 and float(norm.count) == pytest.approx(PRIOR + 1280)
