"""A sharded parameter server without Ray: K independent shards == one server bit for bit with sequential pushes,
per-shard versions and staleness, a restarted shard that loses only itself, resume into any shard count."""

import numpy as np
import pytest
import torch

from rayac.a3c import server as parameter_server
from rayac.a3c.client import ShardClient
from rayac.a3c.driver import A3C
from rayac.a3c.flat import (
    FlatLayout,
    Payload,
    decode_into,
    encode,
    from_checkpoint,
    ordered_parameters,
    resolve_ps_shards,
    shard_bounds,
)
from rayac.a3c.messages import GradientPush, OptimizerSlice
from rayac.a3c.server import ParameterServer
from rayac.config import build_config
from rayac.envs import describe_env
from rayac.learning.learner import build_optimizer
from rayac.policy import build_policy


def a3c_cfg(*overrides):
    return build_config(preset="a3c_cartpole", overrides=["resources.num_workers=0", *overrides])


def shards(cfg, k, **kwargs):
    spec = describe_env(cfg.env)
    return [ParameterServer(cfg, spec, shard=i, num_shards=k, **kwargs) for i in range(k)]


def flat_of(group):
    return torch.cat([s.flat for s in group])


def state_of(group):
    return OptimizerSlice.join([s.get_state().optimizer for s in group])


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("transfer", ["float32", "float16", "in place"])
def test_k_shards_equal_one_server_bit_for_bit(optimizer, k, transfer, monkeypatch):
    """Same pushes (clip factors < 1, stale ones dropped, out-of-date versions) → identical weights and state.
    float16: the worker scales its whole gradient once, so slices round as one message does; "in place": float32
    slices read where the message put them, as the Nature CNN's are."""
    if transfer == "in place":
        monkeypatch.setattr(parameter_server, "COPY_BELOW_BYTES", 0)
    dtype = "float16" if transfer == "float16" else "float32"
    cfg = a3c_cfg(
        f"optim.name={optimizer}", "algo.max_staleness=2", f"algo.ps_transfer_dtype={dtype}"
    )  # separate nets: actor and critic lrs differ
    one, many = shards(cfg, 1), shards(cfg, k)
    total = one[0].layout.total
    assert [s.hi - s.lo for s in many] != [total] and one[0].layout.actor_size not in [s.lo for s in many]
    rng = np.random.default_rng(0)
    layout = one[0].layout
    clients = [ShardClient(one, layout, dtype), ShardClient(many, layout, dtype)]
    outs = [torch.zeros(total), torch.zeros(total)]
    applied_log = [[], []]
    for _ in range(40):
        # magnitudes from 1e-12 to 1 along the vector: slices differ in their largest value, and float16 keeps the
        # smallest only as far as the scale lets it (one scale for all slices, or K slices would round differently)
        grad = torch.from_numpy((rng.normal(size=total) * np.logspace(-12, 0, total)).astype(np.float32))
        lag = int(rng.integers(0, 5))  # 3 and 4 exceed max_staleness: dropped
        coef = float(rng.uniform(0.05, 1.0))  # as if the worker's global-norm clip kicked in
        for j, client in enumerate(clients):
            version = max(client.shards[0].version - lag, 0)
            pending = client.submit_push(grad * coef, [version] * len(client.shards))
            versions, replies, _ = client.wait_push(pending, outs[j])
            # every shard decides alone, and with sequential pushes they all decide alike
            applied_log[j].append((set(versions), {(r.applied, r.staleness) for r in replies}))
    assert applied_log[0] == applied_log[1] and all(len(a) == 1 for _, a in applied_log[1])
    assert 0 < sum(next(iter(a))[0] for _, a in applied_log[0]) < 40
    assert torch.equal(flat_of(one), flat_of(many))
    if dtype == "float32":
        assert torch.equal(outs[0], outs[1])
    else:  # the replies: each shard scales its own slice to 16 bits
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-6)
    a, b = state_of(one), state_of(many)
    assert a.scalars == b.scalars and a.moments.keys() == b.moments.keys()
    for key in a.moments:
        assert np.array_equal(a.moments[key], b.moments[key]), key
    assert {s.version for s in many} == {one[0].version}


