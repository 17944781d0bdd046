"""The parameter server without Ray: exactly-once in-order pushes, staleness, dropping, equivalence, restart."""

import numpy as np
import pytest
import torch

from rayac.config import Config, build_config
from rayac.envs import describe_env
from rayac.workers.a3c_worker import A3CWorker
from rayac.workers.learner import Learner, apply_gradients, build_optimizer
from rayac.workers.parameter_server import ParameterServer
from rayac.workers.rollout import RolloutWorker


@pytest.fixture
def setup(cartpole_spec):
    return Config(algo={"name": "a3c", "max_grad_norm": None}), cartpole_spec


def synthetic_grads(ps, n, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=p.shape).astype(np.float32) for p in ps.policy.parameters()] for _ in range(n)]


def weights(module):
    return [p.detach().clone() for p in module.parameters()]


def test_pushes_apply_exactly_once_in_order(setup):
    cfg, spec = setup
    ps = ParameterServer(cfg, spec)
    reference = ParameterServer(cfg, spec)  # same seed → same initial weights
    grads = synthetic_grads(ps, 6)
    for i, g in enumerate(grads):
        result = ps.push(g, ps.version)
        assert result.applied and result.version == i + 1
    # the same gradients applied by hand, in the same order, give bit-identical weights
    opt = build_optimizer(reference.policy, cfg.optim)
    for g in grads:
        opt.zero_grad()
        apply_gradients(reference.policy, opt, g, None)
    for a, b in zip(weights(ps.policy), weights(reference.policy), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a different order (or a doubled push) gives different weights: the check above has teeth
    other = ParameterServer(cfg, spec)
    for g in [grads[1], grads[0], *grads[2:]]:
        other.push(g, other.version)
    assert any(not torch.equal(a, b) for a, b in zip(weights(ps.policy), weights(other.policy), strict=True))
    assert ps.total_pushes == 6 and ps.get_stats()["metrics"]["a3c/pushes"] == 6


def test_staleness_is_server_version_minus_gradient_version(setup):
    cfg, spec = setup
    ps = ParameterServer(cfg, spec)
    g = synthetic_grads(ps, 1)[0]
    for _ in range(3):
        ps.push(g, ps.version)  # staleness 0, version → 3
    ps.get_stats()
    ps.push(g, 1)  # 3 − 1 = 2
    ps.push(g, 4)  # 4 − 4 = 0
    ps.push(g, 0)  # 5 − 0 = 5
    m = ps.get_stats()["metrics"]
    assert m["a3c/staleness_max"] == 5 and m["a3c/staleness_mean"] == pytest.approx(7 / 3)
    assert ps.version == 6


def test_max_staleness_drops_exactly_the_stale_ones(setup):
    cfg, spec = setup
    cfg = cfg.model_copy(update={"algo": cfg.algo.model_copy(update={"max_staleness": 2})})
    ps = ParameterServer(cfg, spec)
    g = synthetic_grads(ps, 1)[0]
    for _ in range(5):
        ps.push(g, ps.version)
    before = weights(ps.policy)
    lags = [0, 1, 2, 3, 7, 2]  # relative to the server version at each push
    applied = [ps.push(g, ps.version - lag).applied for lag in lags]
    assert applied == [True, True, True, False, False, True]
    assert ps.version == 5 + 4 and ps.total_dropped == 2
    assert ps.get_stats()["metrics"]["a3c/dropped"] == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, weights(ps.policy), strict=True))


def test_a_gradient_from_before_a_server_restart_is_never_applied(setup):
    cfg, spec = setup
    ps = ParameterServer(cfg, spec)
    g = synthetic_grads(ps, 1)[0]
    result = ps.push(g, 10)  # the server is at 0: this worker pulled from a previous incarnation
    assert not result.applied and ps.version == 0


def test_one_push_equals_the_synchronous_a2c_step():
    cfg = build_config(preset="a2c_cartpole", overrides=["algo.max_grad_norm=0.5"])
    spec = describe_env(cfg.env)
    learner = Learner(cfg, spec)
    ps = ParameterServer(cfg, spec)
    for a, b in zip(weights(learner.policy), weights(ps.policy), strict=True):
        assert torch.equal(a, b)
    sync_worker = RolloutWorker(cfg, spec)
    async_worker = A3CWorker(cfg, spec)  # same index → same env seeds → the same rollout
    sync_worker.set_weights(learner.get_weights(), 0)
    learner.update([sync_worker.sample()])
    async_worker.run(ps, max_pushes=1)
    assert ps.version == learner.version == 1
    for a, b in zip(weights(learner.policy), weights(ps.policy), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_server_restarts_from_its_own_checkpoint(setup, tmp_path):
    cfg, spec = setup
    cfg = cfg.model_copy(
        update={
            "run": cfg.run.model_copy(update={"run_dir": str(tmp_path)}),
            "algo": cfg.algo.model_copy(update={"ps_checkpoint_interval": 4}),
        }
    )
    ps = ParameterServer(cfg, spec)
    for g in synthetic_grads(ps, 10):
        ps.push(g, ps.version)
    saved = weights(ps.policy)
    reborn = ParameterServer(cfg, spec)  # what Ray does when the process dies: run __init__ again
    assert reborn.version == 8 and reborn.restored_from == 8  # the last multiple of 4: at most K lost
    assert reborn.get_stats()["restored_from"] == 8
    assert any(not torch.equal(a, b) for a, b in zip(saved, weights(reborn.policy), strict=True))
    assert not list(tmp_path.glob(".tmp-*"))
