"""The parameter server without Ray: exactly-once in-order pushes, staleness, dropping, equivalence, restart."""

import numpy as np
import pytest
import torch

from rayac.a3c import worker as a3c_worker
from rayac.a3c.driver import A3C
from rayac.a3c.flat import FlatLayout, clip_coefficient, ordered_parameters
from rayac.a3c.messages import GradientPush
from rayac.a3c.server import ParameterServer
from rayac.a3c.worker import A3CWorker
from rayac.config import Config, build_config
from rayac.envs import describe_env
from rayac.learning.learner import Learner, apply_gradients, build_optimizer
from rayac.policy import build_policy


@pytest.fixture
def setup(cartpole_spec):
    return Config(algo={"name": "a3c", "max_grad_norm": None}), cartpole_spec


def synthetic_grads(ps, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=ps.layout.total).astype(np.float32) for _ in range(n)]


def weights(ps):
    return ps.flat.clone()


def test_pushes_apply_exactly_once_in_order(setup):
    cfg, spec = setup
    ps = ParameterServer(cfg, spec)
    grads = synthetic_grads(ps, 6)
    for i, g in enumerate(grads):
        result = ps.push(GradientPush(ps.version, g))
        assert result.applied and result.version == i + 1
    # the same gradients applied by hand to the whole policy, in the same order, give bit-identical weights
    torch.manual_seed(cfg.env.seed)
    reference = build_policy(spec, cfg.model, estimator=cfg.algo.estimator)
    layout = FlatLayout.of(reference)
    opt = build_optimizer(reference, cfg.optim)
    for group in opt.param_groups:  # the server steps Adam fused (see ParameterServer.__init__)
        group["foreach"], group["fused"] = False, True
    params = ordered_parameters(reference)
    for g in grads:
        opt.zero_grad()
        for p, o, shape in zip(params, layout.offsets, layout.shapes, strict=True):
            p.grad = torch.tensor(g[o : o + int(np.prod(shape))].reshape(shape))
        apply_gradients(reference, opt, None, None)
    expected = torch.cat([p.detach().reshape(-1) for p in ordered_parameters(reference)])
    torch.testing.assert_close(ps.flat, expected, rtol=0, atol=0)
    # a different order (or a doubled push) gives different weights: the check above has teeth
    other = ParameterServer(cfg, spec)
    for g in [grads[1], grads[0], *grads[2:]]:
        other.push(GradientPush(other.version, g))
    assert not torch.equal(ps.flat, other.flat)
    assert ps.version == 6


def test_staleness_is_server_version_minus_gradient_version(setup):
    cfg, spec = setup
    ps = ParameterServer(cfg, spec)
    g = synthetic_grads(ps, 1)[0]
    for _ in range(3):
        ps.push(GradientPush(ps.version, g))  # staleness 0, version → 3
    replies = [ps.push(GradientPush(v, g)) for v in (1, 4, 0)]
    assert [(r.staleness, r.applied) for r in replies] == [(3 - 1, True), (4 - 4, True), (5 - 0, True)]
    assert ps.version == 6


def test_max_staleness_drops_exactly_the_stale_ones(setup):
    cfg, spec = setup
    cfg = cfg.model_copy(update={"algo": cfg.algo.model_copy(update={"max_staleness": 2})})
    ps = ParameterServer(cfg, spec)
    g = synthetic_grads(ps, 1)[0]
    for _ in range(5):
        ps.push(GradientPush(ps.version, g))
    before = weights(ps)
    lags = [0, 1, 2, 3, 7, 2]  # relative to the server version at each push
    applied = [ps.push(GradientPush(ps.version - lag, g)).applied for lag in lags]
    assert applied == [True, True, True, False, False, True]
    assert ps.version == 5 + 4
    assert not torch.equal(before, weights(ps))


def test_a_gradient_from_before_a_server_restart_is_never_applied(setup):
    cfg, spec = setup
    ps = ParameterServer(cfg, spec)
    g = synthetic_grads(ps, 1)[0]
    result = ps.push(
        GradientPush(10, g)
    )  # the server is at 0: this worker pulled from a previous incarnation
    assert not result.applied and ps.version == 0


