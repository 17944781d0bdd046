"""What a run will hold in memory, estimated before anything is built: the check that turns a config that would
exhaust a machine into a clear error naming the field, for `rayac train` and the service's admission alike.

Counted per env step, from the arrays that exist (``rayac.types.Rollout`` and the learner's update):

- a rollout: the observation (in the env's dtype), the action, and rewards, terminated, truncated, values,
  log_probs, final_values and mask (19 bytes);
- the learner, per sample of its batch: the rollout it received, the flat ``Batch`` (observation, action,
  advantage, return), the observation as a float32 tensor, and the network's activations kept for backward
  (every layer's output in float32, counted by a forward pass on torch's ``meta`` device, so a huge network is
  measured without allocating it);
- the parameters: 4 bytes each per copy of the weights (each worker holds one), 16 bytes on the learner
  (weights, gradients, two Adam moments).

It is an estimate (allocator slack, Python objects and the env simulators come on top), but it scales the way
the run does: a 4096 × 10,000-step CartPole rollout is about 85 GB, and it says so. IMPALA's learner holds
``learner_batch_rollouts`` rollouts per update, plus those queued for it (``rollout_queue_size``, one waiting for room,
and one finished in each worker's object store).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rayac.config import Config, ConfigError
from rayac.envs import SpaceSpec

ROLLOUT_SCALARS = 19  # rewards 4, terminated 1, truncated 1, values 4, log_probs 4, final_values 4, mask 1
# every layer's output, kept for backward (the gradients are freed layer by layer as backward goes): ~2.1 kB per
# CartPole sample with the default [64, 64] nets, what a run was measured to use
ACTIVATION_COPIES = 1


@dataclass(frozen=True)
class MemoryEstimate:
    params: int
    rollout_step_bytes: int  # one env step of a rollout
    learner_sample_bytes: int  # one sample of the learner's update
    workers: int
    steps_per_worker: int  # num_envs × rollout steps (or × episode length)
    worker_bytes: int  # one rollout worker
    learner_bytes: int  # the learner (A2C) or the parameter server (A3C)

    @property
    def total(self) -> int:
        return self.workers * self.worker_bytes + self.learner_bytes

    def describe(self) -> str:
        return (f"about {_gib(self.total)}: {self.workers} worker(s) × {_gib(self.worker_bytes)} (num_envs × rollout "
                f"steps = {self.steps_per_worker:,} env steps × {self.rollout_step_bytes:,} B) + learner "
                f"{_gib(self.learner_bytes)} ({self.learner_sample_bytes:,} B per sample, {self.params:,} "
                "parameters)")  # fmt: skip


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def episode_steps(cfg: Config) -> int:
    """Env steps per env in one rollout: rollout_steps, or the episode's time limit for whole-episode batches."""
    if not cfg.algo.episodic:
        return cfg.algo.rollout_steps
    return cfg.env.max_episode_steps or _registered_max_steps(cfg.env.id) or cfg.algo.rollout_steps


def _registered_max_steps(env_id: str) -> int | None:
    import gymnasium as gym

    try:
        return gym.spec(env_id).max_episode_steps
    except Exception:
        return None


def model_size(cfg: Config, spec: SpaceSpec) -> tuple[int, int]:
    """(parameters, activations per sample) of the run's network, measured on the meta device (no memory)."""
    import torch

    from rayac.policy import build_policy

    # measuring draws nothing from the run's RNG
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        policy = build_policy(
            spec, cfg.model, estimator=cfg.algo.estimator, scale_rewards=cfg.algo.scale_rewards
        )
    params = sum(p.numel() for p in policy.parameters())
    outputs: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel() if torch.is_tensor(out) else 0))
             for m in policy.modules() if not any(True for _ in m.children())]  # fmt: skip
    try:
        dtype = torch.uint8 if spec.obs_image else torch.float32
        obs = torch.zeros((1, *spec.obs_shape), dtype=dtype, device="meta")
        act_shape, act_dtype = ((), torch.int64) if spec.discrete else (spec.action_shape, torch.float32)
        policy.evaluate_actions(obs, torch.zeros((1, *act_shape), dtype=act_dtype, device="meta"))
        activations = sum(outputs)
    except Exception:  # an op the meta device lacks: the hidden widths, both nets
        activations = 2 * (
            sum(cfg.model.hidden_sizes) + sum(cfg.model.critic_hidden_sizes or cfg.model.hidden_sizes)
        )
    finally:
        for hook in hooks:
            hook.remove()
    return params, activations