def test_each_shard_applies_on_arrival_counts_its_own_version_and_bounds_its_own_staleness():
    """No shard waits for another: a slice is applied when it arrives, as this shard's next version; staleness is
    this shard's version − the version of this shard's slice the gradient was computed from."""
    cfg = a3c_cfg("algo.max_staleness=1")
    first, second = shards(cfg, 2)
    g = [np.ones(s.hi - s.lo, dtype=np.float32) for s in (first, second)]
    # the second shard gets two slices before the first gets any: nothing waits, the versions differ
    assert [(r.applied, r.version, r.staleness) for r in (second.push(GradientPush(0, g[1])),
                                                          second.push(GradientPush(0, g[1])))] == [(True, 1, 0), (True, 2, 1)]  # fmt: skip
    assert (first.version, second.version) == (0, 2)
    # the same push (computed from version 0 of both slices) is fresh on the first, too stale on the second
    before = second.flat.clone()
    a, b = first.push(GradientPush(0, g[0])), second.push(GradientPush(0, g[1]))
    assert (a.applied, a.staleness, a.version) == (True, 0, 1)
    assert (b.applied, b.staleness, b.version) == (False, 2, 2) and torch.equal(second.flat, before)
    # computed on a version this shard never had (from before it came back from a checkpoint): never applied
    late = first.push(GradientPush(5, g[0]))
    assert not late.applied and late.staleness == -4 and first.version == 1


def test_a_restarted_shard_comes_back_from_its_own_checkpoint_and_the_others_go_on(tmp_path, caplog):
    cfg = a3c_cfg("algo.ps_shards=2", "algo.ps_checkpoint_interval=4", f"run.run_dir={tmp_path}")
    algo = A3C(cfg, describe_env(cfg.env))
    assert [s.saved_versions() for s in algo.shards] == [[0], [0]]  # a checkpoint before the first push
    seen = {}
    for _ in range(10):
        algo.train_step()
        seen[algo.version] = algo.get_weights()
    assert algo.version == 10 and [s.saved_versions() for s in algo.shards] == [[0, 4, 8]] * 2
    # shard 1's process died: Ray re-runs __init__ (initial weights) and it serves nothing until restored
    algo.shards[1] = ParameterServer(cfg, algo.spec, shard=1, num_shards=2, restarted=True)
    assert algo.shards[1].pull().weights is None
    first = algo.shards[0].flat.clone()
    algo._watch_shards()
    assert algo._shard_events == {"a3c/ps_restored_version": 8, "a3c/ps_rollback_updates": 10 - 8}
    assert algo.ps_restarts == 1
    assert "came back from version 10 to its checkpoint at 8" in caplog.text
    lo, hi = algo.bounds[1]
    np.testing.assert_array_equal(algo.shards[1].flat.numpy(), algo.layout.from_state_dict(seen[8])[lo:hi])
    assert algo.shards[0].version == 10 and torch.equal(algo.shards[0].flat, first)  # shard 0 lost nothing
    for _ in range(3):
        result = algo.train_step()
    assert [s.version for s in algo.shards] == [13, 11] and result.metrics["a3c/ps_restarts"] == 1
    assert (result.metrics["a3c/shard0_version"], result.metrics["a3c/shard1_version"]) == (13, 11)


@pytest.mark.parametrize("call", ["get_weights", "checkpoint_state"])
def test_a_shard_that_restarts_between_two_steps_is_restored_by_the_drivers_own_calls(tmp_path, call):
    """The runner evaluates and checkpoints between train steps: a shard that restarted since the last step must
    not hand its initial slice to either (nor make the driver wait for a restore only it can do)."""
    cfg = a3c_cfg("algo.ps_shards=2", "algo.ps_checkpoint_interval=2", f"run.run_dir={tmp_path}")
    algo = A3C(cfg, describe_env(cfg.env))
    for _ in range(4):
        algo.train_step()
    expected = algo.get_weights()
    algo.shards[0] = ParameterServer(cfg, algo.spec, shard=0, num_shards=2, restarted=True)
    got = getattr(algo, call)()
    weights = got if call == "get_weights" else {k: v.numpy() for k, v in got[0].items()}
    for name, value in expected.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)
    assert algo.ps_restarts == 1 and algo.shards[0].restored
    result = algo.train_step()  # the restore's metrics go out with the next step's
    assert result.metrics["a3c/ps_restarts"] == 1 and result.metrics["a3c/ps_restored_version"] == 4


