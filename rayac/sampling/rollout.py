"""RolloutWorker: a vector env and a CPU copy of the policy. A plain class; ``remote.py`` makes it an actor."""

from __future__ import annotations

import os
import pickle

import cloudpickle
import numpy as np
import torch

from rayac.config import Config
from rayac.envs import SpaceSpec, make_training_env
from rayac.normalizer import moments
from rayac.policy import ActorCritic, build_policy, load_numpy_weights
from rayac.types import Rollout

REWARD_CLIP = 10.0  # scaled rewards are clipped to ±10, as SB3's VecNormalize

# Episodes longer than this in 'episodes' batch mode are an env without a time limit.
MAX_EPISODE_STEPS = 100_000


def worker_seed(base: int, worker_index: int) -> int:
    """Disjoint seed ranges per worker: env i of worker w gets worker_seed(base, w) + i."""
    return base + 10_007 * (worker_index + 1)


class RolloutWorker:
    def __init__(
        self,
        cfg: Config,
        spec: SpaceSpec,
        *,
        worker_index: int = 0,
        seed_offset: int = 0,
        policy: ActorCritic | None = None,
    ):
        """``seed_offset`` moves a resumed run onto fresh env seeds instead of replaying the first episodes.

        ``policy``: sample with this module itself (in-process A2C shares the learner's CPU policy: no copy).
        """
        torch.set_num_threads(1)  # one batched CPU forward per step: more threads only contend with the envs
        self.cfg = cfg
        self.spec = spec
        self.worker_index = worker_index
        seed = worker_seed(cfg.env.seed + seed_offset, worker_index)
        self.generator = torch.Generator().manual_seed(seed)
        self.envs = make_training_env(cfg.env, spec, seed=seed)
        self.num_envs = self.envs.num_envs
        self.policy = (
            policy
            if policy is not None
            else build_policy(
                spec, cfg.model, estimator=cfg.algo.estimator, scale_rewards=cfg.algo.scale_rewards
            )
        )
        self.version = -1
        self.obs = self.envs.reset(seed=[seed + i for i in range(self.num_envs)])
        self._discounted_return = np.zeros(self.num_envs, dtype=np.float64)  # for algo.scale_rewards

    # -- weights
    def set_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        load_numpy_weights(self.policy, weights)
        self.version = version

    def sample_with(
        self, weights: dict[str, np.ndarray], version: int, num_steps: int | None = None
    ) -> Rollout:
        """``set_weights`` then ``sample`` in one actor call: one round trip per worker per A2C step."""
        self.set_weights(weights, version)
        return self.sample(num_steps)

    # -- sampling
    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs)

    def _value(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.value(self._obs_tensor(obs)).numpy()

    def sample(self, num_steps: int | None = None) -> Rollout:
        """``num_steps`` steps of every env (fixed-length mode), or one whole episode per env (episodes mode)."""
        with torch.inference_mode():
            if self.cfg.algo.episodic:
                return self._sample(MAX_EPISODE_STEPS, episodic=True)
            return self._sample(num_steps or self.cfg.algo.rollout_steps, episodic=False)

    def _sample(self, horizon: int, *, episodic: bool) -> Rollout:
        n = self.num_envs
        if episodic:  # every env starts a fresh episode, and stops contributing once it ends
            self.obs = self.envs.reset()
            self._discounted_return[:] = 0
        return_norm = self.policy.return_norm
        reward_scale = return_norm.std() if return_norm is not None else 1.0  # frozen for this rollout
        obs_buf, act_buf, rew_buf, term_buf, trunc_buf = [], [], [], [], []
        val_buf, logp_buf, final_buf, mask_buf = [], [], [], []
        ep_returns, ep_lengths, ret_samples = [], [], []
        alive = np.ones(n, dtype=bool)
        env_steps = 0  # what the envs executed, padding included: the honest count for budgets and steps/s
        for _ in range(horizon):
            obs = self.obs
            actions, values, log_probs = self.policy.rollout_step(
                self._obs_tensor(obs), generator=self.generator
            )
            actions = actions.numpy()
            step = self.envs.step(self.spec.clip_actions(actions))
            rewards = step.rewards
            env_steps += int(step.stepped.sum())
            done = step.terminated | step.truncated
            if return_norm is not None:  # divide by the running discounted return's std (SB3 VecNormalize)
                self._discounted_return = np.where(
                    step.valid,
                    self._discounted_return * self.cfg.algo.gamma + rewards,
                    self._discounted_return,
                )
                ret_samples.append(self._discounted_return[step.valid & alive])
                rewards = np.clip(rewards / reward_scale, -REWARD_CLIP, REWARD_CLIP).astype(np.float32)
                self._discounted_return[done] = 0
            final_values = np.zeros(n, dtype=np.float32)
            if step.truncated.any():  # bootstrap a time-limit cut from V(final observation)
                idx = np.flatnonzero(step.truncated)
                final_values[idx] = self._value(step.final_obs[idx])
            obs_buf.append(obs)
            act_buf.append(actions)
            rew_buf.append(rewards)
            term_buf.append(step.terminated)
            trunc_buf.append(step.truncated)
            val_buf.append(values.numpy())
            logp_buf.append(log_probs.numpy())
            final_buf.append(final_values)
            mask_buf.append(alive & step.valid)  # envpool's reset steps are no transition: not data

            finished = step.game_over & alive  # whole games, raw score (not a lost life, not clipped)
            if finished.any():
                ep_returns.extend(step.game_return[finished].tolist())
                ep_lengths.extend(step.game_length[finished].tolist())
            self.obs = step.obs
            if episodic:
                alive &= ~done
                if not alive.any():
                    break

        last_value = self._value(self.obs)
        obs_arr, mask = np.stack(obs_buf), np.stack(mask_buf)
        obs_moments = return_moments = None
        if self.policy.obs_norm is not None:
            obs_moments = moments(obs_arr[mask], self.spec.obs_shape)
        if return_norm is not None and ret_samples:
            return_moments = moments(np.concatenate(ret_samples), ())
        return Rollout(
            obs=obs_arr,
            actions=np.stack(act_buf),
            rewards=np.stack(rew_buf),
            terminated=np.stack(term_buf),
            truncated=np.stack(trunc_buf),
            values=np.stack(val_buf).astype(np.float32),
            log_probs=np.stack(logp_buf).astype(np.float32),
            final_values=np.stack(final_buf),
            mask=mask,
            last_value=last_value.astype(np.float32),
            env_steps=env_steps,
            episode_returns=np.asarray(ep_returns, dtype=np.float64),
            episode_lengths=np.asarray(ep_lengths, dtype=np.int64),
            version=self.version,
            obs_moments=obs_moments,
            return_moments=return_moments,
            last_obs=self.obs,
        )

    # -- exact resume
    def get_state(self) -> bytes | None:
        """Everything sampling continues from: the envs mid-episode, the current observations, the action
        generator and the running discounted return. None when the envs keep state outside Python objects
        (see ``TrainingEnv.state_is_picklable``): a resumed run then starts fresh episodes on new seeds."""
        if not self.envs.state_is_picklable():
            return None
        state = {"envs": self.envs, "obs": self.obs, "generator": self.generator.get_state(),
                 "discounted_return": self._discounted_return}  # fmt: skip
        return cloudpickle.dumps(state)

    def set_state(self, blob: bytes) -> None:
        """Continue from ``get_state``'s bytes (written by this run's own checkpoint: a pickle, so trusted)."""
        state = pickle.loads(blob)  # noqa: S301 - the run's own checkpoint, as torch.load of optimizer.pt
        self.envs.close()
        self.envs, self.obs = state["envs"], state["obs"]
        self.generator.set_state(state["generator"])
        self._discounted_return = state["discounted_return"]

    def node_id(self) -> str:
        """The Ray node this worker runs on (placement checks); '' outside Ray."""
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""

    def pid(self) -> int:
        """This worker's process (fault tests SIGKILL it)."""
        return os.getpid()

    def close(self) -> None:
        self.envs.close()