def estimate_memory(cfg: Config, spec: SpaceSpec) -> MemoryEstimate:
    obs_elems = math.prod(spec.obs_shape)
    obs_bytes = obs_elems * np.dtype(spec.obs_dtype).itemsize
    act_bytes = 8 if spec.discrete else 4 * math.prod(spec.action_shape)
    rollout_step = obs_bytes + act_bytes + ROLLOUT_SCALARS
    params, activations = model_size(cfg, spec)
    learner_sample = (
        rollout_step + (obs_bytes + act_bytes + 8) + 4 * obs_elems + ACTIVATION_COPIES * 4 * activations
    )
    workers = max(1, cfg.resources.num_workers)
    steps = cfg.env.num_envs * episode_steps(cfg)
    if (
        cfg.algo.name == "a3c"
    ):  # each worker computes its own gradients; the server holds weights and optimiser
        worker = steps * (rollout_step + learner_sample) + params * 4 * 2
        learner = params * 16
    elif cfg.algo.name == "impala":  # the learner's batch, and rollouts queued for it or on their way
        worker = steps * rollout_step + params * 4
        batch = cfg.algo.learner_batch_rollouts * steps
        queued = cfg.algo.rollout_queue_size + 1 + workers if cfg.resources.num_workers else 0
        learner = batch * learner_sample + queued * steps * rollout_step + params * 16
    else:
        worker = steps * rollout_step + params * 4
        batch = workers * steps
        in_transit = (
            batch * rollout_step if cfg.resources.num_workers else 0
        )  # Ray's object store holds a copy
        learner = batch * learner_sample + in_transit + params * 16
    return MemoryEstimate(params, rollout_step, learner_sample, workers, steps, worker, learner)


def check_memory(cfg: Config, spec: SpaceSpec, *, limit_bytes: int, limit_name: str,
                 max_params: int | None = None, params_name: str = "") -> MemoryEstimate:  # fmt: skip
    """Raises ConfigError naming the field to change when the run would need more than ``limit_bytes``."""
    est = estimate_memory(cfg, spec)
    if max_params is not None and est.params > max_params:
        raise ConfigError("model.hidden_sizes", f"the network has {est.params:,} parameters; at most "
                          f"{max_params:,} allowed ({params_name})")  # fmt: skip
    if est.total > limit_bytes:
        field = "model.hidden_sizes" if est.params * 16 > est.total / 2 else "env.num_envs"
        raise ConfigError(
            field, f"the run would need {est.describe()}; over {_gib(limit_bytes)} ({limit_name})"
        )
    return est


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_machine(cfg: Config, spec: SpaceSpec) -> None:
    """`rayac train`'s guard: a run this machine cannot hold is a ConfigError, not an OOM an hour in. With
    RAY_ADDRESS the rollout workers run elsewhere, so only the learner's part has to fit here."""
    import os

    remote = bool(os.environ.get("RAY_ADDRESS")) and cfg.resources.num_workers > 0
    if not remote:
        check_local_workers(cfg)
    memory = machine_memory_bytes()
    if memory is None:
        return
    est = estimate_memory(cfg, spec)
    need = est.learner_bytes if remote else est.total
    if need > memory:
        field = "model.hidden_sizes" if est.params * 16 > need / 2 else "env.num_envs"
        where = "the learner alone would need" if remote else "the run would need"
        raise ConfigError(field, f"{where} {est.describe()}; this machine has {_gib(memory)} of memory")


LOCAL_CPUS_PER_CORE = (
    4  # the CPUs' worth of actors an embedded local Ray is let to start per core of this machine
)


def check_local_workers(cfg: Config) -> None:
    """A run whose actors need far more CPUs than this machine has is refused up front: the embedded local Ray
    would advertise them all, start a process per worker (each importing torch) and time out after minutes."""
    import os

    res = cfg.resources
    if res.num_workers == 0:
        return
    cores = os.cpu_count() or 1
    learner = cfg.algo.name == "a3c" or bool(res.learner_resources) or res.device == "cuda"
    need = res.num_workers * res.worker_cpus + (res.learner_cpus if learner else 0)
    if need > LOCAL_CPUS_PER_CORE * cores:
        parts = "num_workers × worker_cpus" + (" + learner_cpus" if learner else "")
        raise ConfigError(
            "resources.num_workers",
            f"{res.num_workers} workers need {need:g} CPUs ({parts}), and the local Ray a run starts on this "
            f"machine runs at most {LOCAL_CPUS_PER_CORE * cores:g} ({LOCAL_CPUS_PER_CORE} per each of its {cores} "
            "CPUs). Use fewer ('auto' is one per CPU), or set RAY_ADDRESS to a Ray "
            "cluster that has them",
        )