def test_restart_without_any_checkpoint_is_still_counted_and_logged(caplog):
    cfg = a3c_cfg("algo.ps_shards=2")  # no run_dir: nowhere to checkpoint
    algo = A3C(cfg, describe_env(cfg.env))
    for _ in range(3):
        algo.train_step()
    algo.shards[0] = ParameterServer(cfg, algo.spec, shard=0, num_shards=2, restarted=True)
    result = algo.train_step()  # shard 0 came back with its initial slice: it keeps counting from its version
    assert result.metrics["a3c/ps_restarts"] == 1 and "NO checkpoint" in caplog.text
    assert result.metrics["a3c/ps_restored_version"] == 3 and result.metrics["a3c/ps_rollback_updates"] == 0
    assert [s.version for s in algo.shards] == [4, 4]


def test_every_shard_checkpoints_on_its_own_clock(tmp_path):
    cfg = a3c_cfg("algo.ps_shards=3", "algo.ps_checkpoint_interval=0", "algo.ps_checkpoint_interval_s=0.001",
                  f"run.run_dir={tmp_path}")  # fmt: skip
    algo = A3C(cfg, describe_env(cfg.env))
    for _ in range(3):
        algo.train_step()
    assert [s.saved_versions() for s in algo.shards] == [[1, 2, 3]] * 3  # keeps the last 3


def test_checkpoint_holds_every_slice_and_resumes_into_any_shard_count_without_a_restart(tmp_path):
    cfg = a3c_cfg("algo.ps_shards=2")
    algo = A3C(cfg, describe_env(cfg.env))
    for _ in range(5):
        algo.train_step()
    weights, opt, version = algo.checkpoint_state()
    assert version == 5 and opt["flat"]["exp_avg"].shape == (algo.layout.total,)
    resumed = A3C(a3c_cfg("algo.ps_shards=3", f"run.run_dir={tmp_path}"), algo.spec)
    resumed.restore(weights, opt, version)
    w2, opt2, v2 = resumed.checkpoint_state()
    assert v2 == 5 and all(torch.equal(weights[k], w2[k]) for k in weights)
    assert all(torch.equal(opt["flat"][k], opt2["flat"][k]) for k in opt["flat"])
    result = resumed.train_step()
    assert result.metrics["a3c/ps_restarts"] == 0 and resumed.version == 6  # a --resume is not a crash
    assert [s.saved_versions()[0] for s in resumed.shards] == [5, 5, 5]


def test_optimizer_state_of_older_checkpoints_converts_to_the_flat_format():
    cfg = a3c_cfg()
    spec = describe_env(cfg.env)
    torch.manual_seed(cfg.env.seed)
    policy = build_policy(spec, cfg.model, estimator=cfg.algo.estimator)
    opt = build_optimizer(policy, cfg.optim)
    ps = ParameterServer(cfg, spec)
    layout = FlatLayout.of(policy)
    rng = np.random.default_rng(1)
    for _ in range(3):
        g = rng.normal(size=layout.total).astype(np.float32)
        for p, o in zip(ordered_parameters(policy), layout.offsets, strict=True):
            p.grad = torch.tensor(g[o : o + p.numel()].reshape(p.shape))
        opt.step()
        ps.push(GradientPush(ps.version, g))
    converted = from_checkpoint(opt.state_dict(), layout)
    ours = ps.get_state().optimizer
    assert converted.scalars == ours.scalars
    assert converted.moments.keys() == ours.moments.keys() == {"exp_avg", "exp_avg_sq"}
    for key in ours.moments:
        np.testing.assert_array_equal(converted.moments[key], ours.moments[key])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_transfer_round_trips_with_16_bit_precision(dtype):
    x = torch.from_numpy(np.random.default_rng(0).normal(size=10_000).astype(np.float32)) * 1e-6
    payload = encode(x, dtype)
    assert isinstance(payload, Payload) and payload.data.itemsize == 2
    out = torch.zeros_like(x)
    decode_into(payload, out)
    # relative error of one 16-bit rounding; float16 keeps 1e-6-sized gradients thanks to its scale
    rel = 2.0**-8 if dtype == "bfloat16" else 2.0**-11
    big = x.abs() > x.abs().max() * 1e-3
    assert torch.all((out[big] - x[big]).abs() <= rel * x[big].abs())