def test_one_push_equals_the_synchronous_a2c_step():
    cfg = build_config(preset="a2c_cartpole", overrides=["algo.max_grad_norm=0.5"])
    spec = describe_env(cfg.env)
    learner = Learner(cfg, spec)
    ps = ParameterServer(cfg, spec)
    sync_worker = A3CWorker(cfg, spec)
    async_worker = A3CWorker(cfg, spec)  # same index → same env seeds → the same rollout
    sync_worker.set_weights(learner.get_weights(), 0)
    learner.update([sync_worker.sample()])
    result = async_worker.run([ps], max_pushes=1)
    assert result.pushes == 1 and result.server_error is None and async_worker.report().dropped == 0
    assert ps.version == learner.version == 1
    expected = torch.cat([p.detach().reshape(-1) for p in ordered_parameters(learner.policy)])
    torch.testing.assert_close(ps.flat, expected, rtol=1e-6, atol=1e-7)


def test_worker_gradient_is_one_flat_buffer_clipped_by_its_global_norm(monkeypatch):
    """The worker sends its gradient already clipped (every shard's slice scaled by the whole gradient's factor):
    what clip_grad_norm_ makes of the same gradient."""
    cfg = build_config(
        preset="a3c_cartpole", overrides=["resources.num_workers=0", "algo.max_grad_norm=0.01"]
    )
    worker = A3CWorker(cfg, describe_env(cfg.env))
    seen = {}

    def spy(grad, max_norm):  # the gradient as backward left it, before the clip
        seen["raw"] = grad.clone()
        return clip_coefficient(grad, max_norm)

    monkeypatch.setattr(a3c_worker, "clip_coefficient", spy)
    _, _, stats = worker.compute_gradients()
    per_tensor = torch.cat([p.grad.reshape(-1) for p in ordered_parameters(worker.policy)])
    assert torch.equal(worker.flat_grad, per_tensor) and worker.flat_grad.abs().sum() > 0
    reference = [torch.nn.Parameter(torch.zeros(n)) for n in (seen["raw"].numel(),)]
    reference[0].grad = seen["raw"].clone()
    norm = torch.nn.utils.clip_grad_norm_(reference, 0.01)
    torch.testing.assert_close(stats.train["train/grad_norm"], float(norm), rtol=1e-6, atol=0)
    assert torch.equal(worker.flat_grad, reference[0].grad)  # the same float32 multiply, bit for bit
    assert float(torch.linalg.vector_norm(worker.flat_grad)) == pytest.approx(0.01, rel=1e-4)
    assert float(norm) > 0.01  # the clip did act


def test_in_process_push_failure_raises_instead_of_looping(monkeypatch):
    cfg = build_config(preset="a3c_cartpole", overrides=["resources.num_workers=0"])
    algo = A3C(cfg, describe_env(cfg.env))
    algo.train_step()

    def broken(self, *args, **kwargs):
        raise ZeroDivisionError("a bug in push")

    monkeypatch.setattr(ParameterServer, "push", broken)
    with pytest.raises(ZeroDivisionError, match="a bug in push"):
        algo.train_step()


def test_a_resume_from_a_read_only_state_loads_without_a_torch_warning(tmp_path):
    """Ray hands a shard its checkpoint state read-only; loading it printed torch's "NumPy array is not
    writable" UserWarning on every A3C resume. torch warns once per process, so this runs in a fresh one."""
    import subprocess
    import sys

    code = """
import warnings
import numpy as np
from rayac.a3c.messages import ShardState
from rayac.a3c.server import ParameterServer
from rayac.config import Config
from rayac.envs import describe_env
cfg = Config(algo={"name": "a3c"})
ps = ParameterServer(cfg, describe_env(cfg.env))
state = ps.get_state()
params = state.params + 1.0
params.setflags(write=False)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ps._load(ShardState(state.lo, state.hi, state.version, params, state.optimizer, state.norms))
assert np.array_equal(ps.flat.numpy(), params)
print([str(w.message) for w in caught])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
