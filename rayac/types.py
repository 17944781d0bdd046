"""The data that crosses actor boundaries: rollouts and training batches (numpy only)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rayac.normalizer import Moments


class Rollout(NamedTuple):
    """One worker's sample, time-major. T steps, N envs.

    obs          (T, N, *obs_shape)           observation s_t the action was taken in
    actions      (T, N, *act_shape)           a_t (int64 for Discrete, float32 unclipped for Box)
    rewards      (T, N) float32               r_t
    terminated   (T, N) bool                  episode ended in a terminal state: no bootstrap
    truncated    (T, N) bool                  episode cut by a time limit: bootstrap from final_values
    values       (T, N) float32               critic at s_t: V(s_t), or Q(s_t, a_t) for a Q critic
    log_probs    (T, N) float32               log π(a_t | s_t) under the sampling weights
    final_values (T, N) float32               V(final observation) where truncated, else 0
    mask         (T, N) bool                  False for padding after an env's episode (episode mode) and
                                              for envpool's reset steps (no transition)
    last_value   (N,) float32                 V(s_T), the bootstrap for steps that did not end
    env_steps    int                          env steps the envs executed (padding included: an env whose
                                              episode ended still steps in episode mode; envpool's reset
                                              steps excluded): what budgets and steps/s count
    episode_returns, episode_lengths  (E,)    episodes that finished during this sample
    version      int                          weights version the sample was drawn with
    obs_moments     Moments | None            mean/var/count of the observations (model.normalize_obs)
    return_moments  Moments | None            of the running discounted return (algo.scale_rewards)
    last_obs     (N, *obs_shape) | None       s_T, so a learner can bootstrap from its own V(s_T) (IMPALA)

    obs keep the env's dtype: uint8 images stay uint8 until the CNN's first layer.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    values: np.ndarray
    log_probs: np.ndarray
    final_values: np.ndarray
    mask: np.ndarray
    last_value: np.ndarray
    env_steps: int
    episode_returns: np.ndarray
    episode_lengths: np.ndarray
    version: int
    obs_moments: Moments | None = None
    return_moments: Moments | None = None
    last_obs: np.ndarray | None = None


class Batch(NamedTuple):
    """Flattened training data, padding removed. B samples.

    obs (B, *obs_shape), actions (B, *act_shape), advantages (B,) the policy-gradient weight,
    returns (B,) the critic's regression target.
    """

    obs: np.ndarray
    actions: np.ndarray
    advantages: np.ndarray
    returns: np.ndarray