def test_shard_bounds_and_auto():
    assert shard_bounds(1000, 3, align=1) == [(0, 333), (333, 667), (667, 1000)]
    # every cut a multiple of 64 past the start of the group it falls in (groups at 0 and 300)
    assert shard_bounds(1000, 3, group_starts=(0, 300)) == [(0, 364), (364, 684), (684, 1000)]
    with pytest.raises(ValueError, match="too few"):
        shard_bounds(100, 3)
    assert resolve_ps_shards("auto", num_params=9_155, num_workers=16) == 1  # CartPole MLP: one is enough
    assert resolve_ps_shards("auto", num_params=1_700_000, num_workers=16) == 4
    assert resolve_ps_shards("auto", num_params=1_700_000, num_workers=2) == 1
    assert resolve_ps_shards(3, num_params=9_155, num_workers=2) == 3


def test_ps_shards_config_errors_name_the_field():
    from rayac.config import ConfigError

    assert a3c_cfg("algo.ps_shards=auto").algo.ps_shards == "auto"
    for bad in ("0", "65", "many", "true"):
        with pytest.raises(
            ConfigError, match="algo.ps_shards: must be an integer between 1 and 64, or 'auto'"
        ):
            a3c_cfg(f"algo.ps_shards={bad}")


def test_16_bit_transfer_trains_and_the_server_keeps_float32():
    algo = A3C(a3c_cfg("algo.ps_shards=2", "algo.ps_transfer_dtype=bfloat16"), describe_env(a3c_cfg().env))
    for _ in range(5):
        algo.train_step()
    assert algo.version == 5 and all(s.flat.dtype == torch.float32 for s in algo.shards)
    server = flat_of(algo.shards)
    assert not torch.equal(server, server.to(torch.bfloat16).float())  # more precision than the wire carries
    worker = algo.local_worker.flat_params
    assert torch.equal(worker, server.to(torch.bfloat16).float())  # the worker holds the bf16-rounded weights


def test_a_push_that_reached_only_some_shards_leaves_nothing_waiting(tmp_path):
    """Its worker died mid-push: shard 0 got its slice, shard 1 never will. Nothing waits for it: the next pushes and
    pulls are served at once by every shard, and no version goes back."""
    cfg = a3c_cfg("algo.ps_shards=2", "algo.ps_checkpoint_interval=2", f"run.run_dir={tmp_path}")
    algo = A3C(cfg, describe_env(cfg.env))
    for _ in range(4):
        algo.train_step()
    first, second = algo.shards
    assert first.push(GradientPush(4, np.zeros(first.hi - first.lo, dtype=np.float32))).applied
    result = algo.train_step()
    assert [s.version for s in algo.shards] == [6, 5] and "a3c/ps_rollback_updates" not in result.metrics
    client = ShardClient(algo.shards, algo.layout, "float32")
    assert client.pull_into(torch.zeros(algo.layout.total)) == [6, 5]
    result = algo.train_step()
    assert [s.version for s in algo.shards] == [7, 6] and result.metrics["a3c/dropped"] == 0


def test_shards_write_no_files_the_driver_keeps_their_checkpoints(tmp_path):
    """Only the driver writes a run's files: a shard on another node keeps its checkpoints in memory until the
    driver takes them, and a restarted shard (empty memory) is handed its slice back from the driver's files."""
    run_dir = tmp_path / "run"
    cfg = a3c_cfg("algo.ps_shards=2", "algo.ps_checkpoint_interval=2", f"run.run_dir={run_dir}")
    shard = ParameterServer(cfg, describe_env(cfg.env), shard=0, num_shards=2)
    shard.start()
    shard.save()
    assert shard.saved_versions() == [0] and not run_dir.exists()  # a shard alone writes nothing
    algo = A3C(cfg, describe_env(cfg.env))
    for _ in range(4):
        algo.train_step()
    on_disk = [sorted(p.name for p in (run_dir / "ps" / f"shard-{i}-of-2").iterdir()) for i in range(2)]
    assert (
        on_disk
        == [["v000000000000.safetensors", "v000000000002.safetensors", "v000000000004.safetensors"]] * 2
    )
    algo.shards[0] = ParameterServer(cfg, algo.spec, shard=0, num_shards=2, restarted=True)
    assert algo.shards[0].saved_versions() == []
    result = algo.train_step()
    assert result.metrics["a3c/ps_restored_version"] == 4 and [s.version for s in algo.shards] == [5, 5]


def _read_only(rng, n):
    arr = rng.normal(size=n).astype(np.float32) * 1e-2
    arr.flags.writeable = False  # as Ray hands a pushed buffer to the shard
    return arr


def test_a_shard_steps_alike_on_the_pushed_buffer_a_copy_of_it_and_torchs_own_step(monkeypatch):
    """The three ways a shard steps — fused Adam reading the message's buffer (large slices), the prepared plan on a
    copy (small ones), torch's ``Adam.step()`` — give the same bits; the pushed buffers are never written. A state
    loaded by a restore is the one the next steps move (the plan holds the state's tensors: it must be remade)."""
    cfg = a3c_cfg()
    servers = {mode: shards(cfg, 1)[0] for mode in ("in place", "copy", "torch")}
    grads = [_read_only(np.random.default_rng(i), servers["copy"].hi) for i in range(8)]
    kept = [g.copy() for g in grads]

    def run(ps, mode, todo):
        with monkeypatch.context() as m:
            if mode == "in place":
                m.setattr(parameter_server, "COPY_BELOW_BYTES", 0)
            if mode == "torch":
                m.setattr(parameter_server.FusedAdamPlan, "of", classmethod(lambda cls, opt: None))
            for g in todo:
                assert ps.push(GradientPush(ps.version, Payload(g))).applied

    for mode, ps in servers.items():
        run(ps, mode, grads[:5])
    assert servers["in place"]._plan is not None and servers["copy"]._plan is not None
    saved = {mode: ps.get_state() for mode, ps in servers.items()}
    for mode, ps in servers.items():
        run(ps, mode, grads[5:])
    after = {mode: (ps.flat.clone(), ps.get_state()) for mode, ps in servers.items()}
    for mode, ps in servers.items():  # back to version 5, then the same three pushes again
        ps.restore(saved[mode])
        run(ps, mode, grads[5:])
    ref_flat, ref_state = after["torch"]
    for mode, ps in servers.items():
        for flat, state in (after[mode], (ps.flat, ps.get_state())):
            assert torch.equal(flat, ref_flat), mode
            assert state.optimizer.scalars == ref_state.optimizer.scalars
            for key, value in ref_state.optimizer.moments.items():
                assert np.array_equal(state.optimizer.moments[key], value), (mode, key)
    assert ref_state.optimizer.scalars["step"] == 8.0
    assert all(np.array_equal(g, k) for g, k in zip(grads, kept, strict=True))


def test_a_gradient_slice_of_the_wrong_length_is_refused_and_changes_nothing():
    first, second = shards(a3c_cfg(), 2)
    with pytest.raises(ValueError, match="a gradient slice of 10 values for"):
        first.push(GradientPush(0, Payload(np.zeros(10, dtype=np.float32))))
    assert first.version == 0  # the next push goes on as if it never came
    assert first.push(GradientPush(0, Payload(np.ones(first.hi, dtype=np.float32)))).applied
    assert first.version == 1 and second.version == 0


def test_a_bare_float64_gradient_is_converted_like_a_float32_one():
    a, b = shards(a3c_cfg(), 1)[0], shards(a3c_cfg(), 1)[0]
    for i in range(3):  # the third push steps from the prepared plan
        g = np.random.default_rng(i).normal(size=a.hi).astype(np.float32)
        assert a.push(GradientPush(a.version, g.astype(np.float64))).applied
        assert b.push(GradientPush(b.version, g)).applied
    assert a.version == 3 and torch.equal(a.flat, b.flat)
